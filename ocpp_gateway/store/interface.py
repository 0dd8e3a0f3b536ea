"""What the gateway asks of storage before it answers a charger (`Store`) and the records it gets back. The
one implementation on a database is `ocpp_gateway.store.sql.GatewayStore`; tests use an in-memory one."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from chargeops.db.models import Transaction
from chargeops.events import Booted
from ocpp_gateway import seq_gaps
from ocpp_gateway.message_limits import StationLimits
from ocpp_gateway.plausibility import Flag, MeterLimits, Reading


@dataclass(frozen=True, slots=True)
class ChargerAuth:
    """The part of a charger's record the handshake and boot need."""

    id: str
    password_hash: str | None
    security_profile: int
    admission: str
    registration_status: str | None
    pending_password_hash: str | None = None  # accepted by the charger, not yet used by it
    pending_security_profile: int | None = None  # a higher profile it agreed to move to (A05), not yet used


@dataclass(frozen=True, slots=True)
class TokenStatus:
    status: str
    expiry: datetime | None = None
    group_id: str | None = None


@dataclass(frozen=True, slots=True)
class TxRecord:
    """A transaction as the store holds it: the id it goes by (issued here for 1.6) and where it runs."""

    transaction_id: str
    evse_id: int | None
    connector_id: int | None
    # An end that differs from the one already recorded (kept: the first; this one was not applied).
    second_stop: bool = False

    @classmethod
    def of(cls, row: Transaction, second_stop: bool = False) -> TxRecord:
        return cls(row.transaction_id, row.evse_id, row.connector_id, second_stop)


@dataclass(frozen=True, slots=True)
class TxProgress:
    """What one 2.x TransactionEvent did to its transaction (`Store.advance_transaction`, one database
    transaction): a copy or an event of a transaction the store does not hold changed nothing."""

    copy: bool = False  # its (transaction, seqNo) is stored already
    known: bool = True  # the store holds the transaction
    flags: tuple[Flag, ...] = ()  # its implausible register readings, recorded


class Store(Protocol):
    """What sessions and the handshake ask of storage (`GatewayStore`; an in-memory one in the tests)."""

    async def charger(self, charger_id: str) -> ChargerAuth | None: ...

    async def admit_unknown(self, charger_id: str, admission: str) -> ChargerAuth: ...

    async def record_boot(self, charger_id: str, boot: Booted, at: datetime) -> None:
        """Also forgets the station's message limits when it boots with other firmware than before."""

    async def message_limits(self, charger_id: str) -> StationLimits | None: ...

    async def keep_message_limits(self, charger_id: str, limits: StationLimits) -> None: ...

    async def set_pending_password(self, charger_id: str, password_hash: str) -> None: ...

    async def promote_password(self, charger_id: str, password_hash: str) -> None: ...

    async def set_pending_profile(self, charger_id: str, profile: int) -> None: ...

    async def promote_profile(self, charger_id: str, profile: int) -> None: ...

    async def id_token(self, id_token: str, now: datetime) -> TokenStatus: ...

    async def start_transaction(
        self,
        charger_id: str,
        *,
        transaction_id: str | None,
        evse_id: int | None,
        connector_id: int | None,
        id_token: str | None,
        started_at: datetime,
        meter_start_wh: float | None,
    ) -> TxRecord: ...

    async def end_transaction(
        self,
        charger_id: str,
        transaction_id: str,
        *,
        stopped_at: datetime,
        meter_stop_wh: float | None,
        reason: str | None,
        id_token: str | None = None,
        evse_id: int | None = None,
        connector_id: int | None = None,
        issued_here: bool = False,
    ) -> TxRecord | None: ...

    async def attach_id_token(self, charger_id: str, transaction_id: str, id_token: str) -> None:
        """The idToken that authorized a transaction after its start (2.x E02 cable first, F02 remote start
        on a plugged-in cable), kept as its token if it has none yet."""
        ...

    async def advance_transaction(
        self,
        charger_id: str,
        transaction_id: str,
        seq_no: int,
        *,
        meter_wh: float | None,
        readings: Sequence[Reading],
        limits: MeterLimits | None,
        now: datetime,
        evse_id: int | None = None,
    ) -> TxProgress: ...

    async def seq_no_stored(self, charger_id: str, transaction_id: str, seq_no: int) -> bool: ...

    async def note_seq_no(self, charger_id: str, transaction_id: str, seq_no: int) -> seq_gaps.GapStep: ...

    async def note_transaction_queue(self, charger_id: str, transaction_id: str, queued: bool) -> None: ...

    async def max_power_kw(self, charger_id: str) -> float | None: ...

    async def active_transaction(self, charger_id: str, evse_id: int) -> str | None: ...

    async def check_meter(
        self,
        charger_id: str,
        transaction_id: str,
        readings: Sequence[Reading],
        limits: MeterLimits,
        now: datetime,
        evse_id: int | None = None,
    ) -> list[Flag]: ...
