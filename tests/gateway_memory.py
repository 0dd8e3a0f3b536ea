"""A charger session with nothing behind it: an in-memory store (the `ocpp_gateway.store.Store` interface),
a bus that records what is published, and a connection that records what is sent. Handlers run exactly as
in the gateway (framing, validation both ways, routing), in microseconds, without a database or a socket."""

from __future__ import annotations

import hashlib
import itertools
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from chargeops.events import Booted, Event
from chargeops.settings import Settings
from ocpp_gateway.context import GatewayContext
from ocpp_gateway.message_limits import StationLimits
from ocpp_gateway.plausibility import Flag, MeterLimits, Reading, judge
from ocpp_gateway.seq_gaps import Gap, GapStep, step
from ocpp_gateway.server import SESSION_CLASSES
from ocpp_gateway.session import ChargerSession
from ocpp_gateway.store import ChargerAuth, Store, TokenStatus, TxProgress, TxRecord


@dataclass
class MemoryTx:
    record: TxRecord
    id_token: str | None
    started_at: datetime | None = None
    meter_start_wh: float | None = None
    last_seq_no: int | None = None
    meter_last_wh: float | None = None
    stopped_at: datetime | None = None
    meter_stop_wh: float | None = None
    reason: str | None = None
    meter_good: Reading | None = None
    gaps: tuple[Gap, ...] = ()
    queued: bool | None = None


@dataclass
class MemoryStore:
    """The gateway's store in dicts, idempotent the way `GatewayStore` is."""

    tokens: dict[str, TokenStatus] = field(default_factory=dict)
    boots: list[tuple[str, Booted]] = field(default_factory=list)
    firmware: dict[str, str | None] = field(default_factory=dict)
    limits: dict[str, StationLimits] = field(default_factory=dict)
    pending_passwords: dict[str, str] = field(default_factory=dict)
    pending_profiles: dict[str, int] = field(default_factory=dict)
    transactions: dict[tuple[str, str], MemoryTx] = field(default_factory=dict)
    seq_nos: set[tuple[str, str, int]] = field(default_factory=set)
    meter_flags: dict[tuple[str, str, datetime, float, str], Flag] = field(default_factory=dict)
    _starts: dict[str, TxRecord] = field(default_factory=dict)
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    async def charger(self, charger_id: str) -> ChargerAuth | None:
        return ChargerAuth(charger_id, None, 0, "accepted", "Accepted")

    async def admit_unknown(self, charger_id: str, admission: str) -> ChargerAuth:
        return ChargerAuth(charger_id, None, 0, admission, None)

    async def record_boot(self, charger_id: str, boot: Booted, at: datetime) -> None:
        self.boots.append((charger_id, boot))
        if self.firmware.get(charger_id) != boot.firmware_version:
            self.limits.pop(charger_id, None)
        self.firmware[charger_id] = boot.firmware_version

    async def message_limits(self, charger_id: str) -> StationLimits | None:
        return self.limits.get(charger_id)

    async def keep_message_limits(self, charger_id: str, limits: StationLimits) -> None:
        self.limits[charger_id] = limits

    async def set_pending_password(self, charger_id: str, password_hash: str) -> None:
        self.pending_passwords[charger_id] = password_hash

    async def promote_password(self, charger_id: str, password_hash: str) -> None:
        self.pending_passwords.pop(charger_id, None)

    async def set_pending_profile(self, charger_id: str, profile: int) -> None:
        self.pending_profiles[charger_id] = profile

    async def promote_profile(self, charger_id: str, profile: int) -> None:
        self.pending_profiles.pop(charger_id, None)

    async def id_token(self, id_token: str, now: datetime) -> TokenStatus:
        return self.tokens.get(id_token, TokenStatus("Invalid"))

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
    ) -> TxRecord:
        key = [charger_id, transaction_id, connector_id, id_token, started_at.isoformat(), meter_start_wh]
        start_key = hashlib.sha256("|".join(map(str, key)).encode()).hexdigest()
        if start_key in self._starts:
            return self._starts[start_key]
        tx_id = transaction_id if transaction_id is not None else str(next(self._ids))
        record = TxRecord(tx_id, evse_id, connector_id)
        known = self.transactions.get((charger_id, tx_id))
        tx = MemoryTx(record, id_token) if known is None else known
        tx.record, tx.started_at, tx.meter_start_wh = record, started_at, meter_start_wh
        self.transactions[(charger_id, tx_id)] = tx
        self._starts[start_key] = record
        return record

    async def attach_id_token(self, charger_id: str, transaction_id: str, id_token: str) -> None:
        tx = self.transactions.get((charger_id, transaction_id))
        if tx is not None and tx.id_token is None:
            tx.id_token = id_token

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
    ) -> TxProgress:
        tx = self.transactions.get((charger_id, transaction_id))
        if (charger_id, transaction_id, seq_no) in self.seq_nos:
            return TxProgress(copy=True, known=tx is not None)
        if tx is None:
            return TxProgress(known=False)
        if tx.last_seq_no is None or seq_no > tx.last_seq_no:
            tx.last_seq_no = seq_no
        if meter_wh is not None and (tx.meter_last_wh is None or meter_wh > tx.meter_last_wh):
            tx.meter_last_wh = meter_wh
        flags: list[Flag] = []
        if readings:
            assert limits is not None
            flags = await self.check_meter(charger_id, transaction_id, readings, limits, now, evse_id)
        return TxProgress(flags=tuple(flags))

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
    ) -> TxRecord | None:
        if issued_here and (charger_id, transaction_id) not in self.transactions:
            if any(tid == transaction_id for _, tid in self.transactions):
                return None
        tx = self.transactions.setdefault(
            (charger_id, transaction_id), MemoryTx(TxRecord(transaction_id, evse_id, connector_id), id_token)
        )
        if tx.stopped_at is None:
            tx.stopped_at, tx.meter_stop_wh, tx.reason = stopped_at, meter_stop_wh, reason
        return tx.record

    async def seq_no_stored(self, charger_id: str, transaction_id: str, seq_no: int) -> bool:
        return (charger_id, transaction_id, seq_no) in self.seq_nos

    async def note_seq_no(self, charger_id: str, transaction_id: str, seq_no: int) -> GapStep:
        stored = [n for c, t, n in self.seq_nos if (c, t) == (charger_id, transaction_id)]
        self.seq_nos.add((charger_id, transaction_id, seq_no))
        tx = self.transactions.get((charger_id, transaction_id))
        if tx is None:
            return GapStep(())
        change = step(tx.gaps, max(stored, default=None), seq_no)
        if change.ask or not change.gaps:
            tx.queued = None
        tx.gaps = change.gaps
        return change

    async def note_transaction_queue(self, charger_id: str, transaction_id: str, queued: bool) -> None:
        tx = self.transactions.get((charger_id, transaction_id))
        if tx is not None and tx.gaps:
            tx.queued = queued

    async def max_power_kw(self, charger_id: str) -> float | None:
        return None

    async def active_transaction(self, charger_id: str, evse_id: int) -> str | None:
        running = [
            tx.record.transaction_id
            for (cid, _), tx in self.transactions.items()
            if cid == charger_id and tx.record.evse_id == evse_id and tx.stopped_at is None
        ]
        return running[-1] if running else None

    async def check_meter(
        self,
        charger_id: str,
        transaction_id: str,
        readings: Sequence[Reading],
        limits: MeterLimits,
        now: datetime,
        evse_id: int | None = None,
    ) -> list[Flag]:
        tx = self.transactions.get((charger_id, transaction_id))
        good, started = (tx.meter_good, tx.started_at) if tx else (None, None)
        good, flags = judge(good, readings, limits, now, started)
        if tx is not None:
            tx.meter_good = good
        for f in flags:
            self.meter_flags[(charger_id, transaction_id, f.reading.at, f.reading.wh, f.reason)] = f
        return flags


_: type[Store] = MemoryStore  # the interface, checked where a type checker reads this file


class RecordingBus:
    def __init__(self) -> None:
        self.events: list[Event] = []

    async def publish(self, events: Sequence[Event]) -> None:
        self.events.extend(events)


class RecordingConnection:
    remote_address = ("127.0.0.1", 0)

    def __init__(self) -> None:
        self.sent: list[list[Any]] = []

    async def send(self, message: str) -> None:
        self.sent.append(json.loads(message))

    async def close(self, code: int = 1000, reason: str = "") -> None:
        pass


class MemoryCharger:
    """One charger's session over the in-memory parts; `call` returns the frame the gateway answered."""

    def __init__(self, protocol: str, charger_id: str = "CP-MEM", store: MemoryStore | None = None):
        self.store = store or MemoryStore()
        self.bus = RecordingBus()
        self.connection = RecordingConnection()
        ctx = GatewayContext(Settings(), self.store, self.bus, "gw-test")  # type: ignore[arg-type]
        auth = ChargerAuth(charger_id, None, 0, "accepted", "Accepted")
        self.session: ChargerSession = SESSION_CLASSES[protocol](charger_id, self.connection, ctx, auth)  # type: ignore[arg-type]
        self._ids = itertools.count(1)

    async def call(self, action: str, payload: dict[str, Any]) -> list[Any]:
        await self.session.route_message(json.dumps([2, str(next(self._ids)), action, payload]))
        return self.connection.sent[-1]

    async def result(self, action: str, payload: dict[str, Any]) -> dict[str, Any]:
        frame = await self.call(action, payload)
        assert frame[0] == 3, frame
        return dict(frame[2])

    def bodies(self, kind: type) -> list[Any]:
        return [e.body for e in self.bus.events if isinstance(e.body, kind)]
