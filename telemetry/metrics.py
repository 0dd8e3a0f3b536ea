"""Prometheus metrics. Names start with `chargeops_`; no per-charger labels (bounded cardinality); units in
the name (`_watt_hours_total`, `_watts`, `_seconds`, `_ratio` for 0-1); no `_created` series (Prometheus does
not use them and they double every counter's series); label values never hold whitespace (`label`: an
operator's site id or a charger's fault code may)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from functools import cache
from typing import Any, TypeVar

from prometheus_client import Counter, Gauge, Histogram, disable_created_metrics
from prometheus_client.metrics import MetricWrapperBase

disable_created_metrics()

M = TypeVar("M", bound=MetricWrapperBase)


def label(value: object) -> str:
    """A label value from text we do not choose (site, depot and SKU ids, codes a charger sends): whitespace
    runs become `_`, so PromQL matchers and Grafana variables need no quoting games."""
    return "_".join(str(value).split())


def cached_labels(metric: M) -> Callable[..., M]:
    """`metric.labels(...)` memoised: the hot path looks a child up once per label set, not per message.
    Only for label values from a bounded set (actions, kinds, codes)."""
    lookup: Callable[..., Any] = cache(metric.labels)
    return lookup


def set_or_withdraw(gauge: Gauge, key: str, value: float | None) -> None:
    """Set the series of label value `key`, or with None withdraw it: no figure is better than a stale one."""
    name = label(key)
    if value is None:
        with contextlib.suppress(KeyError):
            gauge.remove(name)
    else:
        gauge.labels(name).set(value)


CHARGERS_CONNECTED = Gauge(
    "chargeops_chargers_connected", "Chargers holding a WebSocket to this gateway process", ["protocol"]
)
# Several gateways behind a balancer (docs/scaling.md): each names itself, so its series can be told apart
# (and joined on `instance`) however Prometheus discovered it.
GATEWAY_INFO = Gauge(
    "chargeops_gateway_info", "1, labelled with this gateway's CHARGEOPS_GATEWAY_ID", ["gateway_id"]
)
OCPP_MESSAGES = Counter(
    "chargeops_ocpp_messages_total", "OCPP CALLs handled, by action and direction", ["action", "direction"]
)
OCPP_CALL_ERRORS = Counter(
    "chargeops_ocpp_call_errors_total",
    "CALLERRORs sent (out) and received (in), by code",
    ["code", "direction"],
)
OCPP_HANDLING_SECONDS = Histogram(
    "chargeops_ocpp_handling_seconds",
    "Time from receiving a charger CALL to sending its answer",
    ["action"],
    # up to a minute: when a whole fleet reconnects at once, answers take tens of seconds
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
OCPP_OUTGOING_SECONDS = Histogram(
    "chargeops_ocpp_outgoing_call_seconds",
    "Round trip of CSMS-initiated calls",
    ["action"],
    buckets=(0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0),
)
HANDSHAKES_REFUSED = Counter(
    "chargeops_handshakes_refused_total", "WebSocket handshakes refused, by reason", ["reason"]
)
API_REFUSED = Counter(
    "chargeops_api_requests_refused_total",
    "Operator API requests refused before any work: rate_limited (429) or overloaded (503)",
    ["reason"],
)
CONNECTION_TAKEOVERS = Counter(
    "chargeops_connection_takeovers_total", "Authenticated connections that replaced a live one"
)
TRANSACTION_CONFLICTS = Counter(
    "chargeops_transaction_conflicts_total",
    "Transaction messages kept out of the record: an end for another charger's transaction "
    "(foreign_transaction), a second, different end of an ended one (second_stop)",
    ["kind"],
)
TRANSACTION_SEQ_GAPS = Counter(
    "chargeops_transaction_seq_gaps_total",
    "2.x TransactionEvents whose seqNo skipped numbers past the highest stored for their transaction",
)
FRAMES_REJECTED = Counter(
    "chargeops_ocpp_frames_rejected_total", "Frames that were not valid OCPP-J, by reason", ["reason"]
)
EVENTS_PUBLISHED = Counter("chargeops_events_published_total", "Version-neutral events published", ["kind"])
INGEST_ROWS = Counter("chargeops_ingest_rows_total", "Rows written by ingest, by table", ["table"])
INGEST_BATCH_SIZE = Histogram(
    "chargeops_ingest_batch_events",
    "Events per committed ingest batch",
    buckets=(1, 5, 10, 50, 100, 500, 1000, 5000),
)
INGEST_COMMIT_SECONDS = Histogram(
    "chargeops_ingest_commit_seconds",
    "Time to store one ingest batch (one database transaction)",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)
INGEST_ERRORS = Counter("chargeops_ingest_errors_total", "Ingest batches that failed to commit")
DATABASE_ERRORS = Counter("chargeops_database_errors_total", "Database operations that failed", ["component"])

# Hot-path lookups (bounded label values: OCPP action names that have a route, event kinds).
messages_in = cached_labels(OCPP_MESSAGES)
handling_seconds = cached_labels(OCPP_HANDLING_SECONDS)
events_published = cached_labels(EVENTS_PUBLISHED)

# -- fleet and pipeline (issue 3) -------------------------------------------------------------------------
# Fleet state is summarised per site and status, never per charger: a per-charger view is served by the
# API and by the Grafana "charger detail" dashboard, which reads Postgres directly.
FLEET_CHARGERS = Gauge(
    "chargeops_fleet_chargers",
    "Registered chargers by site and state (online, offline, faulted)",
    ["site", "state"],
)
FLEET_CONNECTORS = Gauge(
    "chargeops_fleet_connectors", "Connectors by their latest reported status", ["status"]
)
SITE_POWER = Gauge("chargeops_site_power_watts", "Charging power now (latest sample per connector)", ["site"])
SITE_ENERGY = Counter("chargeops_site_energy_watt_hours_total", "Energy delivered in transactions", ["site"])
SESSIONS_ACTIVE = Gauge("chargeops_sessions_active", "Transactions in progress", ["site"])
FAULTS = Counter("chargeops_faults_total", "Faults reported by chargers (not clearings), by code", ["code"])
METER_IMPLAUSIBLE = Counter(
    "chargeops_meter_implausible_total",
    "Transaction energy register readings judged implausible and left out of billing, by reason",
    ["reason"],
)
TICKETS_OPEN = Gauge(
    "chargeops_tickets_open", "Tickets not yet resolved, by kind and priority", ["kind", "priority"]
)
# Tickets an operator must act on now: past their SLA, and open with nobody on them yet (status `open`).
TICKETS_OVERDUE = Gauge(
    "chargeops_tickets_overdue", "Unresolved tickets past their SLA due time", ["kind", "priority"]
)
TICKETS_UNASSIGNED = Gauge(
    "chargeops_tickets_unassigned",
    "Tickets in status open (not assigned, not in progress), by kind and priority",
    ["kind", "priority"],
)
TICKETS_UNASSIGNED_AGE = Gauge(
    "chargeops_tickets_unassigned_max_age_seconds",
    "Longest wait of a ticket in status open, since it was opened or handed back (0: none waiting)",
    ["kind", "priority"],
)
TICKET_EVENTS = Counter(
    "chargeops_ticket_events_total",
    "Ticket lifecycle events (created, repeated, cleared, …)",
    ["kind", "action"],
)
# Per (depot, SKU) only for the pairs that need attention, at most 50 depots x 300 SKUs (`ops.gauges`).
STOCK_AVAILABLE = Gauge(
    "chargeops_stock_available",
    "Spare parts on hand minus reserved, per depot and SKU below its reorder point or under a warning",
    ["depot", "sku"],
)
SUPPLY_RISK = Gauge(
    "chargeops_supply_risk",
    "1 for the stored early-warning level (watch, warning, critical) in force for a depot and SKU "
    "(pairs at ok have no series)",
    ["depot", "sku", "level"],
)
STOCKOUT_PROBABILITY = Gauge(
    "chargeops_supply_stockout_probability",
    "Probability of a stock-out within the part's lead time + its deviation, per depot and SKU under a "
    "warning",
    ["depot", "sku"],
)
SUPPLY_ATTENTION_PAIRS = Gauge(
    "chargeops_supply_attention_pairs",
    "Depot/SKU pairs below their reorder point or under a warning (exported or beyond the series bound)",
)
DEPOT_PARTS_ATTENTION = Gauge(
    "chargeops_depot_parts_attention",
    "SKUs of the depot below their reorder point or under a warning (every depot, 0: none)",
    ["depot"],
)
SWAP_EVENTS = Counter(
    "chargeops_battery_swap_events_total",
    "Swap steps stored (BatteryIn, BatteryOut, BatteryOutTimeout)",
    ["event_type"],
)
# Every step's series exists from the start at 0, so `increase()` counts a process's first BatteryOutTimeout.
for _step in ("BatteryIn", "BatteryOut", "BatteryOutTimeout"):
    SWAP_EVENTS.labels(_step)
SWAP_ORPHANS = Gauge("chargeops_swap_orphans", "Swaps of the last 24 h whose charged pack was left behind")
BATTERIES = Gauge(
    "chargeops_batteries", "Battery packs by where they are (slot, vehicle, unknown)", ["location"]
)
BATTERIES_BY_SOH = Gauge(
    "chargeops_batteries_by_soh", "Battery packs by state-of-health band (%, last reported)", ["band"]
)
INGEST_LAG = Histogram(
    "chargeops_ingest_lag_seconds",
    "From the gateway receiving a message to its rows being committed",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0),
)
INGEST_REDELIVERIES = Counter(
    "chargeops_ingest_redeliveries_total", "Events delivered again that were already stored (and skipped)"
)
BUS_ERRORS = Counter("chargeops_bus_errors_total", "Bus (broker) failures, by operation", ["operation"])
GATEWAY_LOST_CHARGERS = Counter(
    "chargeops_gateway_lost_chargers_total",
    "Chargers marked disconnected because the gateway run holding them was lost (its Will: offline) or "
    "replaced by a new run of the same gateway id (restarted)",
    ["why"],
)

# -- webhooks (ops.webhooks) --------------------------------------------------------------------------------
WEBHOOK_DELIVERIES = Counter(
    "chargeops_webhook_deliveries_total", "Webhook delivery attempts: delivered or failed", ["outcome"]
)
WEBHOOK_OUTBOX_PENDING = Gauge(
    "chargeops_webhook_outbox_pending", "Webhook messages to active subscriptions not yet delivered"
)

# -- PV + storage + charging sites (ops.site_power), label `site` only -------------------------------------
SITE_PV = Gauge("chargeops_site_pv_watts", "PV output the site controller last reported", ["site"])
SITE_STORAGE_SOC = Gauge("chargeops_site_storage_soc_ratio", "Site storage state of charge (0-1)", ["site"])
SITE_STORAGE = Gauge(
    "chargeops_site_storage_watts", "Site storage power: > 0 charging, < 0 discharging", ["site"]
)
SITE_GRID_IMPORT = Gauge(
    "chargeops_site_grid_import_watts", "Grid power at the site connection: > 0 import, < 0 export", ["site"]
)
SITE_CHARGING_LOAD = Gauge(
    "chargeops_site_charging_load_watts",
    "Charging power the site's chargers report (latest samples)",
    ["site"],
)
SITE_SELF_CONSUMPTION = Gauge(
    "chargeops_site_self_consumption_ratio", "PV used on site ÷ PV produced (absent while PV is 0)", ["site"]
)
SITE_POWER_LIMIT = Gauge(
    "chargeops_site_power_limit_watts",
    "Charging budget the planner shares among the site's chargers",
    ["site"],
)
SITE_DISCHARGE_ALLOWANCE = Gauge(
    "chargeops_site_v2x_discharge_allowance_watts",
    "Discharge the planner allows the site's bidirectional (OCPP 2.1 DER) chargers; absent while unlimited",
    ["site"],
)

# -- DER control (OCPP 2.1): counted by ingest, once per stored alarm; labels are the schema's enums -------
DER_ALARMS = Counter(
    "chargeops_der_alarms_total",
    "DER alarms raised by bidirectional chargers (NotifyDERAlarm, not the endings)",
    ["control_type", "grid_event_fault"],
)
