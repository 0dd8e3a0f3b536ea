"""Simulated OCPP 1.6 chargers for the cluster test and benchmark: each boots once, starts a transaction,
sends meter values, answers the commands it is sent, reconnects with a short back-off when its connection
drops (re-sending the message that was not answered, as a charger's transaction queue does) and stops its
transaction at the end. What the central system acknowledged is written down per charger (the ledger), to
be compared with the database afterwards: nothing acknowledged may be missing."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import asyncpg
import orjson
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus
from websockets.typing import Subprotocol

from tests.cluster_lab import ID_TAG, PASSWORD
from tests.ocpp_client import basic

ENERGY = "Energy.Active.Import.Register"
CALL_TIMEOUT = 30.0


@dataclass
class Record:
    """What one charger was told (acknowledged) and lived through."""

    samples: set[float] = field(default_factory=set)  # Wh readings answered with a CALLRESULT
    started: int | None = None  # the transaction id StartTransaction was answered with
    stopped: bool = False  # StopTransaction answered
    commands: list[str] = field(default_factory=list)  # actions the central system sent it
    connects: list[float] = field(default_factory=list)  # monotonic times of each accepted handshake
    refusals: list[int] = field(default_factory=list)  # HTTP statuses of refused handshakes


def own_address(n: int) -> str:
    """Charger `n`'s own source address on loopback (127.1.0.10 …): chargers behind the balancer are told
    apart by address, as on the road, and the per-address limits see each one alone."""
    return f"127.1.{n // 200}.{n % 200 + 10}"


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class Link:
    """One WebSocket to the central system: one call in flight, commands answered `Accepted`."""

    def __init__(self, ws: ClientConnection, record: Record) -> None:
        self.ws = ws
        self.record = record
        self.ids = itertools.count()
        self.pending: dict[str, asyncio.Future[Any]] = {}
        self.reader = asyncio.get_running_loop().create_task(self._read())

    async def _read(self) -> None:
        try:
            async for raw in self.ws:
                msg = orjson.loads(raw)
                if msg[0] == 2:  # a command
                    self.record.commands.append(msg[2])
                    await self.ws.send(orjson.dumps([3, msg[1], {"status": "Accepted"}]).decode())
                elif (fut := self.pending.pop(msg[1], None)) is not None and not fut.done():
                    fut.set_result(msg)
        except ConnectionClosed:
            pass
        finally:
            for fut in self.pending.values():
                if not fut.done():
                    fut.set_exception(ConnectionError("connection closed"))
                    fut.exception()  # retrieved: nobody may be waiting any more (a timed-out call)

    async def call(self, action: str, payload: dict[str, Any]) -> dict[str, Any]:
        uid = str(next(self.ids))
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.pending[uid] = fut
        await self.ws.send(orjson.dumps([2, uid, action, payload]).decode())
        msg = await asyncio.wait_for(fut, CALL_TIMEOUT)
        if msg[0] != 3:
            raise RuntimeError(f"{action} answered {msg}")
        return dict(msg[2])

    async def idle(self, seconds: float) -> None:
        """Waits `seconds` between messages, but notices a closed connection at once (ConnectionError), as a
        charger's reader does: asleep until its next message, it would find a dead gateway only then."""
        done, _ = await asyncio.wait({self.reader}, timeout=seconds)
        if done:
            raise ConnectionError("connection closed")

    async def close(self) -> None:
        self.reader.cancel()
        with contextlib.suppress(Exception):
            await self.ws.close()


class SimCharger:
    def __init__(self, charger_id: str, url: str, interval: float, source: str | None = None) -> None:
        self.id = charger_id
        self.url = f"{url}/{charger_id}"
        self.interval = interval
        self.source = source
        self.record = Record()
        self.booted = False
        self.wh = 1000.0
        self.link: Link | None = None

    async def _connect(self) -> Link:
        """Until a handshake is accepted: 1-3 s between tries, or what a 503's Retry-After says (capped)."""
        while True:
            try:
                ws = await connect(
                    self.url,
                    subprotocols=[Subprotocol("ocpp1.6")],
                    additional_headers=basic(self.id, PASSWORD),
                    compression=None,
                    ping_interval=None,
                    open_timeout=30,
                    local_addr=(self.source, 0) if self.source else None,
                )
                self.record.connects.append(time.monotonic())
                return Link(ws, self.record)
            except InvalidStatus as exc:
                self.record.refusals.append(exc.response.status_code)
                delay = min(10.0, float(exc.response.headers.get("Retry-After") or 1.0))
            except (OSError, InvalidHandshake, TimeoutError):
                delay = 1.0
            await asyncio.sleep(delay + 2 * random.random())

    async def _step(self, link: Link, stop: asyncio.Event) -> bool:
        """One message; True when the charger is done (its transaction stopped)."""
        ts = now()
        if not self.booted:
            boot = await link.call("BootNotification", {"chargePointVendor": "Lab", "chargePointModel": "C1"})
            assert boot["status"] == "Accepted", boot
            self.booted = True
        elif self.record.started is None:
            start = {"connectorId": 1, "idTag": ID_TAG, "meterStart": int(self.wh), "timestamp": ts}
            self.record.started = int((await link.call("StartTransaction", start))["transactionId"])
        elif stop.is_set():
            end = {"transactionId": self.record.started, "meterStop": int(self.wh), "timestamp": ts}
            await link.call("StopTransaction", {**end, "reason": "Local"})
            self.record.stopped = True
            return True
        else:
            await link.idle(self.interval * (0.5 + random.random()))
            reading = self.wh + 10  # sent again unchanged if this call is not answered
            sv = [{"value": str(reading), "measurand": ENERGY, "unit": "Wh"}]
            mv = {"timestamp": ts, "sampledValue": sv}
            payload = {"connectorId": 1, "transactionId": self.record.started, "meterValue": [mv]}
            await link.call("MeterValues", payload)
            self.record.samples.add(reading)
            self.wh = reading
        return False

    async def run(self, stop: asyncio.Event, gate: asyncio.Semaphore | None = None) -> None:
        """Until `stop` is set and the transaction is stopped; the first handshake waits for `gate`."""
        while True:
            if gate is not None:
                async with gate:
                    link = self.link = await self._connect()
                gate = None
            else:
                link = self.link = await self._connect()
            try:
                while not await self._step(link, stop):
                    pass
                await link.close()
                return
            except (ConnectionError, ConnectionClosed, TimeoutError):
                await link.close()
                await asyncio.sleep(1.0 + 2 * random.random())


async def run_fleet(chargers: list[SimCharger], stop: asyncio.Event, concurrency: int = 100) -> None:
    """Runs every charger until `stop` is set and each has stopped its transaction; the first connects are
    spread by a semaphore (a storm of thousands at once is bench/handshakes.py's subject, not this one)."""
    gate = asyncio.Semaphore(concurrency)
    await asyncio.gather(*(c.run(stop, gate) for c in chargers))


@dataclass
class Missing:
    samples: list[tuple[str, float]]
    starts: list[str]
    stops: list[str]

    def __bool__(self) -> bool:
        return bool(self.samples or self.starts or self.stops)


async def missing(db_url: str, chargers: list[SimCharger]) -> Missing:
    """What chargers were acknowledged and the database does not hold."""
    conn = await asyncpg.connect(db_url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        rows = await conn.fetch("SELECT charger_id, value FROM meter_samples WHERE measurand = $1", ENERGY)
        txs = await conn.fetch("SELECT charger_id, transaction_id, active FROM transactions")
    finally:
        await conn.close()
    stored = {(r["charger_id"], float(r["value"])) for r in rows}
    tx = {(r["charger_id"], r["transaction_id"]): r["active"] for r in txs}
    out = Missing([], [], [])
    for c in chargers:
        out.samples += [(c.id, v) for v in sorted(c.record.samples) if (c.id, v) not in stored]
        key = (c.id, str(c.record.started))
        if c.record.started is not None and key not in tx:
            out.starts.append(c.id)
        if c.record.stopped and tx.get(key) is not False:
            out.stops.append(c.id)
    return out


async def until_stored(db_url: str, chargers: list[SimCharger], timeout: float = 30.0) -> Missing:
    """Ingest stores what the gateways acknowledged a little later: wait for it (or say what is missing)."""
    for _ in range(int(timeout / 0.5)):
        if not (gap := await missing(db_url, chargers)):
            return gap
        await asyncio.sleep(0.5)
    return await missing(db_url, chargers)
