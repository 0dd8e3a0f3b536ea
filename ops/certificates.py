"""Stations' certificates on the ops side: the built-in CA a process uses, the renewal of certificates about
to expire, and what stations answered about the CA certificates they hold.

Renewal (ops role): every hour the newest certificate of each kind a station took (its CertificateSigned
answer was Accepted, or issued by `chargeops ca issue`) is looked at; one expiring within
`--certificate-renewal-days` gets the station asked for a new CSR (`chargeops.RenewCertificate`: 1.6
ExtendedTriggerMessage SignChargePointCertificate, 2.x TriggerMessage SignChargingStationCertificate /
SignV2GCertificate), at most once a day per station and only while it is connected. The station's CSR then
takes the usual way (`ocpp_gateway.certificates`); once its new certificate is taken the old one no longer
counts. Each request is stored as a certificate operation. Decides by `chargeops.clock`.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta
from typing import Any

from sqlalchemy import delete, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from chargeops import clock
from chargeops.commands import RENEW_CERTIFICATE
from chargeops.db.certificate_models import (
    CertificateOperation,
    InstalledCertificate,
    IssuedCertificate,
    operation,
)
from chargeops.db.models import Charger
from chargeops.logs import for_charger
from chargeops.pki.builtin_ca import BuiltinCA
from chargeops.settings import Settings
from ops.api.context import Commands

log = logging.getLogger("chargeops.certificates")
RENEWAL_INTERVAL = 3600.0  # seconds between looks at what expires
RENEWAL_EVERY = timedelta(days=1)  # a station is asked at most this often
RENEW = "RenewCertificate"  # the action renewal requests are stored under


def builtin_ca(settings: Settings) -> BuiltinCA:
    """The CA in `--ca-dir` (default ./chargeops-ca); nothing is made until it first signs."""
    return BuiltinCA.of(settings)


class CertificateRenewal:
    """Asks stations whose certificate expires soon for a new CSR (see the module docstring)."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], bus: Commands, settings: Settings) -> None:
        self.sessions = sessions
        self.bus = bus
        self.settings = settings
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _loop(self) -> None:
        while True:
            try:
                await self.run_once()
            except Exception:
                log.exception("certificate renewal check failed")
            await asyncio.sleep(RENEWAL_INTERVAL)

    async def due(self) -> list[tuple[str, str]]:
        """(station, certificate type) whose newest certificate taken expires within the window, the
        station connected and not asked in the last day."""
        now = clock.now()
        newest = func.max(IssuedCertificate.not_after)
        taken = or_(IssuedCertificate.delivery == "Accepted", IssuedCertificate.source == "cli")
        asked = select(CertificateOperation.charger_id).where(
            CertificateOperation.action == RENEW, CertificateOperation.at > now - RENEWAL_EVERY
        )
        query = (
            select(IssuedCertificate.charger_id, IssuedCertificate.certificate_type)
            .join(Charger, Charger.id == IssuedCertificate.charger_id)
            .where(taken, Charger.connected.is_(True), IssuedCertificate.charger_id.not_in(asked))
            .group_by(IssuedCertificate.charger_id, IssuedCertificate.certificate_type)
            .having(newest < now + timedelta(days=self.settings.certificate_renewal_days))
            .order_by(IssuedCertificate.charger_id, IssuedCertificate.certificate_type)
        )
        async with self.sessions() as s:
            return [(cid, kind) for cid, kind in (await s.execute(query)).all()]

    async def run_once(self) -> list[str]:
        """Ask the stations due; the ids asked (one request per station a day, its first type due)."""
        asked: list[str] = []
        for charger_id, kind in await self.due():
            if charger_id in asked:
                continue
            asked.append(charger_id)
            request = {"certificate_type": kind}
            reply = await self.bus.request(charger_id, RENEW_CERTIFICATE, request, self.settings.call_timeout)
            status = reply.payload.get("status") if reply.outcome == "result" else reply.outcome
            for_charger(log, charger_id).info("%s expires soon; asked for a new CSR: %s", kind, status)
            async with self.sessions() as s, s.begin():
                s.add(operation(charger_id, RENEW, request, reply))
        return asked


async def store_installed(
    db: AsyncSession, charger_id: str, kinds: list[str], certificates: list[dict[str, Any]]
) -> None:
    """The station's answer replaces what was known of the types asked (of all, when none were named)."""
    stale = delete(InstalledCertificate).where(InstalledCertificate.charger_id == charger_id)
    if kinds:
        stale = stale.where(InstalledCertificate.certificate_type.in_(kinds))
    await db.execute(stale)
    now = clock.now()
    db.add_all(
        InstalledCertificate(
            charger_id=charger_id,
            certificate_type=c["certificate_type"],
            hash_algorithm=c["hash_algorithm"],
            issuer_name_hash=c["issuer_name_hash"],
            issuer_key_hash=c["issuer_key_hash"],
            serial_number=c["serial_number"],
            children=c.get("children"),
            reported_at=now,
        )
        for c in certificates
    )
