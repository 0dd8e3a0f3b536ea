"""A charger's own row as the gateway reads and writes it: who it is at the handshake (`ChargerAuth`), what
it booted as, its passwords, the message limits a 2.x station reported (read when a connection first needs
them, not at the handshake), and the row an unknown charger gets when it is let in.

The handshake's read and the boot's write come in storms (every charger of a site or a gateway at once), so
concurrent ones share a statement (`ocpp_gateway.coalesce`); each is still read or written before its
handshake or boot is answered.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import bindparam, case, null, select, true, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from chargeops.db.engine import insert_for
from chargeops.db.models import Charger
from chargeops.events import Booted, utcnow
from ocpp_gateway.coalesce import Coalescer
from ocpp_gateway.message_limits import StationLimits
from ocpp_gateway.store.interface import ChargerAuth

_AUTH_QUERY = select(
    Charger.id,
    Charger.password_hash,
    Charger.security_profile,
    Charger.admission,
    Charger.registration_status,
    Charger.pending_password_hash,
    Charger.pending_security_profile,
).where(Charger.id.in_(bindparam("cids", expanding=True)))

_BOOT_UPDATE = (
    update(Charger)
    .where(Charger.id == bindparam("cid"))
    .values(
        # Other firmware may take other message sizes: the limits the last one reported are forgotten (the
        # right-hand sides see the row as it was, before this boot's firmware_version).
        message_limits=case(
            (Charger.firmware_version.is_distinct_from(bindparam("firmware_version")), null()),
            else_=Charger.message_limits,
        ),
        vendor=bindparam("vendor"),
        model=bindparam("model"),
        serial_number=bindparam("serial_number"),
        firmware_version=bindparam("firmware_version"),
        registration_status=bindparam("registration"),
        last_boot_at=bindparam("at"),
    )
)


class ChargerRows:
    """The charger-row part of `GatewayStore`."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession]):
        self._sessions = sessions
        # A reconnect storm's handshakes and boots share statements (`ocpp_gateway.coalesce`).
        self._charger_reads: Coalescer[str, ChargerAuth | None] = Coalescer(self._read_chargers)
        self._boot_writes: Coalescer[tuple[str, Booted, datetime], None] = Coalescer(self._write_boots)

    async def charger(self, charger_id: str) -> ChargerAuth | None:
        """What the handshake needs of a charger's row: read fresh every time, in one Core query with the
        other handshakes of the moment (no ORM identity map: reconnect storms are CPU-bound)."""
        return await self._charger_reads(charger_id)

    async def _read_chargers(self, charger_ids: list[str]) -> list[ChargerAuth | None]:
        async with self._sessions() as session:
            rows = (await session.execute(_AUTH_QUERY, {"cids": sorted(set(charger_ids))})).all()
        found = {row[0]: ChargerAuth(*row) for row in rows}
        return [found.get(cid) for cid in charger_ids]

    async def set_pending_password(self, charger_id: str, password_hash: str) -> None:
        """The charger accepted a new password: keep it beside the one it still connects with."""
        async with self._sessions() as session, session.begin():
            await session.execute(
                update(Charger).where(Charger.id == charger_id).values(pending_password_hash=password_hash)
            )

    async def promote_password(self, charger_id: str, password_hash: str) -> None:
        """The charger connected with its new password (`password_hash`): it is now the only one."""
        async with self._sessions() as session, session.begin():
            await session.execute(
                update(Charger)
                .where(Charger.id == charger_id, Charger.pending_password_hash == password_hash)
                .values(password_hash=password_hash, pending_password_hash=None)
            )

    async def message_limits(self, charger_id: str) -> StationLimits | None:
        """What a 2.x station reported of its message limits on earlier connections (none: None)."""
        async with self._sessions() as session:
            return await session.scalar(select(Charger.message_limits).where(Charger.id == charger_id))

    async def keep_message_limits(self, charger_id: str, limits: StationLimits) -> None:
        """The station's message limits as it reported them, for its later connections."""
        async with self._sessions() as session, session.begin():
            await session.execute(
                update(Charger).where(Charger.id == charger_id).values(message_limits=limits or None)
            )

    async def set_pending_profile(self, charger_id: str, profile: int) -> None:
        """The charger agreed to connect with a higher security profile (A05): kept beside the one it
        connects with now, which works until it connects with this one. A lower one is no upgrade: ignored
        (lowering a charger's profile is the operator's decision, `PATCH /api/chargers/{id}`); so is 1 or 2
        for a charger without a password (it has nothing to prove them with)."""
        proof = Charger.password_hash.is_not(None) if profile < 3 else true()
        async with self._sessions() as session, session.begin():
            await session.execute(
                update(Charger)
                .where(Charger.id == charger_id, Charger.security_profile < profile, proof)
                .values(pending_security_profile=profile)
            )

    async def promote_profile(self, charger_id: str, profile: int) -> None:
        """The charger connected proving its pending profile: it is its profile now, the lower one refused."""
        async with self._sessions() as session, session.begin():
            await session.execute(
                update(Charger)
                .where(Charger.id == charger_id, Charger.pending_security_profile == profile)
                .values(security_profile=profile, pending_security_profile=None)
            )

    async def admit_unknown(self, charger_id: str, admission: str) -> ChargerAuth:
        """Create a record for an unknown charger let in by `--accept-unknown` or the `pending` policy."""
        async with self._sessions() as session, session.begin():
            await session.execute(
                insert_for(session.get_bind().dialect.name, Charger)
                .values(
                    id=charger_id,
                    security_profile=0,
                    kind="charger",
                    connected=False,
                    admission=admission,
                    created_at=utcnow(),
                    updated_at=utcnow(),
                )
                .on_conflict_do_nothing(index_elements=["id"])
            )
        # usually the row just inserted; if another handshake won the race, whatever it stored
        return await self.charger(charger_id) or ChargerAuth(charger_id, None, 0, admission, None)

    async def record_boot(self, charger_id: str, boot: Booted, at: datetime) -> None:
        """Stored before the boot is answered; the boots of the moment share one commit."""
        await self._boot_writes((charger_id, boot, at))

    async def _write_boots(self, boots: list[tuple[str, Booted, datetime]]) -> list[None]:
        params = [
            {
                "cid": cid,
                "vendor": boot.vendor,
                "model": boot.model,
                "serial_number": boot.serial_number,
                "firmware_version": boot.firmware_version,
                "registration": boot.registration,
                "at": at,
            }
            for cid, boot, at in sorted(boots, key=lambda b: b[0])  # stable: a charger's last boot wins
        ]
        async with self._sessions() as session, session.begin():
            # in id order, as every batch writing charger rows (`telemetry.ingest`): no deadlock between them
            await (await session.connection()).execute(_BOOT_UPDATE, params)
        return [None] * len(boots)
