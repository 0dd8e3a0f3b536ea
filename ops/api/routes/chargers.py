"""The fleet registry: register, inspect, reconfigure and remove chargers.

Passwords are hashed on the way in (argon2id, in a worker thread so the event loop keeps serving) and
never leave the server in any form: responses only say whether one is set.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Response
from sqlalchemy import delete, or_, select
from sqlalchemy.sql import ColumnElement, Select

from chargeops.db.models import Charger, Connector
from chargeops.ids import CHARGER_ID_PATTERN
from ops.api.auth import Operator, Viewer
from ops.api.context import Db
from ops.api.errors import ApiError, documented
from ops.api.schemas import (
    MAX_PAGE,
    ChargerCreate,
    ChargerOut,
    ChargerPatch,
    ConnectorOut,
    Page,
    json_response,
)
from ops.api.scope import Scoped
from ops.fleet import ChargerExists, InvalidRegistration, add_charger, check_profile, hash_secret
from telemetry.fleet_state import charger_status, status_is

router = APIRouter(prefix="/api/chargers", tags=["chargers"], responses=documented(401, 403, 422))

ChargerIdPath = Annotated[str, Path(pattern=CHARGER_ID_PATTERN)]

_CONNECTOR_FIELDS = tuple(ConnectorOut.model_fields)
_CHARGER_COLUMNS = (
    Charger.id,
    Charger.site,
    Charger.kind,
    Charger.vendor,
    Charger.model,
    Charger.serial_number,
    Charger.firmware_version,
    Charger.protocol,
    Charger.connected,
    Charger.admission,
    Charger.registration_status,
    Charger.security_profile,
    Charger.pending_security_profile,
    Charger.password_hash,
    Charger.last_seen,
    Charger.last_boot_at,
    Charger.created_at,
)


def charger_doc(row: Mapping[str, Any], connectors: Sequence[Any]) -> dict[str, Any]:
    """A charger as `ChargerOut` describes it, from the values of `_CHARGER_COLUMNS` (the list reads rows: a
    1,000-charger page without ORM objects and a second validation pass costs a fifth)."""
    return {
        "id": row["id"],
        "site": row["site"],
        "kind": row["kind"],
        "vendor": row["vendor"],
        "model": row["model"],
        "serial_number": row["serial_number"],
        "firmware_version": row["firmware_version"],
        "protocol": row["protocol"],
        "connected": row["connected"],
        "status": charger_status(connectors),
        "admission": row["admission"],
        "registration_status": row["registration_status"],
        "security_profile": row["security_profile"],
        "pending_security_profile": row["pending_security_profile"],
        "has_password": row["password_hash"] is not None,
        "connectors": [{f: getattr(c, f) for f in _CONNECTOR_FIELDS} for c in connectors],
        "last_seen": row["last_seen"],
        "last_boot_at": row["last_boot_at"],
        "created_at": row["created_at"],
    }


def charger_out(row: Charger, connectors: Sequence[Connector]) -> ChargerOut:
    values = {c.key: getattr(row, c.key) for c in _CHARGER_COLUMNS}
    return ChargerOut.model_validate(charger_doc(values, connectors))


def _connectors_of(*chargers: ColumnElement[bool]) -> Select[Connector]:
    """One query for the connectors of every charger matching `chargers` (no query per charger)."""
    return (
        select(Connector)
        .where(Connector.charger_id.in_(select(Charger.id).where(*chargers)))
        .order_by(Connector.charger_id, Connector.evse_id, Connector.connector_id)
    )


def _by_charger(connectors: Iterable[Any]) -> dict[str, list[Any]]:
    grouped: dict[str, list[Any]] = defaultdict(list)
    for c in connectors:
        grouped[c.charger_id].append(c)
    return grouped


async def _out(db: Db, row: Charger) -> ChargerOut:
    connectors = (await db.scalars(_connectors_of(Charger.id == row.id))).all()
    return charger_out(row, connectors)


def _check_profile(profile: int, has_password: bool) -> None:
    try:
        check_profile(profile, has_password)
    except InvalidRegistration as exc:
        raise ApiError(422, "invalid_request", str(exc)) from None


@router.post("", status_code=201, dependencies=[Operator], responses=documented(409))
async def register_charger(body: ChargerCreate, db: Db, scope: Scoped) -> ChargerOut:
    """Register a charger; it may connect once registered (unless the gateway accepts unknown ones)."""
    await scope.place(db, body.site)
    try:
        row = await add_charger(
            db,
            body.id,
            password=body.password,
            site=body.site,
            kind=body.kind,
            vendor=body.vendor,
            model=body.model,
            security_profile=body.security_profile,
        )
    except InvalidRegistration as exc:
        raise ApiError(422, "invalid_request", str(exc)) from None
    except ChargerExists:
        raise ApiError(409, "conflict", f"charger {body.id} already exists") from None
    out = charger_out(row, [])
    await db.commit()
    return out


@router.get("", dependencies=[Viewer], response_model=Page[ChargerOut], responses=documented(401, 403, 422))
async def list_chargers(
    db: Db,
    scope: Scoped,
    site: str | None = None,
    connected: bool | None = None,
    status: Annotated[str | None, Query(description="the charger-wide status, e.g. Faulted")] = None,
    protocol: Annotated[str | None, Query(description="ocpp1.6, ocpp2.0.1 or ocpp2.1")] = None,
    q: Annotated[
        str | None, Query(max_length=64, description="part of the id, vendor, model or serial")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100,
    cursor: Annotated[str | None, Query(max_length=48, description="`next` of the previous page")] = None,
) -> Response:
    """The fleet (the token's region's) by id, a page at a time: pass the answer's `next` as `cursor` until
    it is null. Filters combine."""
    conditions: list[ColumnElement[bool]] = [scope.sites(Charger.site)]
    if site is not None:
        conditions.append(Charger.site == site)
    if connected is not None:
        conditions.append(Charger.connected == connected)
    if status is not None:
        conditions.append(status_is(status))
    if protocol is not None:
        conditions.append(Charger.protocol == protocol)
    if q:
        like = "%" + q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        columns = (Charger.id, Charger.vendor, Charger.model, Charger.serial_number)
        conditions.append(or_(*(c.ilike(like, escape="\\") for c in columns)))
    if cursor is not None:
        conditions.append(Charger.id > cursor)
    page = select(*_CHARGER_COLUMNS).where(*conditions).order_by(Charger.id).limit(limit + 1)
    rows = [r._asdict() for r in (await db.execute(page)).all()]
    more = len(rows) > limit
    rows = rows[:limit]
    on_page = select(Charger.id).where(*conditions).order_by(Charger.id).limit(limit)
    connectors = _by_charger(
        (
            await db.execute(
                select(Connector.charger_id, *(getattr(Connector, f) for f in _CONNECTOR_FIELDS))
                .where(Connector.charger_id.in_(on_page))
                .order_by(Connector.charger_id, Connector.evse_id, Connector.connector_id)
            )
        ).all()
    )
    docs = [charger_doc(r, connectors.get(r["id"], [])) for r in rows]
    return json_response({"items": docs, "next": rows[-1]["id"] if more else None})


@router.get("/{charger_id}", dependencies=[Viewer], responses=documented(404))
async def get_charger(charger_id: ChargerIdPath, db: Db, scope: Scoped) -> ChargerOut:
    return await _out(db, await scope.charger(db, charger_id))


@router.patch("/{charger_id}", dependencies=[Operator], responses=documented(404))
async def update_charger(charger_id: ChargerIdPath, body: ChargerPatch, db: Db, scope: Scoped) -> ChargerOut:
    """Change what was sent. A new password takes effect at the charger's next connection; setting one on a
    profile-0 charger moves it to profile 1 unless a profile is given too."""
    row = await scope.charger(db, charger_id)
    changes = body.model_dump(exclude_unset=True)
    if "site" in changes:
        await scope.place(db, changes["site"])
    if "password" in changes:
        password = changes.pop("password")
        row.password_hash = await hash_secret(password) if password is not None else None
        if password is not None and row.security_profile == 0 and "security_profile" not in changes:
            row.security_profile = 1
    for name, value in changes.items():
        setattr(row, name, value)
    if "security_profile" in changes:  # the operator's choice ends an upgrade the charger agreed to (A05)
        row.pending_security_profile = None
    if "password" in body.model_fields_set or "security_profile" in body.model_fields_set:
        _check_profile(row.security_profile, row.password_hash is not None)
    await db.flush()
    out = await _out(db, row)
    await db.commit()
    return out


@router.delete("/{charger_id}", status_code=204, dependencies=[Operator], responses=documented(404))
async def delete_charger(charger_id: ChargerIdPath, db: Db, scope: Scoped) -> None:
    """Forget a charger and its connector states; its transactions stay as history. A live connection is
    not cut, but the charger cannot connect again (unless the gateway accepts unknown chargers)."""
    row = await scope.charger(db, charger_id)
    await db.execute(delete(Connector).where(Connector.charger_id == charger_id))
    await db.delete(row)
    await db.commit()
