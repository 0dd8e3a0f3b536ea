"""Any CSMS-initiated OCPP call, relayed over the bus to whichever gateway process holds the charger.

The payload is neither logged nor inspected here (it may carry keys or passwords); the gateway validates it
against the charger's protocol and the API only translates the outcome into an HTTP status.
"""

from __future__ import annotations

import logging
from typing import Annotated, Any

from fastapi import APIRouter, Body, Path, Query
from pydantic import BaseModel, ConfigDict, Field

from chargeops.commands import SET_CHARGER_PASSWORD, CommandReply
from chargeops.logs import for_charger
from chargeops.passwords import generate_password
from ops.api.auth import Operator
from ops.api.context import ApiContext, Ctx, Db
from ops.api.errors import ApiError, documented
from ops.api.routes.chargers import ChargerIdPath
from ops.api.schemas import CommandResponse
from ops.api.scope import Scope, Scoped

log = logging.getLogger(__name__)

router = APIRouter(prefix="/api/chargers", tags=["commands"], responses=documented(401, 403, 422))

# Gateway codes meaning "no such action for this charger's protocol" rather than "bad payload".
_UNKNOWN_ACTION_CODES = (None, "NotImplemented", "NotSupported")


def _invalid_code(reply: CommandReply) -> str:
    if reply.error_code == "UrlRefused":
        return "url_refused"
    if reply.error_code in _UNKNOWN_ACTION_CODES:
        return "unknown_action"
    return "invalid_payload"


async def ask_charger(
    ctx: ApiContext,
    db: Db,
    scope: Scope,
    charger_id: str,
    action: str,
    payload: dict[str, Any],
    timeout: float | None = None,
    *,
    what: str = "charger",
) -> CommandReply:
    """Send `action` to a registered charger in the caller's scope over the bus (404 `not_found` for any
    other) and log the outcome, not the payload. No database connection is held while the charger takes
    its time; the session can be used again afterwards."""
    await scope.charger(db, charger_id, what)
    await db.close()
    reply = await ctx.bus.request(charger_id, action, payload, timeout or ctx.settings.call_timeout)
    status = reply.payload.get("status", "") if reply.outcome == "result" else reply.error_code or ""
    for_charger(log, charger_id).info("%s: %s %s", action, reply.outcome, status)
    return reply


def reply_to_http(reply: CommandReply) -> CommandResponse:
    """The result's payload, or the ApiError for every other outcome."""
    detail = reply.description or reply.outcome
    match reply.outcome:
        case "result":
            return CommandResponse(response=reply.payload)
        case "not_connected":
            raise ApiError(409, "not_connected", detail)
        case "invalid":
            extra = {"ocpp_error": reply.error_code, "field": reply.details.get("field")}
            raise ApiError(422, _invalid_code(reply), detail, extra=extra)
        case "error":
            extra = {"ocpp_error": reply.error_code, "details": reply.details}
            raise ApiError(502, "charger_error", detail, extra=extra)
        case "bad_response":
            extra = {"ocpp_error": reply.error_code, "response": reply.payload}
            raise ApiError(502, "invalid_charger_response", detail, extra=extra)
        case "timeout":
            raise ApiError(504, "timeout", detail)
    raise ValueError(f"unknown command outcome {reply.outcome!r}")


@router.post("/{charger_id}/ocpp/{action}", dependencies=[Operator], responses=documented(404, 409, 502, 504))
async def send_ocpp(
    charger_id: ChargerIdPath,
    action: Annotated[str, Path(pattern=r"^[A-Za-z0-9]{1,64}$", description="OCPP action, e.g. Reset")],
    payload: Annotated[dict[str, Any], Body(description="the OCPP request payload (OCPP field names)")],
    ctx: Ctx,
    db: Db,
    scope: Scoped,
    timeout: Annotated[float | None, Query(ge=1, le=300, description="seconds; default call_timeout")] = None,
) -> CommandResponse:
    """Send `action` to the charger and answer with its reply exactly as sent."""
    return reply_to_http(await ask_charger(ctx, db, scope, charger_id, action, payload, timeout))


class PasswordRotation(BaseModel):
    model_config = ConfigDict(extra="forbid")
    password: str | None = Field(
        default=None, min_length=16, max_length=40, description="the new password; default: generated"
    )


@router.post(
    "/{charger_id}/rotate-password", dependencies=[Operator], responses=documented(404, 409, 502, 504)
)
async def rotate_password(
    charger_id: ChargerIdPath, ctx: Ctx, db: Db, scope: Scoped, body: PasswordRotation | None = None
) -> dict[str, Any]:
    """Give the charger a new Basic-auth password (1.6 AuthorizationKey, hex-encoded; 2.x
    SecurityCtrlr.BasicAuthPassword): generated (20 characters, valid for every version) or the one given.
    Stored once the charger accepts it; the old one keeps working until the charger connects with the new
    one. A generated password is shown once, in this answer."""
    given = body.password if body is not None else None
    password = given or generate_password()
    answer = reply_to_http(
        await ask_charger(ctx, db, scope, charger_id, SET_CHARGER_PASSWORD, {"password": password})
    )
    status = answer.response.get("status")
    if status not in ("Accepted", "RebootRequired"):
        raise ApiError(
            409, "password_rejected", f"the charger answered {status}", extra={"response": answer.response}
        )
    return {"charger_id": charger_id, "status": status, "password": None if given else password}
