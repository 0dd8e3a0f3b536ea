"""C07, Authorize with an ISO 15118 contract certificate: the answer once the token is looked up, the same for
a 2.x station and a 1.6 station tunnelling Plug & Charge (`pnc16`); the chain is judged by `pki.Pki`."""

from __future__ import annotations

from typing import TYPE_CHECKING

from chargeops.events import Authorization
from ocpp_gateway import pki
from ocpp_gateway.routes import Payload

if TYPE_CHECKING:
    from ocpp_gateway.session import ChargerSession


async def contract_authorize(session: ChargerSession, p: Payload, token_info: Payload) -> Payload:
    """The AuthorizeResponse of an Authorize carrying contract certificate data (its OCSP data or PEM
    chain), the token already looked up as `token_info` (not yet recorded: this records it)."""
    hash_data, certificate = p.get("iso15118CertificateHashData") or [], p.get("certificate")
    emaid = p["idToken"]["idToken"]
    verdict = await session.ctx.pki.contract_verdict(hash_data, certificate, emaid)
    info, certificate_status = pki.combine(token_info, verdict)
    if verdict != "Accepted":
        session.log.warning("contract certificate of %s: %s", emaid, verdict)
    await session.emit(Authorization(emaid, info["status"]))
    return {"idTokenInfo": info, "certificateStatus": certificate_status}
