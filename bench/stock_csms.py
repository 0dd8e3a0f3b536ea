"""The comparison server for `bench.handshakes`: a minimal central system on the stock `ocpp` library (its
README's example: `websockets.serve` plus one `ChargePoint` per connection answering BootNotification), with
no storage and no authentication. What a storm of handshakes costs without any of chargeops' work.

    python -m bench.stock_csms PORT
"""

from __future__ import annotations

import asyncio
import sys
from datetime import UTC, datetime
from typing import Any

from ocpp.routing import on
from ocpp.v16 import ChargePoint as ChargePoint16
from ocpp.v16 import call_result as result16
from ocpp.v16.enums import Action as Action16
from ocpp.v16.enums import RegistrationStatus as Status16
from ocpp.v201 import ChargePoint as ChargePoint201
from ocpp.v201 import call_result as result201
from ocpp.v201.enums import Action as Action201
from ocpp.v201.enums import RegistrationStatusEnumType as Status201
from websockets.asyncio.server import ServerConnection, serve


def _now() -> str:
    return datetime.now(UTC).isoformat()


class Stock16(ChargePoint16):
    @on(Action16.boot_notification)
    async def on_boot(self, **_: Any) -> result16.BootNotification:
        return result16.BootNotification(current_time=_now(), interval=3600, status=Status16.accepted)


class Stock201(ChargePoint201):
    @on(Action201.boot_notification)
    async def on_boot(self, **_: Any) -> result201.BootNotification:
        return result201.BootNotification(current_time=_now(), interval=3600, status=Status201.accepted)


async def on_connect(ws: ServerConnection) -> None:
    charger_id = (ws.request.path if ws.request else "/").rstrip("/").rsplit("/", 1)[-1]
    cp = (Stock16 if ws.subprotocol == "ocpp1.6" else Stock201)(charger_id, ws)
    try:
        await cp.start()
    except Exception:  # the charger hung up
        pass


async def main(port: int) -> None:
    async with serve(
        on_connect,
        "127.0.0.1",
        port,
        subprotocols=["ocpp1.6", "ocpp2.0.1"],  # type: ignore[list-item]
        compression=None,
        ping_interval=None,
    ) as server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1])))
