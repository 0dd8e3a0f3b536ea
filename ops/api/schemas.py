"""Request and response bodies. Requests forbid unknown fields so a misspelt setting is an error, not a no-op.

Times go out as ISO-8601 UTC with `Z`; SQLite hands back naive datetimes, which are UTC by convention here.

A little over ~450 lines: the bodies of the core resources kept as one catalogue (tariffs and costs have
modules of their own); split it by resource if it grows further.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Generic, Literal, Self, TypeVar

import orjson
from fastapi import Path, Response
from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    model_validator,
)

from chargeops.ids import CHARGER_ID_PATTERN
from chargeops.passwords import MAX_LENGTH, MIN_LENGTH
from ops.api.auth import Role
from ops.api.cost_schema import CostOut

# OCPP 2.0.1 idToken is at most 36 characters; a 1.6 charger can only present an idTag of at most 20.
ID_TOKEN_PATTERN = r"^[\x21-\x7e]{1,36}$"


def as_utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


# Made aware UTC when the model is built; pydantic's own (Rust) serialiser then writes it with `Z`, which
# for a 1,000-row page is a sixth of the time a Python serialiser per field took (bench/api_load.py).
UtcTime = Annotated[datetime, AfterValidator(as_utc)]
UtcInput = Annotated[AwareDatetime, AfterValidator(as_utc)]
ChargerId = Annotated[
    str, Field(pattern=CHARGER_ID_PATTERN, description="1–48 of A-Z a-z 0-9 . _ : * + - | @ =")
]
Password = Annotated[
    str,
    Field(
        min_length=MIN_LENGTH,
        max_length=MAX_LENGTH,
        description="Basic-auth password, 16-40 characters as OCPP asks; stored hashed, never returned",
    ),
]
SecurityProfile = Annotated[int, Field(ge=0, le=3)]
Kind = Literal["charger", "swap_station"]
Admission = Literal["accepted", "pending", "rejected"]
Site = Annotated[str, Field(min_length=1, max_length=64)]
Label = Annotated[str, Field(min_length=1, max_length=50)]
IdTokenType = Literal[
    "Central", "eMAID", "ISO14443", "ISO15693", "KeyCode", "Local", "MacAddress", "NoAuthorization"
]
IdTokenStatus = Literal["Accepted", "Blocked", "Expired", "Invalid"]


MAX_DB_INT = 2**63 - 1  # ids and counts are 64-bit in the database; larger numbers are the caller's mistake
IdPath = Annotated[int, Path(ge=1, le=MAX_DB_INT, description="a database id")]


class Input(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ChargerCreate(Input):
    id: ChargerId
    password: Password | None = None
    site: Site | None = None
    kind: Kind = "charger"
    vendor: Label | None = None
    model: Label | None = None
    security_profile: SecurityProfile | None = Field(
        default=None, description="defaults to 1 with a password, else 0; 1 and 2 need a password"
    )


class ChargerPatch(Input):
    """Only the fields sent change; `null` clears `password`, `site`, `vendor` or `model`."""

    password: Password | None = None
    security_profile: SecurityProfile | None = None
    site: Site | None = None
    kind: Kind | None = None
    vendor: Label | None = None
    model: Label | None = None
    admission: Admission | None = None

    @model_validator(mode="after")
    def _required_stay_set(self) -> Self:
        nulls = [
            name
            for name in ("security_profile", "kind", "admission")
            if name in self.model_fields_set and getattr(self, name) is None
        ]
        if nulls:
            raise ValueError(f"{', '.join(nulls)} cannot be null")
        return self


class ConnectorOut(BaseModel):
    evse_id: int
    connector_id: int
    status: str
    error_code: str | None
    vendor_error_code: str | None
    reported_at: UtcTime | None


class ChargerOut(BaseModel):
    id: str
    site: str | None
    kind: str
    vendor: str | None
    model: str | None
    serial_number: str | None
    firmware_version: str | None
    protocol: str | None
    connected: bool
    status: str | None = Field(description="the worst status the charger and its connectors reported")
    admission: str
    registration_status: str | None
    security_profile: int
    pending_security_profile: int | None = Field(
        default=None,
        description="a higher profile the charger agreed to (SetNetworkProfile, 1.6 ChangeConfiguration "
        "SecurityProfile) and has not connected with yet; its first connection with it makes it its profile",
    )
    has_password: bool
    connectors: list[ConnectorOut]
    last_seen: UtcTime | None
    last_boot_at: UtcTime | None
    created_at: UtcTime


class IdTokenPut(Input):
    type: IdTokenType = "ISO14443"
    status: IdTokenStatus
    expiry: UtcInput | None = None
    group_id: Annotated[str, Field(pattern=ID_TOKEN_PATTERN)] | None = None


class IdTokenOut(BaseModel):
    id_token: str
    type: str
    status: str
    expiry: UtcTime | None
    group_id: str | None
    updated_at: UtcTime


class MeterFlagOut(BaseModel):
    """A register reading left out of billing: why, what it read, and the last plausible reading before it."""

    reason: Literal["backwards", "exceeds_max_power", "clock_skew"]
    value_wh: float
    sampled_at: UtcTime
    previous_wh: float | None
    previous_at: UtcTime | None
    detail: str
    flagged_at: UtcTime


class SeqNoGapOut(BaseModel):
    """2.x TransactionEvent seqNos the station skipped and has not delivered since, `first` to `last`."""

    first: int
    last: int


class TransactionOut(BaseModel):
    charger_id: str
    transaction_id: str
    evse_id: int | None
    connector_id: int | None
    id_token: str | None
    started_at: UtcTime | None
    stopped_at: UtcTime | None
    meter_start_wh: float | None
    meter_stop_wh: float | None
    energy_wh: float | None = Field(description="billed: the last plausible register reading − the start")
    stop_reason: str | None
    active: bool
    meter_flags: list[MeterFlagOut] = Field(
        default_factory=list, description="readings judged implausible and left out of `energy_wh`"
    )
    missing_seq_nos: list[SeqNoGapOut] = Field(
        default_factory=list, description="TransactionEvents not received (OCPP 2.x seqNo gaps), oldest first"
    )
    missing_seq_nos_queued: bool | None = Field(
        default=None,
        description="the station's answer to the GetTransactionStatus a gap opening sent: true, it still "
        "queues messages of the transaction; false, the missing ones will not come; null, not asked (yet)",
    )
    cost: CostOut | None = Field(default=None, description="under the session's tariff; null: none applies")


class SignedReadingOut(BaseModel):
    """A signed meter reading as the meter signed it (OCMF or the charger's format): check it with the
    meter's public key, e.g. in the S.A.F.E. transparency software."""

    sampled_at: str
    measurand: str
    context: str | None
    phase: str | None
    value: float | None
    signed_meter_data: str
    signing_method: str | None
    encoding_method: str | None
    public_key: str | None


class TransactionDetailOut(TransactionOut):
    signed_meter_values: list[SignedReadingOut]


class ChargingScheduleOut(BaseModel):
    """An ISO 15118 session's charging schedule: one ops offered (`source` csms; `status`: the charger's
    answer to the TxProfile) or the one the EV chose (`source` ev). Periods from `starts_at`."""

    source: Literal["csms", "ev"]
    evse_id: int
    starts_at: datetime
    duration_s: int | None
    rate_unit: str
    periods: list[dict[str, Any]]
    status: str | None
    created_at: datetime


class ChargingSchedulesOut(BaseModel):
    """What the EV asked for (its latest charging needs, as `EvChargingNeeds` says them; null if it sent
    none) and the schedules, oldest first."""

    needs: dict[str, Any] | None
    items: list[ChargingScheduleOut]


class ApiTokenCreate(Input):
    name: Annotated[str, Field(min_length=1, max_length=100)]
    role: Role
    region: Annotated[str, Field(min_length=1, max_length=64)] | None = None


class ApiTokenOut(BaseModel):
    id: int
    name: str
    role: str
    region: str | None
    created_at: UtcTime
    revoked_at: UtcTime | None


class ApiTokenCreated(ApiTokenOut):
    token: str = Field(description="the bearer secret; shown this once, only its SHA-256 is kept")


T = TypeVar("T")


class Items(BaseModel, Generic[T]):
    items: list[T]


class Page(BaseModel, Generic[T]):
    """One page of a long list: ask again with `cursor=next` until `next` is null."""

    items: list[T]
    next: str | None


MAX_PAGE = 1000  # rows per page at most: a bigger answer holds the API (and its pool) too long


def json_response(doc: Any) -> Response:
    """`doc` as JSON the way the response models write it (times in UTC with `Z`, naive ones being UTC),
    for the lists big enough that building models first would double their cost."""
    return Response(
        orjson.dumps(doc, option=orjson.OPT_NAIVE_UTC | orjson.OPT_UTC_Z), media_type="application/json"
    )


class CommandResponse(BaseModel):
    response: dict[str, Any] = Field(description="the charger's reply exactly as sent (OCPP field names)")


# -- operations ---------------------------------------------------------------------------------------


class Me(BaseModel):
    name: str
    role: Role
    region: str | None


class Fault(BaseModel):
    code: str | None
    component: str | None
    description: str | None


class PartQty(BaseModel):
    sku: str
    qty: int


class PurchaseOrder(BaseModel):
    supplier: str | None
    qty: int | None
    received: int = Field(description="units received so far (deliveries may be partial)")
    ordered_at: str | None
    promised_at: str | None = Field(description="order date + the supplier's measured mean lead time")


class TicketOut(BaseModel):
    id: int
    kind: Literal["maintenance", "supply"]
    status: str
    priority: str
    charger_id: str | None
    site: str | None
    depot: str | None
    region: str | None
    rule: str | None
    subject: str | None
    fault: Fault | None
    diagnosis: str | None
    parts: list[PartQty]
    parts_used: list[PartQty] | None = Field(
        default=None, description="what the crew reported using when it resolved the ticket (all resolves)"
    )
    order: PurchaseOrder | None = Field(default=None, description="supply tickets: the purchase order")
    occurrences: int
    assignee: str | None
    created_at: str
    updated_at: str | None
    last_occurred_at: str | None
    sla_due_at: str | None
    cleared_at: str | None
    resolved_at: str | None
    closed_at: str | None


class TicketLogOut(BaseModel):
    at: UtcTime
    actor: str
    action: str
    from_status: str | None
    to_status: str | None
    note: str | None


class TicketDetail(TicketOut):
    log: list[TicketLogOut]


class PartUsed(Input):
    sku: Annotated[str, Field(min_length=1, max_length=64)]
    qty: Annotated[int, Field(ge=0, le=10_000)]


TicketStatus = Literal["open", "assigned", "in_progress", "resolved", "closed"]


class TicketTransition(Input):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    to: TicketStatus
    from_: TicketStatus | None = Field(
        default=None,
        alias="from",
        description="the status the caller saw; if the ticket has moved on since, the step is refused (409)",
    )
    assignee: Annotated[str, Field(min_length=1, max_length=100)] | None = None
    note: Annotated[str, Field(max_length=2000)] | None = None
    parts_used: list[PartUsed] | None = Field(
        default=None,
        max_length=100,
        description="with `to: resolved` of a maintenance ticket (required if it lists parts): what was "
        "fitted; the reserved rest goes back to stock, extras are booked too. [] = nothing used",
    )


class StockOut(BaseModel):
    depot: str
    sku: str
    on_hand: int
    reserved: int
    available: int
    on_order: int


class Receipt(Input):
    depot: Annotated[str, Field(min_length=1, max_length=64)]
    sku: Annotated[str, Field(min_length=1, max_length=64)]
    qty: Annotated[int, Field(ge=1, le=1_000_000)]
    order: int | None = Field(
        default=None,
        ge=1,
        le=MAX_DB_INT,
        description="the purchase order (supply ticket id) delivered; default: oldest open first",
    )
    note: Annotated[str, Field(max_length=2000)] | None = None


class ReceiptOut(BaseModel):
    stock: StockOut
    closed_ticket: int | None = Field(description="the first order this receipt completed (None: none)")
    closed_orders: list[int]


class RiskOut(BaseModel):
    depot: str
    sku: str
    level: Literal["ok", "watch", "warning", "critical"]
    probability: float = Field(description="stock-out probability within the part's lead time + σ")
    opened_at: str | None
    level_since: str | None
    assessed_at: str | None
    reasons: list[dict[str, Any]]
    figures: dict[str, Any]
    actions: list[dict[str, Any]]


class WarningChangeOut(BaseModel):
    id: int
    at: str | None
    depot: str
    sku: str
    change: Literal["opened", "escalated", "deescalated", "cleared"]
    from_: str = Field(alias="from")
    to: str
    probability: float
    reasons: list[dict[str, Any]]
    figures: dict[str, Any]
    actions: list[dict[str, Any]]

    model_config = ConfigDict(populate_by_name=True, serialize_by_alias=True)


class WeakSpotOut(BaseModel):
    """A structural weak spot of the spare-parts supply (`ops.weak_spots`): a diagnosis, not a warning."""

    kind: Literal[
        "single_source", "lead_time_variance", "supplier_on_time", "concentration", "failure_trend_by_model"
    ]
    severity: Literal["high", "medium", "low"]
    sku: str | None = None
    supplier: str | None = None
    depots: list[str] | None = None
    text: str
    figures: dict[str, Any]
