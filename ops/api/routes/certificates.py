"""A station's certificates (OCPP block M; A02/A03): the ones chargeops's CA issued it, the CA certificates it
holds (install, list, delete) and the stored outcome of every certificate message.

The routes speak the neutral certificate commands of `chargeops.commands`; the gateway builds each version's
messages. Every outcome is stored (`certificate_operations`), a list's answer also as the station's
installed certificates, so the last known state can be read without asking the station again.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query
from pydantic import Field, field_validator
from sqlalchemy import delete, select

from chargeops.commands import (
    DELETE_CERTIFICATE,
    GET_INSTALLED_CERTIFICATES,
    INSTALL_CERTIFICATE,
    INSTALLABLE_CERTIFICATES,
    CommandReply,
)
from chargeops.db.certificate_models import (
    CertificateOperation,
    InstalledCertificate,
    IssuedCertificate,
    operation,
)
from ops.api.auth import Operator, Viewer
from ops.api.context import Ctx, Db
from ops.api.errors import ApiError, documented
from ops.api.routes.chargers import ChargerIdPath
from ops.api.routes.commands import ask_charger, reply_to_http
from ops.api.schemas import Input
from ops.api.scope import Scoped
from ops.certificates import store_installed

router = APIRouter(prefix="/api/chargers", tags=["certificates"], responses=documented(401, 403, 404, 422))
Busy = documented(409, 502, 504)
LISTABLE = (*INSTALLABLE_CERTIFICATES, "V2GCertificateChain")  # 2.x lists the station's V2G chain too
SerialPath = Annotated[str, Path(min_length=1, max_length=40, description="as the station listed it")]


def _kinds(values: list[str] | None, allowed: tuple[str, ...]) -> list[str] | None:
    unknown = [v for v in values or () if v not in allowed]
    if unknown:
        raise ValueError(f"unknown certificate type {unknown[0]!r}; one of {', '.join(allowed)}")
    return values


class InstallIn(Input):
    certificate_type: str = Field(description=", ".join(INSTALLABLE_CERTIFICATES))
    certificate: str = Field(min_length=1, max_length=5500, description="the CA certificate, PEM")

    @field_validator("certificate_type")
    @classmethod
    def _known(cls, value: str) -> str:
        _kinds([value], INSTALLABLE_CERTIFICATES)
        return value


class RefreshIn(Input):
    certificate_types: list[str] | None = Field(default=None, description="default: every type")

    _known = field_validator("certificate_types")(lambda v: _kinds(v, LISTABLE))


def _installed(row: InstalledCertificate) -> dict[str, Any]:
    return {
        "certificate_type": row.certificate_type,
        "hash_algorithm": row.hash_algorithm,
        "issuer_name_hash": row.issuer_name_hash,
        "issuer_key_hash": row.issuer_key_hash,
        "serial_number": row.serial_number,
        "children": row.children or [],
        "reported_at": row.reported_at,
    }


async def _record(db: Db, charger_id: str, action: str, request: dict[str, Any], reply: CommandReply) -> None:
    async with db.begin():
        db.add(operation(charger_id, action, request, reply))


@router.get("/{charger_id}/certificates", dependencies=[Viewer])
async def issued_certificates(charger_id: ChargerIdPath, db: Db, scope: Scoped) -> dict[str, Any]:
    """The certificates chargeops's CA issued the station, newest first: `serial`, `certificate_type`,
    `subject`, `not_before`, `not_after`, `source` (`csr`: its SignCertificate; `cli`: `chargeops ca issue`),
    `delivery` (its CertificateSigned answer, or why it got none) and the `certificate` (PEM)."""
    await scope.charger(db, charger_id)
    rows = await db.scalars(
        select(IssuedCertificate)
        .where(IssuedCertificate.charger_id == charger_id)
        .order_by(IssuedCertificate.issued_at.desc(), IssuedCertificate.id.desc())
        .limit(1000)
    )
    items = [
        {
            "serial": r.serial,
            "certificate_type": r.certificate_type,
            "subject": r.subject,
            "not_before": r.not_before,
            "not_after": r.not_after,
            "source": r.source,
            "issued_at": r.issued_at,
            "delivery": r.delivery,
            "delivered_at": r.delivered_at,
            "certificate": r.certificate,
        }
        for r in rows
    ]
    return {"charger_id": charger_id, "items": items}


@router.get("/{charger_id}/certificate-operations", dependencies=[Viewer])
async def certificate_operations(
    charger_id: ChargerIdPath,
    db: Db,
    scope: Scoped,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> dict[str, Any]:
    """Certificate messages with the station, newest first: `action` (SignCertificate, CertificateSigned,
    InstallCertificate, GetInstalledCertificateIds, DeleteCertificate, RenewCertificate), `request`,
    `outcome` (`result`, `received` for a station's CSR, or `error`, `timeout`, `not_connected`, ...),
    `status` and `response`."""
    await scope.charger(db, charger_id)
    rows = await db.scalars(
        select(CertificateOperation)
        .where(CertificateOperation.charger_id == charger_id)
        .order_by(CertificateOperation.at.desc(), CertificateOperation.id.desc())
        .limit(limit)
    )
    items = [
        {"action": r.action, "request": r.request, "outcome": r.outcome, "status": r.status,
         "response": r.response, "at": r.at}
        for r in rows
    ]  # fmt: skip
    return {"charger_id": charger_id, "items": items}


@router.get("/{charger_id}/installed-certificates", dependencies=[Viewer])
async def installed_certificates(charger_id: ChargerIdPath, db: Db, scope: Scoped) -> dict[str, Any]:
    """The CA certificates the station said it holds in its latest answer (`POST .../refresh` asks it)."""
    await scope.charger(db, charger_id)
    rows = await db.scalars(
        select(InstalledCertificate)
        .where(InstalledCertificate.charger_id == charger_id)
        .order_by(InstalledCertificate.certificate_type, InstalledCertificate.serial_number)
    )
    return {"charger_id": charger_id, "items": [_installed(r) for r in rows]}


@router.post("/{charger_id}/installed-certificates", dependencies=[Operator], responses=Busy)
async def install_certificate(
    charger_id: ChargerIdPath, body: InstallIn, ctx: Ctx, db: Db, scope: Scoped
) -> dict[str, Any]:
    """Give the station a CA certificate to trust (InstallCertificate; a 1.6 station takes
    CSMSRootCertificate and ManufacturerRootCertificate by its security extension, V2G and MO roots through
    the ISO 15118 Plug & Charge DataTransfer: 502 `NotSupported` if it does not do that). Answers the
    station's `status` (Accepted, Rejected, Failed) and stores it."""
    request = body.model_dump()
    reply = await ask_charger(ctx, db, scope, charger_id, INSTALL_CERTIFICATE, request)
    await _record(db, charger_id, "InstallCertificate", {"certificate_type": body.certificate_type}, reply)
    return {"charger_id": charger_id, **reply_to_http(reply).response}


@router.post("/{charger_id}/installed-certificates/refresh", dependencies=[Operator], responses=Busy)
async def refresh_installed_certificates(
    charger_id: ChargerIdPath, ctx: Ctx, db: Db, scope: Scoped, body: RefreshIn | None = None
) -> dict[str, Any]:
    """Ask the station which CA certificates it holds (GetInstalledCertificateIds, of the types given or
    all); its answer is stored and returned (`status` NotFound: none of those types)."""
    kinds = (body.certificate_types if body is not None else None) or []
    reply = await ask_charger(
        ctx, db, scope, charger_id, GET_INSTALLED_CERTIFICATES, {"certificate_types": kinds}
    )
    await _record(db, charger_id, "GetInstalledCertificateIds", {"certificate_types": kinds}, reply)
    answer = reply_to_http(reply).response
    async with db.begin():
        await store_installed(db, charger_id, kinds, answer["certificates"])
    return {"charger_id": charger_id, "status": answer["status"], "items": answer["certificates"]}


@router.delete(
    "/{charger_id}/installed-certificates/{serial_number}", dependencies=[Operator], responses=Busy
)
async def delete_certificate(
    charger_id: ChargerIdPath, serial_number: SerialPath, ctx: Ctx, db: Db, scope: Scoped
) -> dict[str, Any]:
    """Remove a CA certificate from the station (DeleteCertificate), named by its serial number as the
    station's latest list gave it (404 for one not listed: refresh first); its hash data goes with the
    call. Answers the station's `status` (Accepted, Failed, NotFound); once Accepted it leaves the list."""
    await scope.charger(db, charger_id)
    rows = (
        await db.scalars(
            select(InstalledCertificate).where(
                InstalledCertificate.charger_id == charger_id,
                InstalledCertificate.serial_number == serial_number,
            )
        )
    ).all()
    if not rows:
        raise ApiError(404, "not_found", f"{charger_id} listed no certificate {serial_number}")
    found, ids = _installed(rows[0]), [row.id for row in rows]
    hash_data = {
        k: found[k] for k in ("hash_algorithm", "issuer_name_hash", "issuer_key_hash", "serial_number")
    }
    request = {"hash": hash_data, "certificate_type": found["certificate_type"]}  # 1.6: which way it goes
    reply = await ask_charger(ctx, db, scope, charger_id, DELETE_CERTIFICATE, request)
    await _record(db, charger_id, "DeleteCertificate", {"hash": hash_data}, reply)
    answer = reply_to_http(reply).response
    if answer.get("status") == "Accepted":
        async with db.begin():
            await db.execute(delete(InstalledCertificate).where(InstalledCertificate.id.in_(ids)))
    return {"charger_id": charger_id, **answer}
