"""OCPP 2.0.1 device model: components and variables mapped onto the charger's configuration store and
live state, read and written with Get/SetVariables and reported with Get(Base)Report.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from firmware_stubs.dialects.base import Dialect, Payload
from firmware_stubs.dialects.v201.messages import CONNECTOR_STATUS
from firmware_stubs.model import iso, utc_now

if TYPE_CHECKING:
    from firmware_stubs.charger import Connector, SimulatedCharger

_DATA_TYPE = {"int": "integer", "bool": "boolean", "csv": "MemberList", "str": "string"}
REPORT_CHUNK = 20

# (component, variable, variable instance) -> config store key (shared keys keep the 1.6 names)
_VARIABLES: dict[tuple[str, str, str | None], str] = {
    ("OCPPCommCtrlr", "HeartbeatInterval", None): "HeartbeatInterval",
    ("HeartbeatCtrlr", "HeartbeatInterval", None): "HeartbeatInterval",
    ("OCPPCommCtrlr", "MessageTimeout", "Default"): "MessageTimeout",
    ("OCPPCommCtrlr", "MessageAttempts", "TransactionEvent"): "TransactionMessageAttempts",
    ("OCPPCommCtrlr", "MessageAttemptInterval", "TransactionEvent"): "TransactionMessageRetryInterval",
    ("OCPPCommCtrlr", "WebSocketPingInterval", None): "WebSocketPingInterval",
    ("OCPPCommCtrlr", "ResetRetries", None): "ResetRetries",
    ("OCPPCommCtrlr", "NetworkConfigurationPriority", None): "NetworkConfigurationPriority",
    ("OCPPCommCtrlr", "OfflineThreshold", None): "OfflineThreshold",
    ("SampledDataCtrlr", "TxUpdatedInterval", None): "MeterValueSampleInterval",
    ("SampledDataCtrlr", "TxUpdatedMeasurands", None): "MeterValuesSampledData",
    ("SampledDataCtrlr", "TxEndedMeasurands", None): "StopTxnSampledData",
    ("SampledDataCtrlr", "TxEndedInterval", None): "TxEndedInterval",
    ("AlignedDataCtrlr", "Interval", None): "ClockAlignedDataInterval",
    ("AlignedDataCtrlr", "Measurands", None): "MeterValuesAlignedData",
    ("AuthCtrlr", "AuthorizeRemoteStart", None): "AuthorizeRemoteTxRequests",
    ("AuthCtrlr", "LocalAuthorizeOffline", None): "LocalAuthorizeOffline",
    ("AuthCtrlr", "LocalPreAuthorize", None): "LocalPreAuthorize",
    ("AuthCacheCtrlr", "Enabled", None): "AuthorizationCacheEnabled",
    ("LocalAuthListCtrlr", "Enabled", None): "LocalAuthListEnabled",
    ("LocalAuthListCtrlr", "Entries", None): "LocalAuthListMaxLength",
    ("LocalAuthListCtrlr", "ItemsPerMessage", None): "SendLocalListMaxLength",
    ("LocalAuthListCtrlr", "BytesPerMessage", None): "BytesPerMessage",
    ("TxCtrlr", "EVConnectionTimeOut", None): "ConnectionTimeOut",
    ("TxCtrlr", "StopTxOnEVSideDisconnect", None): "StopTransactionOnEVSideDisconnect",
    ("TxCtrlr", "StopTxOnInvalidId", None): "StopTransactionOnInvalidId",
    ("TxCtrlr", "TxStartPoint", None): "TxStartPoint",
    ("TxCtrlr", "TxStopPoint", None): "TxStopPoint",
    ("SmartChargingCtrlr", "ProfileStackLevel", None): "ChargeProfileMaxStackLevel",
    ("SmartChargingCtrlr", "RateUnit", None): "ChargingScheduleAllowedChargingRateUnit",
    ("SmartChargingCtrlr", "PeriodsPerSchedule", None): "ChargingScheduleMaxPeriods",
    ("SmartChargingCtrlr", "Entries", "ChargingProfiles"): "MaxChargingProfilesInstalled",
    ("DeviceDataCtrlr", "ItemsPerMessage", "GetVariables"): "ItemsPerMessage",
    ("DeviceDataCtrlr", "ItemsPerMessage", "SetVariables"): "ItemsPerMessage",
    ("DeviceDataCtrlr", "BytesPerMessage", "GetVariables"): "BytesPerMessage",
    ("DeviceDataCtrlr", "BytesPerMessage", "SetVariables"): "BytesPerMessage",
    ("SecurityCtrlr", "SecurityProfile", None): "SecurityProfile",
    ("SecurityCtrlr", "OrganizationName", None): "OrganizationName",
    ("ClockCtrlr", "TimeSource", None): "TimeSource",
}


def _computed(cp: SimulatedCharger, c: Connector | None, name: str) -> str | None:
    """Read-only variables derived from live state rather than stored."""
    if name == "AvailabilityState" and c is not None:
        return CONNECTOR_STATUS.get(c.status, "Occupied")
    if name == "DateTime":
        return iso(utc_now())
    if name == "Model":
        return cp.model
    if name == "VendorName":
        return cp.vendor
    if name == "FirmwareVersion":
        return cp.firmware_version
    if name == "Power" and c is not None:
        return f"{cp.max_power_w:.0f}"
    if name == "ConnectorType":
        return "cCCS2" if cp.dc else "cType2"
    return None


_COMPUTED: dict[str, tuple[str, ...]] = {
    "ChargingStation": ("AvailabilityState", "Model", "VendorName", "FirmwareVersion"),
    "ClockCtrlr": ("DateTime",),
    "EVSE": ("AvailabilityState", "Power"),
    "Connector": ("AvailabilityState", "ConnectorType"),
}
_COMPONENTS = {comp for comp, _, _ in _VARIABLES} | set(_COMPUTED)


class V201DeviceModel(Dialect):
    """Components and variables: lookup, GetVariables / SetVariables, GetBaseReport / GetReport."""

    def _evse(self, cp: SimulatedCharger, component: Payload) -> Connector | None:
        evse = (component.get("evse") or {}).get("id")
        if evse is None or not 1 <= evse < len(cp.connectors):
            return None
        return cp.connectors[evse]

    def _lookup(
        self, cp: SimulatedCharger, component: Payload, variable: Payload
    ) -> tuple[str, str | None, bool]:
        """(attributeStatus, value, readonly) for one component/variable pair."""
        name, var = component["name"], variable["name"]
        if name not in _COMPONENTS:
            return "UnknownComponent", None, True
        if var in _COMPUTED.get(name, ()):
            c = cp.connectors[0] if name == "ChargingStation" else self._evse(cp, component)
            if name in ("EVSE", "Connector") and c is None:
                return "UnknownComponent", None, True
            return "Accepted", _computed(cp, c, var), True
        key = _VARIABLES.get((name, var, variable.get("instance")))
        if key is None:
            return "UnknownVariable", None, True
        definition = cp.config.definition(key)
        return "Accepted", cp.config.get(key), definition is None or definition.readonly

    def _report_entries(self, cp: SimulatedCharger) -> Iterator[Payload]:
        for (name, var, instance), key in _VARIABLES.items():
            definition = cp.config.definition(key)
            if definition is None:
                continue
            variable: Payload = {"name": var}
            if instance:
                variable["instance"] = instance
            yield self._entry(
                {"name": name}, variable, cp.config.get(key) or "", definition.readonly, definition.kind
            )
        for name, variables in _COMPUTED.items():
            scopes = [None] if name in ("ChargingStation", "ClockCtrlr") else cp.connectors[1:]
            for c in scopes:
                component: Payload = {"name": name}
                if c is not None:
                    component["evse"] = {"id": c.index, **({"connectorId": 1} if name == "Connector" else {})}
                for var in variables:
                    value = _computed(cp, c or cp.connectors[0], var) or ""
                    yield self._entry(component, {"name": var}, value, True, "str")

    @staticmethod
    def _entry(component: Payload, variable: Payload, value: str, readonly: bool, kind: str) -> Payload:
        return {
            "component": component,
            "variable": variable,
            "variableAttribute": [
                {
                    "type": "Actual",
                    "value": value[:2500],
                    "mutability": "ReadOnly" if readonly else "ReadWrite",
                }
            ],
            "variableCharacteristics": {"dataType": _DATA_TYPE[kind], "supportsMonitoring": True},
        }

    def _send_report(self, cp: SimulatedCharger, request_id: int, entries: list[Payload]) -> None:
        chunks = [entries[i : i + REPORT_CHUNK] for i in range(0, len(entries), REPORT_CHUNK)] or [[]]
        for seq, chunk in enumerate(chunks):
            payload: Payload = {
                "requestId": request_id,
                "generatedAt": iso(utc_now()),
                "tbc": seq < len(chunks) - 1,
                "seqNo": seq,
            }
            if chunk:
                payload["reportData"] = chunk
            cp.emit("NotifyReport", payload, triggered=True)

    def on_GetVariables(self, cp: SimulatedCharger, p: Payload) -> Payload:
        results = []
        for item in p["getVariableData"]:
            result: Payload = {"component": item["component"], "variable": item["variable"]}
            attribute = item.get("attributeType", "Actual")
            if attribute != "Actual":
                result.update(attributeStatus="NotSupportedAttributeType", attributeType=attribute)
            else:
                status, value, _ = self._lookup(cp, item["component"], item["variable"])
                result["attributeStatus"] = status
                if status == "Accepted":
                    result.update(attributeType="Actual", attributeValue=(value or "")[:2500])
            results.append(result)
        return {"getVariableResult": results}

    def on_SetVariables(self, cp: SimulatedCharger, p: Payload) -> Payload:
        results = []
        for item in p["setVariableData"]:
            attribute = item.get("attributeType", "Actual")
            result: Payload = {
                "attributeType": attribute,
                "component": item["component"],
                "variable": item["variable"],
            }
            status, _, readonly = self._lookup(cp, item["component"], item["variable"])
            if attribute != "Actual":
                status = "NotSupportedAttributeType"
            elif status == "Accepted":
                key = _VARIABLES.get(
                    (item["component"]["name"], item["variable"]["name"], item["variable"].get("instance"))
                )
                if readonly or key is None:
                    status = "Rejected"
                else:
                    status = (
                        "Accepted" if cp.config.set(key, item["attributeValue"]) == "Accepted" else "Rejected"
                    )
                    if status == "Accepted":
                        cp.config_changed(key)
            result["attributeStatus"] = status
            results.append(result)
        return {"setVariableResult": results}

    def on_GetBaseReport(self, cp: SimulatedCharger, p: Payload) -> Payload:
        entries = list(self._report_entries(cp))
        if p["reportBase"] == "ConfigurationInventory":
            entries = [e for e in entries if e["variableAttribute"][0]["mutability"] == "ReadWrite"]
        elif p["reportBase"] == "SummaryInventory":
            entries = [e for e in entries if e["variable"]["name"] == "AvailabilityState"]
        self._send_report(cp, p["requestId"], entries)
        return {"status": "Accepted"}

    def on_GetReport(self, cp: SimulatedCharger, p: Payload) -> Payload:
        wanted = p.get("componentVariable")
        entries = list(self._report_entries(cp))
        if wanted:
            entries = [
                e
                for e in entries
                if any(
                    w["component"]["name"] == e["component"]["name"]
                    and ("variable" not in w or w["variable"]["name"] == e["variable"]["name"])
                    for w in wanted
                )
            ]
        if not entries:
            return {"status": "EmptyResultSet"}
        self._send_report(cp, p["requestId"], entries)
        return {"status": "Accepted"}
