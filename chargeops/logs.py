"""Process-wide logging: one line per record, key=value text or JSON, charge point id as its own field.

Every line about one charger goes through `for_charger`, wherever it is written (gateway session, bus, ops):
the id is the record's `charge_point_id` (its own field in JSON) and a `cp=` prefix of the text.
"""

from __future__ import annotations

import logging
import math
import sys
from collections.abc import MutableMapping
from typing import Any

import orjson


class ChargerLog(logging.LoggerAdapter[logging.Logger]):
    """Adds `charge_point_id` to the record and a `cp=` prefix to the message."""

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, MutableMapping[str, Any]]:
        cp = self.extra["charge_point_id"] if self.extra else "-"
        kwargs.setdefault("extra", {})["charge_point_id"] = cp
        return f"cp={cp} {msg}", kwargs


def for_charger(logger: logging.Logger, charger_id: str | None) -> ChargerLog:
    return ChargerLog(logger, {"charge_point_id": charger_id})


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc = {
            "ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        cp = getattr(record, "charge_point_id", None)
        if cp is not None:
            doc["charge_point_id"] = cp
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(doc).decode()


def setup(level: str = "INFO", fmt: str = "text") -> None:
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("websockets", "ocpp", "aiosqlite", "uvicorn.access"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))


class LineBudget:
    """At most `burst` log lines a minute for one source; `spend(now)` says whether this line may be written
    and how many lines the minute that just ended held back (write one summary line for them)."""

    __slots__ = ("_burst", "_held", "_started", "_used")

    def __init__(self, burst: int) -> None:
        self._burst = burst
        self._started = -math.inf
        self._used = 0
        self._held = 0

    def spend(self, now: float) -> tuple[bool, int]:
        held = 0
        if now - self._started >= 60.0:
            held, self._started, self._used, self._held = self._held, now, 0, 0
        self._used += 1
        if self._used > self._burst:
            self._held += 1
            return False, held
        return True, held
