"""Certificate management storage: what the CA signed for each station, the certificates a station last said
it has installed, and the outcome of every certificate call sent to a station.

Registered on the same `Base` as the other tables (imported by `chargeops.db.models`).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from chargeops import clock
from chargeops.commands import CommandReply
from chargeops.db.models import Base, BigId
from chargeops.pki.signer import Issued


class IssuedCertificate(Base):
    """A certificate chargeops's CA signed for a station (its CSR, or `chargeops ca issue`), and whether the
    station took it: its CertificateSigned answer, or why it got none."""

    __tablename__ = "issued_certificates"
    __table_args__ = (Index("ix_issued_certificates_charger_expiry", "charger_id", "not_after"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    charger_id: Mapped[str] = mapped_column(String(48))
    serial: Mapped[str] = mapped_column(String(64), unique=True)
    certificate_type: Mapped[str] = mapped_column(String(32))
    subject: Mapped[str] = mapped_column(String(300))
    not_before: Mapped[datetime]
    not_after: Mapped[datetime]
    source: Mapped[str] = mapped_column(String(8))  # csr (SignCertificate) / cli (chargeops ca issue)
    certificate: Mapped[str] = mapped_column(Text)  # the chain sent, PEM
    issued_at: Mapped[datetime] = mapped_column(default=clock.now)
    # Accepted / Rejected as the station answered CertificateSigned, else the outcome (timeout,
    # not_connected, error, ...); None: not sent (yet, or issued on the command line).
    delivery: Mapped[str | None] = mapped_column(String(16))
    delivered_at: Mapped[datetime | None]

    @classmethod
    def of(cls, charger_id: str, issued: Issued, source: str) -> IssuedCertificate:
        return cls(
            charger_id=charger_id,
            serial=issued.serial,
            certificate_type=issued.certificate_type,
            subject=issued.subject,
            not_before=issued.not_before,
            not_after=issued.not_after,
            source=source,
            certificate=issued.chain_pem,
            issued_at=clock.now(),
        )


class InstalledCertificate(Base):
    """One certificate a station listed in its latest GetInstalledCertificateIds answer (per type asked)."""

    __tablename__ = "installed_certificates"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    charger_id: Mapped[str] = mapped_column(String(48), index=True)
    certificate_type: Mapped[str] = mapped_column(String(40))
    hash_algorithm: Mapped[str] = mapped_column(String(8))
    issuer_name_hash: Mapped[str] = mapped_column(String(128))
    issuer_key_hash: Mapped[str] = mapped_column(String(128))
    serial_number: Mapped[str] = mapped_column(String(40))
    children: Mapped[list[Any] | None] = mapped_column(JSON)  # 2.x: the chain's sub-CA certificates
    reported_at: Mapped[datetime] = mapped_column(default=clock.now)


class CertificateOperation(Base):
    """A certificate call sent to a station and how it ended: InstallCertificate, GetInstalledCertificateIds,
    DeleteCertificate, CertificateSigned, and the renewal trigger (`chargeops.RenewCertificate`)."""

    __tablename__ = "certificate_operations"
    __table_args__ = (Index("ix_certificate_operations_charger_action", "charger_id", "action", "at"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    charger_id: Mapped[str] = mapped_column(String(48))
    action: Mapped[str] = mapped_column(String(40))
    request: Mapped[dict[str, Any]]
    outcome: Mapped[str] = mapped_column(String(16))  # CommandReply.outcome: result, error, timeout, ...
    status: Mapped[str | None] = mapped_column(String(32))  # the station's status, for a result
    response: Mapped[dict[str, Any] | None]
    at: Mapped[datetime] = mapped_column(default=clock.now)


def operation(
    charger_id: str, action: str, request: dict[str, Any], reply: CommandReply, at: datetime | None = None
) -> CertificateOperation:
    """The row recording how a certificate call to a station ended (gateway and ops alike)."""
    result = reply.outcome == "result"
    status = reply.payload.get("status") if result else reply.error_code
    return CertificateOperation(
        charger_id=charger_id,
        action=action,
        request=request,
        outcome=reply.outcome,
        status=str(status)[:32] if status is not None else None,
        response=reply.payload if result else {"description": reply.description},
        at=at or clock.now(),
    )
