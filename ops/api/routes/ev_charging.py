"""ISO 15118 smart charging on demand (OCPP 2.x K16, TC_K_59): the operator renegotiates a running
session's charging schedule, optionally under a cap of their own (`ops.ev_renegotiation`)."""

from __future__ import annotations

import logging
from typing import Annotated, Any

from fastapi import APIRouter, Path
from pydantic import Field

from chargeops.logs import for_charger
from ops.api.auth import Operator
from ops.api.context import Ctx, Db
from ops.api.errors import ApiError, documented
from ops.api.routes.chargers import ChargerIdPath
from ops.api.schemas import Input
from ops.api.scope import Scoped
from ops.ev_renegotiation import NoEvSession, renegotiate

log = logging.getLogger(__name__)

router = APIRouter(prefix="/api/chargers", tags=["smart charging"], responses=documented(401, 403, 422))

EvseIdPath = Annotated[int, Path(ge=1, le=1000, description="the EVSE (OCPP 2.x evseId)")]
MAX_CAP_KW = 5000.0


class RenegotiateIn(Input):
    """`limit_kw`: the operator's cap on the session from now to its end (kW, 0 pauses it); null clears the
    cap; left out: the cap set before (if any) stays."""

    limit_kw: float | None = Field(default=None, ge=0, le=MAX_CAP_KW, allow_inf_nan=False)


@router.post(
    "/{charger_id}/evses/{evse_id}/renegotiate",
    dependencies=[Operator],
    responses=documented(404, 409, 502, 504),
)
async def renegotiate_ev_schedule(
    charger_id: ChargerIdPath,
    evse_id: EvseIdPath,
    ctx: Ctx,
    db: Db,
    scope: Scoped,
    body: RenegotiateIn | None = None,
) -> dict[str, Any]:
    """Renegotiate the ISO 15118 session running on the EVSE now (K16): a new TxProfile for its transaction,
    planned from the EV's last needs within the site's limit for the charger and the operator's cap, sent at
    once; answered with what was sent and the charger's status. 409 `no_ev_session` when ops planned no ISO
    15118 session on the EVSE (or `not_connected`); 502 / 504 when the charger failed to answer."""
    await scope.charger(db, charger_id)
    await db.close()
    set_cap = body is not None and "limit_kw" in body.model_fields_set
    cap_w = body.limit_kw * 1000 if body is not None and body.limit_kw is not None else None
    try:
        sent = await renegotiate(
            ctx.sessions, ctx.bus, ctx.settings, charger_id, evse_id, set_cap=set_cap, cap_w=cap_w
        )
    except NoEvSession as exc:
        raise ApiError(409, "no_ev_session", str(exc)) from None
    for_charger(log, charger_id).info(
        "operator renegotiation of transaction %s (EVSE %d, operator cap %s W): %s",
        sent.transaction_id, evse_id, sent.operator_cap_w, sent.status,
    )  # fmt: skip
    view = sent.view()
    match sent.outcome:
        case "result":
            return view
        case "not_connected":
            raise ApiError(409, "not_connected", f"charger {charger_id} is not connected", extra=view)
        case "timeout":
            raise ApiError(504, "timeout", "the charger did not answer", extra=view)
    raise ApiError(502, "charger_error", f"the charger's answer: {sent.outcome}", extra=view)
