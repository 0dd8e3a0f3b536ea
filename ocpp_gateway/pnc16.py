"""ISO 15118 Plug & Charge for OCPP 1.6 stations, as the OCA application note "Using ISO 15118 Plug & Charge
with OCPP 1.6" has it: the 2.0.1 messages of contract authorization and certificate management tunnelled in
DataTransfer, vendorId `org.openchargealliance.iso15118pnc`, messageId the 2.0.1 action, `data` the 2.0.1
payload as a JSON string; the answer's `data` is the 2.0.1 response, as a JSON string too.

* Station → CSMS (`on_data_transfer`, the 1.6 DataTransfer route): Authorize, GetCertificateStatus,
  Get15118EVCertificate and SignCertificate (its V2G certificate; a missing certificateType means that one)
  are answered by what answers them on 2.0.1 (`contract_auth`, `pki.Pki`, `certificates`). The
  inner payload is checked against its 2.0.1 schema by the central validators (`rpc.validate`); one that is
  not JSON or breaks the schema is answered status Rejected (the DataTransfer frame itself is valid, so no
  CALLERROR), an unknown messageId UnknownMessageId. Any other vendorId goes on to `swaps`.
* CSMS → station (`call`): CertificateSigned, InstallCertificate, DeleteCertificate,
  GetInstalledCertificateIds and TriggerMessage (SignV2GCertificate) of ISO 15118 certificates, which the 1.6
  security extension does not name, go out wrapped, the inner request checked before, the inner answer after
  (`certificate_commands` picks them for 1.6 stations). A station answering UnknownVendorId /
  UnknownMessageId does not do Plug & Charge: the reply is a charger error `NotSupported`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import orjson

from chargeops.commands import CommandReply
from chargeops.events import Reported
from chargeops.pki import V2G
from ocpp_gateway import certificates, swaps
from ocpp_gateway.contract_auth import contract_authorize
from ocpp_gateway.local_auth import id_token_info
from ocpp_gateway.routes import Payload
from ocpp_gateway.rpc import RpcError, validate
from ocpp_gateway.versions import V201

if TYPE_CHECKING:
    from ocpp_gateway.session import ChargerSession

VENDOR_ID = "org.openchargealliance.iso15118pnc"
Send = Callable[[str, Payload], Awaitable[CommandReply]]
Handler = Callable[["ChargerSession", Payload], Awaitable[Payload]]
NOT_PNC = frozenset({"UnknownVendorId", "UnknownMessageId"})  # the station does not do Plug & Charge


def _json_object(data: Any) -> Payload | None:
    try:
        value = orjson.loads(data) if isinstance(data, str) else None
    except orjson.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


# -- station → CSMS ------------------------------------------------------------------------------------


async def _authorize(session: ChargerSession, p: Payload) -> Payload:
    """C07 as on 2.0.1; the token (the eMAID) is looked up as every 1.6 idTag is."""
    contract = bool(p.get("iso15118CertificateHashData")) or p.get("certificate") is not None
    token = await session.authorize(p["idToken"]["idToken"], record=not contract)
    info = id_token_info(token.status, token.expiry, token.group_id)
    return await contract_authorize(session, p, info) if contract else {"idTokenInfo": info}


async def _certificate_status(session: ChargerSession, p: Payload) -> Payload:
    return await session.ctx.pki.certificate_status(p["ocspRequestData"])


async def _ev_certificate(session: ChargerSession, p: Payload) -> Payload:
    return await session.ctx.pki.ev_certificate(session.id, p, V201)  # the tunnel speaks 2.0.1


async def _sign_certificate(session: ChargerSession, p: Payload) -> Payload:
    """The station's V2G (SECC) certificate: signed by the CA, sent back as a tunnelled CertificateSigned.
    Its charging station certificate has the 1.6 security extension's own SignCertificate."""
    if p.get("certificateType", V2G) != V2G:
        why = "a 1.6 station's own certificate is asked for with the security extension's SignCertificate"
        return {"status": "Rejected", "statusInfo": {"reasonCode": "NotV2G", "additionalInfo": why}}
    timeout = session.ctx.settings.call_timeout

    def send(action: str, payload: Payload) -> Awaitable[CommandReply]:
        return session.execute(action, payload, timeout)

    return await certificates.sign_certificate(
        session, p, V201, lambda signed: call(send, "CertificateSigned", signed), default_type=V2G
    )


# Every message the note has a station send, and what answers it.
STATION_MESSAGES: dict[str, Handler] = {
    "Authorize": _authorize,
    "Get15118EVCertificate": _ev_certificate,
    "GetCertificateStatus": _certificate_status,
    "SignCertificate": _sign_certificate,
}


async def on_data_transfer(session: ChargerSession, p: Payload) -> Payload:
    """The 1.6 DataTransfer route: Plug & Charge messages here, the rest as `swaps.on_data_transfer`."""
    if p.get("vendorId") != VENDOR_ID:
        return await swaps.on_data_transfer(session, p)
    action = p.get("messageId")
    handler = STATION_MESSAGES.get(action or "")
    if action is None or handler is None:
        await session.emit(Reported("DataTransfer", p))
        return {"status": "UnknownMessageId"}
    inner = _json_object(p.get("data"))
    if inner is None:
        session.log.warning("Plug & Charge %s refused: its data is not a JSON object", action)
        return {"status": "Rejected"}
    try:
        validate(V201, action, inner, response=False, unique_id="-")
    except RpcError as err:
        session.log.warning("Plug & Charge %s refused: %s %s", action, err.code, err.description)
        return {"status": "Rejected"}
    answer = await handler(session, inner)
    try:
        validate(V201, action, answer, response=True, unique_id="-")
    except RpcError as bug:
        session.log.error("our Plug & Charge %s response breaks the schema: %s", action, bug.description)
        raise RpcError("InternalError", "the central system built an invalid response") from None
    return {"status": "Accepted", "data": orjson.dumps(answer).decode()}


# -- CSMS → station ------------------------------------------------------------------------------------


async def call(send: Send, action: str, payload: Payload) -> CommandReply:
    """The 2.0.1 call `action` through the tunnel; the reply holds the station's 2.0.1 answer."""
    try:
        validate(V201, action, payload, response=False, unique_id="-")
    except RpcError as err:
        return CommandReply("invalid", error_code=err.code, description=err.description, details=err.details)
    wrapped = {"vendorId": VENDOR_ID, "messageId": action, "data": orjson.dumps(payload).decode()}
    reply = await send("DataTransfer", wrapped)
    if reply.outcome != "result":
        return reply
    status = reply.payload.get("status")
    if status in NOT_PNC:
        why = f"the station does not do ISO 15118 Plug & Charge over DataTransfer ({action}: {status})"
        return CommandReply("error", error_code="NotSupported", description=why)
    if status != "Accepted":
        return CommandReply("error", error_code="Rejected", description=f"the station rejected {action}")
    inner = _json_object(reply.payload.get("data"))
    if inner is None:
        why = f"the {action} answer's data is not a JSON object"
        return CommandReply(
            "bad_response", payload=reply.payload, error_code="FormatViolation", description=why
        )
    try:
        validate(V201, action, inner, response=True, unique_id="-")
    except RpcError as err:
        return CommandReply("bad_response", payload=inner, error_code=err.code, description=err.description)
    return CommandReply("result", payload=inner)
