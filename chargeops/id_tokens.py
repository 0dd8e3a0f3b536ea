"""What an id token's entry in the authorization list means at a given time: one rule for the gateway's
answers (Authorize, StartTransaction, TransactionEvent) and the local lists ops sends chargers."""

from __future__ import annotations

from datetime import datetime


def effective_status(status: str, expiry: datetime | None, now: datetime) -> str:
    """The stored status, except that an Accepted token past its expiry is Expired."""
    if status == "Accepted" and expiry is not None and expiry <= now:
        return "Expired"
    return status
