"""Structured logs: every line a session writes carries the charge point id."""

from __future__ import annotations

import logging
from collections.abc import MutableMapping
from typing import Any


class ChargerLog(logging.LoggerAdapter):
    """Adds `charge_point_id` to the record and a `cp=` prefix to the message."""

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, MutableMapping[str, Any]]:
        cp = self.extra["charge_point_id"] if self.extra else "-"
        kwargs.setdefault("extra", {})["charge_point_id"] = cp
        return f"cp={cp} {msg}", kwargs


def for_charger(logger: logging.Logger, charger_id: str) -> ChargerLog:
    return ChargerLog(logger, {"charge_point_id": charger_id})
