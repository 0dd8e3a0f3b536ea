"""Fleet registry operations shared by the CLI and the operator API."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from chargeops.db.models import Charger
from ocpp_gateway.auth import hash_password


class ChargerExists(Exception):
    """A charger with this id is already registered."""


async def register_charger(
    sessions: async_sessionmaker[AsyncSession],
    charger_id: str,
    *,
    password: str | None = None,
    site: str | None = None,
    kind: str = "charger",
    vendor: str | None = None,
    model: str | None = None,
    security_profile: int | None = None,
) -> Charger:
    """Register a charger (password stored hashed); security profile 1 with a password, else 0."""
    async with sessions() as session, session.begin():
        if await session.get(Charger, charger_id) is not None:
            raise ChargerExists(charger_id)
        charger = Charger(
            id=charger_id,
            password_hash=hash_password(password) if password else None,
            security_profile=security_profile if security_profile is not None else (1 if password else 0),
            site=site,
            kind=kind,
            vendor=vendor,
            model=model,
            admission="accepted",
            connected=False,
        )
        session.add(charger)
    return charger
