"""Fleet registry operations shared by the CLI and the operator API."""

from __future__ import annotations

import asyncio

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from chargeops.db.models import Charger
from chargeops.passwords import MAX_LENGTH, MIN_LENGTH, hash_password


class ChargerExists(Exception):
    """A charger with this id is already registered."""


class InvalidRegistration(ValueError):
    """The settings asked for cannot work (e.g. a Basic-auth profile without a password)."""


def check_profile(profile: int, has_password: bool) -> None:
    """Profiles 1 and 2 authenticate with HTTP Basic: without a password anyone could claim the id."""
    if profile in (1, 2) and not has_password:
        raise InvalidRegistration(f"security profile {profile} needs a password")


async def hash_secret(password: str) -> str:
    """argon2 off the event loop."""
    return await asyncio.to_thread(hash_password, password)


async def add_charger(
    session: AsyncSession,
    charger_id: str,
    *,
    password: str | None = None,
    site: str | None = None,
    kind: str = "charger",
    vendor: str | None = None,
    model: str | None = None,
    security_profile: int | None = None,
) -> Charger:
    """Register a charger in `session` (the caller commits); security profile 1 with a password, else 0."""
    profile = security_profile if security_profile is not None else (1 if password else 0)
    check_profile(profile, password is not None)
    if password is not None and not MIN_LENGTH <= len(password) <= MAX_LENGTH:
        raise InvalidRegistration(f"a charger password has {MIN_LENGTH}-{MAX_LENGTH} characters (OCPP)")
    if await session.get(Charger, charger_id) is not None:
        raise ChargerExists(charger_id)
    row = Charger(
        id=charger_id,
        password_hash=await hash_secret(password) if password is not None else None,
        security_profile=profile,
        site=site,
        kind=kind,
        vendor=vendor,
        model=model,
        admission="accepted",
        connected=False,
    )
    session.add(row)
    try:
        await session.flush()
    except IntegrityError:  # registered concurrently between the check and the insert
        raise ChargerExists(charger_id) from None
    return row
