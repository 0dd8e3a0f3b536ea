"""What differs between OCPP versions at the RPC layer: subprotocol, schema files, error-code spellings, and
which side initiates each action.

Not all version differences live here: each version has its session class (`v16`, `v201`, `v21`) with its
route table and handlers; the neutral-command translations (`commands`, `limits`) branch on the version
object where a message exists only in 2.1 or its payload differs; and `rpc` accepts the SEND and
CALLRESULTERROR frames only on 2.1."""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path

import ocpp

_SCHEMA_ROOT = Path(ocpp.__file__).resolve().parent


@dataclass(frozen=True, slots=True)
class OcppVersion:
    subprotocol: str
    name: str
    schema_dir: Path
    request_suffix: str
    format_violation: str
    occurrence_violation: str
    rpc_framework_error: str
    message_type_not_supported: str
    charger_actions: frozenset[str]
    both_ways: frozenset[str] = frozenset({"DataTransfer"})

    def schema_path(self, action: str, response: bool) -> Path:
        suffix = "Response" if response else self.request_suffix
        return self.schema_dir / f"{action}{suffix}.json"

    def max_length(self, action: str, field: str, *, response: bool) -> int:
        """A top-level string field's maxLength in this version's schema (the schema is the one place
        that says it: Get15118EVCertificateResponse.exiResponse is 7500 in 2.0.1, 17000 in 2.1)."""
        return _max_length(self.schema_path(action, response), field)

    def known_actions(self) -> frozenset[str]:
        """Every action this version defines (from its request schema files)."""
        return _known_actions(self)

    def csms_actions(self) -> frozenset[str]:
        """Actions the central system may send to a charger of this version."""
        return (self.known_actions() - self.charger_actions) | self.both_ways


@lru_cache(maxsize=64)
def _max_length(path: Path, field: str) -> int:
    return int(json.loads(path.read_text())["properties"][field]["maxLength"])


_ACTION_CACHE: dict[str, frozenset[str]] = {}


def _known_actions(version: OcppVersion) -> frozenset[str]:
    cached = _ACTION_CACHE.get(version.subprotocol)
    if cached is None:
        names = {p.stem for p in version.schema_dir.glob("*.json")}
        if version.request_suffix:
            actions = {n.removesuffix("Request") for n in names if n.endswith("Request")}
        else:
            actions = {n for n in names if not n.endswith("Response")}
        cached = _ACTION_CACHE[version.subprotocol] = frozenset(actions)
    return cached


V16 = OcppVersion(
    subprotocol="ocpp1.6",
    name="1.6",
    schema_dir=_SCHEMA_ROOT / "v16" / "schemas",
    request_suffix="",
    # OCPP-J 1.6 §4.2.3 spellings, kept by the errata ("do not fix").
    format_violation="FormationViolation",
    occurrence_violation="OccurenceConstraintViolation",
    rpc_framework_error="ProtocolError",
    message_type_not_supported="ProtocolError",
    charger_actions=frozenset(
        {
            "Authorize",
            "BootNotification",
            "DataTransfer",
            "DiagnosticsStatusNotification",
            "FirmwareStatusNotification",
            "Heartbeat",
            "MeterValues",
            "StartTransaction",
            "StatusNotification",
            "StopTransaction",
            "SecurityEventNotification",
            "SignCertificate",
            "LogStatusNotification",
            "SignedFirmwareStatusNotification",
        }
    ),
)

_V2_CHARGER_ACTIONS = frozenset(
    {
        "Authorize",
        "BootNotification",
        "ClearedChargingLimit",
        "DataTransfer",
        "FirmwareStatusNotification",
        "Get15118EVCertificate",
        "GetCertificateStatus",
        "Heartbeat",
        "LogStatusNotification",
        "MeterValues",
        "NotifyChargingLimit",
        "NotifyCustomerInformation",
        "NotifyDisplayMessages",
        "NotifyEVChargingNeeds",
        "NotifyEVChargingSchedule",
        "NotifyEvent",
        "NotifyMonitoringReport",
        "NotifyReport",
        "PublishFirmwareStatusNotification",
        "ReportChargingProfiles",
        "ReservationStatusUpdate",
        "SecurityEventNotification",
        "SignCertificate",
        "StatusNotification",
        "TransactionEvent",
    }
)

V201 = OcppVersion(
    subprotocol="ocpp2.0.1",
    name="2.0.1",
    schema_dir=_SCHEMA_ROOT / "v201" / "schemas",
    request_suffix="Request",
    format_violation="FormatViolation",
    # OCPP-J 2.0.1 (Part 4 §4.3) spells it correctly; only 1.6 keeps "Occurence" (README "CALLERROR codes").
    occurrence_violation="OccurrenceConstraintViolation",
    rpc_framework_error="RpcFrameworkError",
    message_type_not_supported="MessageTypeNotSupported",
    charger_actions=_V2_CHARGER_ACTIONS,
)

V21 = replace(
    V201,
    subprotocol="ocpp2.1",
    name="2.1",
    schema_dir=_SCHEMA_ROOT / "v21" / "schemas",
    charger_actions=_V2_CHARGER_ACTIONS
    | frozenset(
        {
            "BatterySwap",
            "ClosePeriodicEventStream",
            "GetCertificateChainStatus",
            "NotifyDERAlarm",
            "NotifyDERStartStop",
            "NotifyPriorityCharging",
            "NotifySettlement",
            "OpenPeriodicEventStream",
            "PullDynamicScheduleUpdate",
            "ReportDERControl",
            "VatNumberValidation",
        }
    ),
)

BY_SUBPROTOCOL: dict[str, OcppVersion] = {v.subprotocol: v for v in (V16, V201, V21)}
