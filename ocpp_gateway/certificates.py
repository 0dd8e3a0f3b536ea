"""SignCertificate (1.6 security extension; 2.0.1 A02/A03, 2.1): a station's CSR checked, answered, signed
by the `Signer` (the built-in CA unless another is given) and sent back as CertificateSigned.

The CSR is checked before the answer (CN = the charge point id of this connection, O = the operator's
organization, a strong enough key: `chargeops.pki.check_csr`), so `Accepted` promises a signature. The
signing and the CertificateSigned call run afterwards in a task of their own (the answer must reach the
station first, and the call's answer comes through the connection this handler is serving), the key work
off the event loop. What was issued, the station's answer to it and every CSR refused are stored
(`chargeops.db.certificate_models`). Without a signer (a gateway built without one) every CSR is Rejected.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from chargeops import clock
from chargeops.commands import CommandReply
from chargeops.db.certificate_models import CertificateOperation, IssuedCertificate, operation
from chargeops.pki import CHARGING_STATION, CsrRejected, Issued, Signer, check_csr
from ocpp_gateway.routes import Payload
from ocpp_gateway.versions import V16, OcppVersion

if TYPE_CHECKING:
    from ocpp_gateway.session import ChargerSession

REASON_CODE = "InvalidCSR"  # 2.x statusInfo.reasonCode of a refused CSR (at most 20 characters)
Deliver = Callable[[Payload], Awaitable[CommandReply]]  # sends CertificateSigned, gives the station's answer
_delivering: set[asyncio.Task[None]] = set()  # CertificateSigned calls in flight (kept from the GC)


class GatewayCertificates:
    """The gateway's signer and where it records what it issued and how stations answered."""

    def __init__(self, signer: Signer, sessions: async_sessionmaker[AsyncSession]) -> None:
        self.signer = signer
        self.sessions = sessions

    async def record_csr(self, charger_id: str, certificate_type: str, refused: str | None) -> None:
        async with self.sessions() as s, s.begin():
            s.add(
                CertificateOperation(
                    charger_id=charger_id,
                    action="SignCertificate",
                    request={"certificate_type": certificate_type},
                    outcome="received",
                    status="Rejected" if refused else "Accepted",
                    response={"reason": refused} if refused else None,
                    at=clock.now(),
                )
            )

    async def record_issued(self, charger_id: str, issued: Issued, source: str) -> None:
        async with self.sessions() as s, s.begin():
            s.add(IssuedCertificate.of(charger_id, issued, source))

    async def record_delivery(self, charger_id: str, issued: Issued, reply: CommandReply) -> None:
        now = clock.now()
        request = {"serial": issued.serial, "certificate_type": issued.certificate_type}
        row = operation(charger_id, "CertificateSigned", request, reply, now)
        async with self.sessions() as s, s.begin():
            s.add(row)
            await s.execute(
                update(IssuedCertificate)
                .where(IssuedCertificate.serial == issued.serial)
                .values(delivery=row.status if reply.outcome == "result" else reply.outcome, delivered_at=now)
            )


async def on_sign_certificate(session: ChargerSession, p: Payload) -> Payload:
    """The SignCertificate route of every version. A 1.6 station asks for its charging station
    certificate only (its V2G certificate comes through the Plug & Charge tunnel, `pnc16`)."""
    timeout = session.ctx.settings.call_timeout
    return await sign_certificate(
        session, p, session.version, lambda signed: session.execute("CertificateSigned", signed, timeout)
    )


async def sign_certificate(
    session: ChargerSession,
    p: Payload,
    words: OcppVersion,
    deliver: Deliver,
    default_type: str = CHARGING_STATION,
) -> Payload:
    """Accepted once the CSR passed the checks (then signed and sent back through `deliver`), else
    Rejected (2.x: saying why in statusInfo). `words`: the version the request and CertificateSigned are
    written in (2.0.1 for a 1.6 station's tunnelled V2G request)."""
    certificates = session.ctx.certificates
    certificate_type = p.get("certificateType") or default_type
    if certificates is None:
        return {"status": "Rejected"}
    organization = certificates.signer.organization
    try:
        await asyncio.to_thread(check_csr, p["csr"], session.id, organization)
    except CsrRejected as why:
        session.log.warning("SignCertificate %s refused: %s", certificate_type, why)
        await certificates.record_csr(session.id, certificate_type, str(why))
        answer: Payload = {"status": "Rejected"}
        if words is not V16:
            answer["statusInfo"] = {"reasonCode": REASON_CODE, "additionalInfo": str(why)[:512]}
        return answer
    await certificates.record_csr(session.id, certificate_type, None)
    # Started last: the task first runs once this answer is written (nothing between them waits).
    task = asyncio.create_task(_deliver(session, certificates, p, certificate_type, words, deliver))
    _delivering.add(task)
    task.add_done_callback(_delivering.discard)
    return {"status": "Accepted"}


async def _deliver(
    session: ChargerSession,
    certificates: GatewayCertificates,
    p: Payload,
    certificate_type: str,
    words: OcppVersion,
    deliver: Deliver,
) -> None:
    """Sign (in a thread), store, send CertificateSigned, store the station's answer."""
    try:
        issued = await asyncio.to_thread(certificates.signer.sign, p["csr"], session.id, certificate_type)
        await certificates.record_issued(session.id, issued, "csr")
        payload: dict[str, Any] = {"certificateChain": issued.chain_pem}
        if words is not V16:
            payload["certificateType"] = certificate_type  # echoed (A02.FR.14)
            if p.get("requestId") is not None:  # 2.1
                payload["requestId"] = p["requestId"]
        reply = await deliver(payload)
        status = reply.payload.get("status") if reply.outcome == "result" else reply.outcome
        session.log.info(
            "CertificateSigned %s serial %s (valid to %s): %s",
            certificate_type, issued.serial, issued.not_after.date().isoformat(), status,
        )  # fmt: skip
        await certificates.record_delivery(session.id, issued, reply)
    except Exception:
        session.log.exception("signing the accepted %s CSR failed", certificate_type)
