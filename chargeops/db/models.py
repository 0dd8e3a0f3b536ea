"""The one normalised storage model: OCPP versions are mapped onto it by the gateway, never stored raw-shaped.

Times are stored timezone-aware (UTC). Every table that receives charger reports has a natural or
event-derived unique key so that re-delivery never makes a second row.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import JSON, BigInteger, DateTime, Float, Index, Integer, Numeric, String, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from chargeops.events import utcnow

TZ = DateTime(timezone=True)
BigId = BigInteger().with_variant(Integer(), "sqlite")


class Base(DeclarativeBase):
    type_annotation_map = {datetime: TZ, dict[str, Any]: JSON}


class Charger(Base):
    __tablename__ = "chargers"

    id: Mapped[str] = mapped_column(String(48), primary_key=True)
    password_hash: Mapped[str | None] = mapped_column(String(200))
    # A new password the charger accepted but has not connected with yet; the old one works until it does.
    pending_password_hash: Mapped[str | None] = mapped_column(String(200))
    security_profile: Mapped[int] = mapped_column(Integer, default=1)
    # A higher profile the charger agreed to move to (A05): its first connection proving it makes it its own.
    pending_security_profile: Mapped[int | None] = mapped_column(Integer)
    site: Mapped[str | None] = mapped_column(String(64), index=True)
    kind: Mapped[str] = mapped_column(String(20), default="charger")
    vendor: Mapped[str | None] = mapped_column(String(50))
    model: Mapped[str | None] = mapped_column(String(50))
    serial_number: Mapped[str | None] = mapped_column(String(50))
    firmware_version: Mapped[str | None] = mapped_column(String(50))
    # 2.x: the ItemsPerMessage / BytesPerMessage a station reported, by action and kind
    # (`ocpp_gateway.message_limits`); NULL again when it boots with other firmware.
    message_limits: Mapped[dict[str, Any] | None] = mapped_column(JSON(none_as_null=True))
    # The operator's decision (accepted / pending / rejected) and what the last BootNotification was told.
    admission: Mapped[str] = mapped_column(String(16), default="accepted")
    registration_status: Mapped[str | None] = mapped_column(String(16))
    protocol: Mapped[str | None] = mapped_column(String(16))
    connected: Mapped[bool] = mapped_column(default=False)
    gateway_id: Mapped[str | None] = mapped_column(String(64))
    # Which run of that gateway holds the session: a lost run's chargers are cleared by its presence.
    gateway_instance: Mapped[str | None] = mapped_column(String(32))
    session_id: Mapped[str | None] = mapped_column(String(36))
    last_boot_at: Mapped[datetime | None]
    last_seen: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class Connector(Base):
    """Latest status of one connector (evse_id 0 / connector_id 0 is the charger as a whole)."""

    __tablename__ = "connectors"

    charger_id: Mapped[str] = mapped_column(String(48), primary_key=True)
    evse_id: Mapped[int] = mapped_column(primary_key=True)
    connector_id: Mapped[int] = mapped_column(primary_key=True)
    status: Mapped[str] = mapped_column(String(32))
    error_code: Mapped[str | None] = mapped_column(String(64))
    vendor_error_code: Mapped[str | None] = mapped_column(String(64))
    reported_at: Mapped[datetime | None]


class IdToken(Base):
    __tablename__ = "id_tokens"

    id_token: Mapped[str] = mapped_column(String(64), primary_key=True)
    type: Mapped[str] = mapped_column(String(20), default="ISO14443")
    status: Mapped[str] = mapped_column(String(16))
    expiry: Mapped[datetime | None]
    group_id: Mapped[str | None] = mapped_column(String(64))
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class LocalList(Base):
    """A charger's local authorization list as chargeops last had it confirmed (`ops.local_list`): the
    version the charger accepted, whether it is in step with the id tokens, what the charger says it
    supports, and how the last sync went."""

    __tablename__ = "local_lists"

    charger_id: Mapped[str] = mapped_column(String(48), primary_key=True)
    version: Mapped[int | None]  # the last version the charger accepted; None: none sent by us
    state: Mapped[str] = mapped_column(String(16), default="never")  # never in_step stale failed unsupported
    list_enabled: Mapped[bool | None]
    max_length: Mapped[int | None]
    items_per_message: Mapped[int | None]
    cache_enabled: Mapped[bool | None]
    settings_at: Mapped[datetime | None]  # when the four above were read from the charger
    synced_at: Mapped[datetime | None]
    changed_at: Mapped[datetime | None]  # a token this list holds (or should hold) last changed
    last_update: Mapped[str | None] = mapped_column(String(16))  # Full, Differential, none (in step)
    last_result: Mapped[str | None] = mapped_column(String(32))
    last_detail: Mapped[str | None] = mapped_column(String(300))
    entries_sent: Mapped[int] = mapped_column(Integer, default=0)


class LocalListEntry(Base):
    """One token as a charger's confirmed local list holds it: what the next differential update is computed
    against, and which lists a changed token makes stale."""

    __tablename__ = "local_list_entries"
    __table_args__ = (Index("ix_local_list_entries_token", "id_token"),)

    charger_id: Mapped[str] = mapped_column(String(48), primary_key=True)
    id_token: Mapped[str] = mapped_column(String(64), primary_key=True)
    type: Mapped[str] = mapped_column(String(20))
    status: Mapped[str] = mapped_column(String(16))
    expiry: Mapped[datetime | None]
    group_id: Mapped[str | None] = mapped_column(String(64))


class Transaction(Base):
    __tablename__ = "transactions"
    __table_args__ = (
        UniqueConstraint("charger_id", "transaction_id", name="uq_transactions_charger_tx"),
        Index("ix_transactions_active", "charger_id", "active"),
        Index("ix_transactions_id_token", "id_token"),  # which chargers a token was used at (auth caches)
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    charger_id: Mapped[str] = mapped_column(String(48), index=True)
    transaction_id: Mapped[str] = mapped_column(String(64))
    evse_id: Mapped[int | None]
    connector_id: Mapped[int | None]
    id_token: Mapped[str | None] = mapped_column(String(64))
    started_at: Mapped[datetime | None]
    stopped_at: Mapped[datetime | None]
    meter_start_wh: Mapped[float | None] = mapped_column(Float)
    meter_last_wh: Mapped[float | None] = mapped_column(Float)
    meter_stop_wh: Mapped[float | None] = mapped_column(Float)
    # The register reading up to which ingest has counted this session in the site energy counter
    # (chargeops_site_energy_watt_hours_total).
    # Separate from meter_last_wh, which the gateway also advances: each Wh is counted exactly once.
    energy_counted_wh: Mapped[float | None] = mapped_column(Float)
    # The last plausible register reading and its time (`ocpp_gateway.plausibility`), kept by the gateway:
    # what the session is billed up to. NULL for transactions judged before migration 0013.
    meter_good_wh: Mapped[float | None] = mapped_column(Float)
    meter_good_at: Mapped[datetime | None]
    stop_reason: Mapped[str | None] = mapped_column(String(32))
    active: Mapped[bool] = mapped_column(default=True)
    last_seq_no: Mapped[int | None]
    # 2.x TransactionEvent seqNos not received, as inclusive [first, last] ranges (`ocpp_gateway.seq_gaps`),
    # and the station's answer to the GetTransactionStatus a gap opening sent: does it still queue messages?
    missing_seq_nos: Mapped[list[list[int]] | None] = mapped_column(JSON(none_as_null=True))
    missing_seq_nos_queued: Mapped[bool | None]
    start_key: Mapped[str | None] = mapped_column(String(64), unique=True)
    # The tariff pricing the session, as it was when chosen (`chargeops.tariffs.Tariff.to_json`; NULL: none
    # applies); the seconds of its closed charging spells (2.x chargingState; NULL: never said, all of its
    # time counts as charging) and the start of the open one; its final cost, tax included, once it ended.
    tariff: Mapped[dict[str, Any] | None] = mapped_column(JSON(none_as_null=True))
    charging_s: Mapped[float | None] = mapped_column(Float)
    charging_since: Mapped[datetime | None]
    total_cost: Mapped[Decimal | None] = mapped_column(Numeric(14, 4))
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    @property
    def energy_wh(self) -> float | None:
        return billed_energy_wh(
            self.meter_start_wh, self.meter_stop_wh, self.meter_last_wh, self.meter_good_wh
        )


def billed_energy_wh(
    start: float | None, stop: float | None, last: float | None, good: float | None
) -> float | None:
    """Session energy: the last plausible register reading minus the start register (before the
    plausibility check: stop, or latest, minus start)."""
    end = good if good is not None else stop if stop is not None else last
    if end is None or start is None:
        return None
    return max(0.0, end - start)


class TransactionSeqNo(Base):
    """The (transaction, seqNo) of every 2.x TransactionEvent stored. A resent copy of one (`offline: true`,
    a new message id) is known by it and answered without being stored or reacted to again."""

    __tablename__ = "transaction_seq_nos"

    charger_id: Mapped[str] = mapped_column(String(48), primary_key=True)
    transaction_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    seq_no: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    received_at: Mapped[datetime] = mapped_column(default=utcnow)


class MeterFlag(Base):
    """A transaction's register reading judged implausible, once per reading and reason: billing left it
    out. The sample itself is in `meter_samples` as the charger sent it."""

    __tablename__ = "meter_flags"
    __table_args__ = (
        UniqueConstraint(
            "charger_id", "transaction_id", "sampled_at", "value_wh", "reason", name="uq_meter_flags_reading"
        ),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    charger_id: Mapped[str] = mapped_column(String(48))
    transaction_id: Mapped[str] = mapped_column(String(64))
    evse_id: Mapped[int | None]
    reason: Mapped[str] = mapped_column(String(32))
    value_wh: Mapped[float] = mapped_column(Float)
    sampled_at: Mapped[datetime]
    previous_wh: Mapped[float | None] = mapped_column(Float)
    previous_at: Mapped[datetime | None]
    detail: Mapped[str] = mapped_column(String(200))
    flagged_at: Mapped[datetime] = mapped_column(default=utcnow)


class EvChargingSchedule(Base):
    """An ISO 15118 session's charging schedules (OCPP 2.x K15–K17): the ones ops offered (`source` csms,
    with the charger's answer in `status`) and the one the EV chose within them (`source` ev). `event_id`:
    the event the row came from (the needs for csms rows), so a re-delivered event is stored once."""

    __tablename__ = "ev_charging_schedules"
    __table_args__ = (Index("ix_ev_charging_schedules_tx", "charger_id", "transaction_id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    event_id: Mapped[str] = mapped_column(String(36), unique=True)
    charger_id: Mapped[str] = mapped_column(String(48))
    transaction_id: Mapped[str | None] = mapped_column(String(64))
    evse_id: Mapped[int]
    source: Mapped[str] = mapped_column(String(8))  # csms | ev
    starts_at: Mapped[datetime]
    duration_s: Mapped[int | None]
    rate_unit: Mapped[str] = mapped_column(String(2))  # W | A
    periods: Mapped[list[dict[str, Any]]] = mapped_column(JSON)  # [{"start_s", "limit", "phases"?}]
    status: Mapped[str | None] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class EvOperatorCap(Base):
    """An operator's cap on one ISO 15118 session (K16 on demand, `POST .../evses/{evse}/renegotiate`): every
    TxProfile ops plans for the transaction stays within it; gone when the transaction ends."""

    __tablename__ = "ev_operator_caps"

    charger_id: Mapped[str] = mapped_column(String(48), primary_key=True)
    transaction_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    evse_id: Mapped[int]
    limit_w: Mapped[float] = mapped_column(Float)
    set_at: Mapped[datetime] = mapped_column(default=utcnow)


class StoredEvent(Base):
    """Every version-neutral event, once (primary key = the event's deterministic id)."""

    __tablename__ = "events"
    __table_args__ = (
        Index("ix_events_charger_time", "charger_id", "received_at"),
        Index("ix_events_received_at", "received_at"),  # retention (telemetry/retention.py)
    )

    event_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    charger_id: Mapped[str] = mapped_column(String(48))
    kind: Mapped[str] = mapped_column(String(32))  # no index: queries go by charger and time
    reported_at: Mapped[datetime | None]
    received_at: Mapped[datetime]
    data: Mapped[dict[str, Any]]


class MeterSample(Base):
    """One sampled value: sample `idx` of the meter-values event `event_id`.

    No unique key in the database: ingest writes an event's samples only in the transaction that inserted the
    event's row, so `events.event_id` keeps them unique (migration 0006), and the samples are COPYed straight
    into their partition without a second index to maintain. On Postgres the table is range-partitioned by
    day on `sampled_at` (a TimescaleDB hypertable when that extension is installed). The ORM still needs an
    identity: (event_id, idx).
    """

    __tablename__ = "meter_samples"
    __table_args__ = (Index("ix_meter_samples_charger_time", "charger_id", "sampled_at"),)

    event_id: Mapped[str] = mapped_column(String(36))
    idx: Mapped[int] = mapped_column()
    charger_id: Mapped[str] = mapped_column(String(48))
    evse_id: Mapped[int]
    connector_id: Mapped[int]
    transaction_id: Mapped[str | None] = mapped_column(String(64))
    sampled_at: Mapped[datetime]
    measurand: Mapped[str] = mapped_column(String(64))
    phase: Mapped[str | None] = mapped_column(String(8))
    location: Mapped[str | None] = mapped_column(String(16))
    context: Mapped[str | None] = mapped_column(String(32))
    unit: Mapped[str | None] = mapped_column(String(16))
    value: Mapped[float] = mapped_column(Float)

    __mapper_args__ = {"primary_key": [event_id, idx]}


class _RollupMark:
    charger_id: Mapped[str] = mapped_column(String(48), primary_key=True)
    bucket: Mapped[datetime] = mapped_column(primary_key=True)


class MeterRollupDirty(_RollupMark, Base):
    """(charger, minute) buckets that received samples since the rollups last ran.

    Written by ingest in the same transaction as the samples and claimed (moved to `meter_rollup_claimed`)
    by the rollup task, so a late sample, or a commit that overtakes another, can never slip past a time
    watermark.
    """

    __tablename__ = "meter_rollup_dirty"


class MeterRollupClaimed(_RollupMark, Base):
    """Marks the rollup task has claimed and not yet recomputed: claiming is a short transaction of its own,
    so an ingest commit marking the same bucket never waits for a recomputation (migration 0008)."""

    __tablename__ = "meter_rollup_claimed"


class _MeterRollup:
    """Per charger, EVSE, measurand and phase ('' = the total) and time bucket, in base units (W, Wh, A, V).

    `energy_wh` (energy register only) is the register increase since the previous bucket with data.
    """

    charger_id: Mapped[str] = mapped_column(String(48), primary_key=True)
    evse_id: Mapped[int] = mapped_column(primary_key=True)
    measurand: Mapped[str] = mapped_column(String(64), primary_key=True)
    phase: Mapped[str] = mapped_column(String(8), primary_key=True)
    bucket: Mapped[datetime] = mapped_column(primary_key=True, index=True)
    samples: Mapped[int]
    min: Mapped[float] = mapped_column(Float)
    max: Mapped[float] = mapped_column(Float)
    avg: Mapped[float] = mapped_column(Float)
    last: Mapped[float] = mapped_column(Float)
    last_at: Mapped[datetime]
    energy_wh: Mapped[float | None] = mapped_column(Float)


class MeterRollup1m(_MeterRollup, Base):
    __tablename__ = "meter_rollup_1m"


class MeterRollup1h(_MeterRollup, Base):
    __tablename__ = "meter_rollup_1h"


class _SiteRollup:
    """Per site ('' = chargers without one) and bucket: the sum of its chargers' mean power, the sum of
    their peaks (an upper bound of the site's peak) and the energy delivered."""

    site: Mapped[str] = mapped_column(String(64), primary_key=True)
    bucket: Mapped[datetime] = mapped_column(primary_key=True)
    power_avg_w: Mapped[float] = mapped_column(Float)
    power_max_w: Mapped[float] = mapped_column(Float)
    energy_wh: Mapped[float] = mapped_column(Float)


class SiteRollup1m(_SiteRollup, Base):
    __tablename__ = "site_rollup_1m"


class SiteRollup1h(_SiteRollup, Base):
    __tablename__ = "site_rollup_1h"


class ApiToken(Base):
    """Operator-API bearer token: only its SHA-256 is stored (tokens are random, high-entropy secrets)."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(100))
    role: Mapped[str] = mapped_column(String(16))
    token_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    region: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    revoked_at: Mapped[datetime | None]


# The operations tables share this metadata (one schema, one migration history).
from chargeops.db import certificate_models as _certificate_models  # noqa: E402, F401
from chargeops.db import ops_models as _ops_models  # noqa: E402, F401
from chargeops.db import tariff_models as _tariff_models  # noqa: E402, F401
