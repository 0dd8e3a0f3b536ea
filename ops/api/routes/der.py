"""DER control of bidirectional OCPP 2.1 chargers (part 2, block R): list, set and clear a charger's controls.

The routes speak the neutral DER commands of `chargeops.commands`; the gateway builds the OCPP messages.
A list asks the charger (GetDERControl) and collects its ReportDERControl parts as they are stored (events of
kind `der_controls_reported` with the request's id), so it shows what the charger holds, not what we believe.
"""

from __future__ import annotations

import asyncio
import secrets
from datetime import timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query
from pydantic import AwareDatetime, Field, field_validator
from sqlalchemy import select

from chargeops.commands import (
    CLEAR_DER_CONTROL,
    DER_CONTROL_TYPES,
    GET_DER_CONTROLS,
    SET_DER_CONTROL,
    CommandReply,
)
from chargeops.db.models import StoredEvent
from chargeops.events import EventKind, utcnow
from ops.api.auth import Operator, Viewer
from ops.api.context import ApiContext, Ctx, Db
from ops.api.errors import ApiError, documented
from ops.api.routes.chargers import ChargerIdPath
from ops.api.routes.commands import ask_charger, reply_to_http
from ops.api.schemas import Input
from ops.api.scope import Scope, Scoped

router = APIRouter(
    prefix="/api/chargers", tags=["DER control"], responses=documented(401, 403, 404, 409, 422, 502, 504)
)

ControlId = Annotated[str, Path(min_length=1, max_length=36)]
REPORT_POLL_S = 0.1


def _control_type(value: str | None) -> str | None:
    if value is not None and value not in DER_CONTROL_TYPES:
        raise ValueError(f"unknown control type; one of {', '.join(sorted(DER_CONTROL_TYPES))}")
    return value


def _query_type(value: str | None) -> str | None:
    """A control type given in the query, checked like one in a body."""
    try:
        return _control_type(value)
    except ValueError as exc:
        raise ApiError(422, "invalid_request", f"control_type: {exc}") from None


class DerControlIn(Input):
    """One DER control. `settings`: the control's own parameters as OCPP 2.1 names them, e.g.
    `{"pctMaxDischargePower": 40}` for LimitMaxDischarge or `{"yUnit", "curveData"}` for a curve."""

    control_id: str | None = Field(default=None, min_length=1, max_length=36, description="default: a UUID")
    control_type: str
    is_default: bool = True
    priority: int = Field(default=0, ge=0, description="0 is the highest")
    start_time: AwareDatetime | None = Field(default=None, description="scheduled controls")
    duration_s: float | None = Field(default=None, gt=0, description="scheduled controls")
    settings: dict[str, Any] = Field(default_factory=dict)

    _known_type = field_validator("control_type")(_control_type)


async def _call(
    ctx: ApiContext, db: Db, scope: Scope, charger_id: str, action: str, payload: dict[str, Any]
) -> dict[str, Any]:
    """Send a neutral DER action; the charger's neutral answer, or the HTTP error for what went wrong."""
    reply = await ask_charger(ctx, db, scope, charger_id, action, payload)
    if _not_supported(reply):
        raise ApiError(409, "der_not_supported", reply.description or "the charger has no DER control")
    answer = reply_to_http(reply).response
    if answer.get("status") == "NotSupported":
        raise ApiError(409, "der_not_supported", "the charger does not implement this control type")
    if answer.get("status") == "Rejected":
        detail = f"the charger rejected the control: {answer.get('reason', '')} {answer.get('info', '')}"
        raise ApiError(409, "der_control_rejected", detail.strip(), extra={"response": answer})
    return answer


def _not_supported(reply: CommandReply) -> bool:
    """Our gateway refused (no DER before OCPP 2.1), or the charger did (not bidirectional)."""
    return reply.outcome in ("invalid", "error") and reply.error_code == "NotSupported"


@router.get("/{charger_id}/der-controls", dependencies=[Viewer])
async def list_der_controls(
    charger_id: ChargerIdPath,
    ctx: Ctx,
    db: Db,
    scope: Scoped,
    control_type: str | None = None,
    is_default: bool | None = None,
) -> dict[str, Any]:
    """The DER controls the charger holds (all, or of one type / kind), as it reports them: `control_id`,
    `control_type`, `is_default`, `superseded`, `priority`, `start_time`, `duration_s`, `settings`."""
    _query_type(control_type)
    request_id = secrets.randbelow(2**31 - 1) + 1
    since = utcnow() - timedelta(seconds=1)
    query = {"request_id": request_id, "control_type": control_type, "is_default": is_default}
    answer = await _call(ctx, db, scope, charger_id, GET_DER_CONTROLS, query)
    if answer["status"] == "NotFound":
        return {"charger_id": charger_id, "request_id": request_id, "items": []}
    items = await _report(ctx, charger_id, request_id, since)
    return {"charger_id": charger_id, "request_id": request_id, "items": items}


async def _report(ctx: ApiContext, charger_id: str, request_id: int, since: Any) -> list[dict[str, Any]]:
    """The controls of every stored part of report `request_id`, once the last part is in."""
    deadline = asyncio.get_running_loop().time() + ctx.settings.call_timeout
    while asyncio.get_running_loop().time() < deadline:
        async with ctx.sessions() as session:
            rows = await session.scalars(
                select(StoredEvent.data).where(
                    StoredEvent.charger_id == charger_id,
                    StoredEvent.kind == EventKind.DER_CONTROLS_REPORTED.value,
                    StoredEvent.received_at >= since,
                )
            )
            parts = [d for d in rows.all() if d.get("request_id") == request_id]
        if parts and any(not p.get("more") for p in parts):
            return [c for p in parts for c in p["controls"]]
        await asyncio.sleep(REPORT_POLL_S)
    raise ApiError(504, "timeout", "the charger accepted but its report did not arrive in time")


@router.post("/{charger_id}/der-controls", dependencies=[Operator], status_code=201)
async def set_der_control(
    charger_id: ChargerIdPath, body: DerControlIn, ctx: Ctx, db: Db, scope: Scoped
) -> dict[str, Any]:
    """Installs a DER control (SetDERControl). 409 `der_control_rejected` with the charger's reason, 409
    `der_not_supported` for a charger (or control type) without it, 422 for a control the 2.1 schema
    refuses (`ocpp_error`, `field`)."""
    control_id = body.control_id or secrets.token_hex(16)
    payload = body.model_dump(exclude_none=True) | {"control_id": control_id}
    if body.start_time is not None:
        payload["start_time"] = body.start_time.isoformat()
    answer = await _call(ctx, db, scope, charger_id, SET_DER_CONTROL, payload)
    return {"charger_id": charger_id, "control_id": control_id, **answer}


@router.delete("/{charger_id}/der-controls/{control_id}", dependencies=[Operator])
async def clear_der_control(
    charger_id: ChargerIdPath,
    control_id: ControlId,
    ctx: Ctx,
    db: Db,
    scope: Scoped,
    is_default: Annotated[bool, Query(description="false for a scheduled control")] = True,
) -> dict[str, Any]:
    """Removes one control (ClearDERControl); 404 when the charger holds no such control."""
    query = {"is_default": is_default, "control_id": control_id}
    return await _clear(ctx, db, scope, charger_id, query)


@router.delete("/{charger_id}/der-controls", dependencies=[Operator])
async def clear_der_controls(
    charger_id: ChargerIdPath,
    ctx: Ctx,
    db: Db,
    scope: Scoped,
    control_type: str,
    is_default: bool = True,
) -> dict[str, Any]:
    """Removes every default (or every scheduled) control of one type."""
    _query_type(control_type)
    query = {"is_default": is_default, "control_type": control_type}
    return await _clear(ctx, db, scope, charger_id, query)


async def _clear(
    ctx: ApiContext, db: Db, scope: Scope, charger_id: str, query: dict[str, Any]
) -> dict[str, Any]:
    answer = await _call(ctx, db, scope, charger_id, CLEAR_DER_CONTROL, query)
    if answer["status"] == "NotFound":
        raise ApiError(404, "not_found", f"{charger_id} holds no such DER control")
    return {"charger_id": charger_id, **answer}
