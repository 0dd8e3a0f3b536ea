"""Gateway presence on the bus (docs/bus.md, "Gateway presence"): what a gateway process says about itself.

Each gateway process publishes, retained, `online` on `{root}/v2/gateways/{gw}` once connected, leaves the
broker a Will (`offline`, retained, same topic) so that a kill -9 or a lost network is announced by the
broker, and publishes `offline` itself on a clean stop. `instance` (`{run}.{connection}`: the bus's instance
id and its broker connection's number, also in every `Connected` event it publishes) tells one run of a
gateway id from the next, and one connection of a run from the next: ingest clears the chargers a lost run
or connection still holds in the database (`telemetry/gateway_presence.py`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from datetime import datetime

import orjson

log = logging.getLogger(__name__)

VERSION = 1


@dataclass(frozen=True, slots=True)
class GatewayPresence:
    """`{"v": 1, "state": "online" | "offline", "gateway_id", "instance", "started_at"}`."""

    gateway_id: str
    instance: str
    started_at: datetime
    online: bool = True

    @property
    def run(self) -> str:
        """The gateway process's run, without the broker connection (`instance` is `{run}.{connection}`)."""
        return self.instance.rsplit(".", 1)[0]

    def offline(self) -> GatewayPresence:
        return replace(self, online=False)

    def encode(self) -> bytes:
        return orjson.dumps(
            {
                "v": VERSION,
                "state": "online" if self.online else "offline",
                "gateway_id": self.gateway_id,
                "instance": self.instance,
                "started_at": self.started_at,
            }
        )

    @classmethod
    def decode(cls, payload: bytes) -> GatewayPresence | None:
        """None (logged) for a message that is not a presence of this version: it is dropped. An empty
        payload (a retained presence deleted by hand) is dropped quietly."""
        if not payload:
            return None
        try:
            doc = orjson.loads(payload)
            if doc.get("v") != VERSION or doc["state"] not in ("online", "offline"):
                raise ValueError(f"version {doc.get('v')!r}, state {doc.get('state')!r}")
            return cls(
                gateway_id=str(doc["gateway_id"]),
                instance=str(doc["instance"]),
                started_at=datetime.fromisoformat(doc["started_at"]),
                online=doc["state"] == "online",
            )
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as exc:
            log.warning("dropping an undecodable gateway presence (%s): %r", exc, payload[:200])
            return None
