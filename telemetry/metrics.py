"""Prometheus metrics. Names start with `chargeops_`; no per-charger labels (bounded cardinality)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

CHARGERS_CONNECTED = Gauge(
    "chargeops_chargers_connected", "Chargers holding a WebSocket to this gateway process", ["protocol"]
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
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
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
CONNECTION_TAKEOVERS = Counter(
    "chargeops_connection_takeovers_total", "Authenticated connections that replaced a live one"
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
INGEST_ERRORS = Counter("chargeops_ingest_errors_total", "Ingest batches that failed to commit")
DATABASE_ERRORS = Counter("chargeops_database_errors_total", "Database operations that failed", ["component"])
