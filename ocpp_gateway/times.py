"""OCPP date-time in and out."""

from __future__ import annotations

from datetime import UTC, datetime

from chargeops.events import utcnow


def ocpp_time(dt: datetime | None = None) -> str:
    """OCPP date-time: UTC, millisecond precision, `Z` suffix."""
    return (dt or utcnow()).astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_time(value: str) -> datetime:
    """A schema-checked OCPP date-time; naive values are taken as UTC."""
    dt = datetime.fromisoformat(value)
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)
