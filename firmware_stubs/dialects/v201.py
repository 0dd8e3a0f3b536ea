"""OCPP 2.0.1 dialect: TransactionEvent, device model (components/variables), NotifyEvent faults.

Each connector N of the core is EVSE N with a single connector 1.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from firmware_stubs.dialects.base import Dialect, Payload, schedule_periods
from firmware_stubs.model import COMMON_KEYS, KeyDef, iso, parse_iso, utc_now

if TYPE_CHECKING:
    from firmware_stubs.charger import (
        Connector,
        OutboundCall,
        Reservation,
        Sample,
        SimulatedCharger,
        Transaction,
    )

_CONNECTOR_STATUS = {
    "Available": "Available",
    "Reserved": "Reserved",
    "Unavailable": "Unavailable",
    "Faulted": "Faulted",
}  # everything else (Preparing, Charging, Suspended*, Finishing) is Occupied
_CHARGING_STATE = {"Charging": "Charging", "SuspendedEV": "SuspendedEV", "SuspendedEVSE": "SuspendedEVSE"}
# neutral stop reason -> (triggerReason, stoppedReason)
_STOP = {
    "Local": ("StopAuthorized", "Local"),
    "Remote": ("RemoteStop", "Remote"),
    "EVDisconnected": ("EVDeparted", "EVDisconnected"),
    "DeAuthorized": ("Deauthorized", "DeAuthorized"),
    "HardReset": ("ResetCommand", "ImmediateReset"),
    "SoftReset": ("ResetCommand", "ImmediateReset"),
    "ImmediateReset": ("ResetCommand", "ImmediateReset"),
    "Reboot": ("ResetCommand", "Reboot"),
    "EVFull": ("ChargingStateChanged", "StoppedByEV"),
    "UnlockCommand": ("UnlockCommand", "Other"),
}
_FAULT_STOP = {
    "GroundFailure": "GroundFault",
    "OverCurrentFailure": "OvercurrentFault",
    "OverVoltage": "PowerQuality",
}
# 1.6-style fault code -> device-model (component, variable) reported in NotifyEvent
_FAULT_COMPONENT = {
    "ConnectorLockFailure": ("ConnectorPlugRetentionLock", "Problem"),
    "EVCommunicationError": ("ConnectedEV", "Problem"),
    "GroundFailure": ("RCD", "Tripped"),
    "HighTemperature": ("TemperatureSensor", "Problem"),
    "OverCurrentFailure": ("OverCurrentProtection", "Operated"),
    "PowerMeterFailure": ("PowerMeter", "Problem"),
    "PowerSwitchFailure": ("PowerContactor", "Problem"),
    "ReaderFailure": ("TokenReader", "Problem"),
    "InternalError": ("Controller", "Problem"),
    "OverVoltage": ("PowerModule", "Fault"),
    "UnderVoltage": ("PowerModule", "Fault"),
    "SlotLock": ("SlotLock", "Problem"),  # swap-station slot faults (firmware_stubs.swap_station)
    "SlotActuator": ("SlotActuator", "Problem"),
}
_DATA_TYPE = {"int": "integer", "bool": "boolean", "csv": "MemberList", "str": "string"}
_TRIGGERS = {
    "BootNotification",
    "LogStatusNotification",
    "FirmwareStatusNotification",
    "Heartbeat",
    "MeterValues",
    "SignChargingStationCertificate",
    "StatusNotification",
    "TransactionEvent",
}
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
        return _CONNECTOR_STATUS.get(c.status, "Occupied")
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


def _token(tx: Transaction) -> Payload:
    """The transaction's IdToken; an empty id tag is a session the station started on its own
    (a swap station charging a docked pack), which needs no authorization."""
    if not tx.id_tag:
        return {"idToken": "", "type": "NoAuthorization"}
    token_type = "Central" if tx.remote_start_id is not None else "ISO14443"
    return {"idToken": tx.id_tag[:36], "type": token_type}


def _meter_value(samples: list[Sample], context: str) -> Payload:
    values = []
    for measurand, value, unit, phase in samples:
        entry: dict[str, Any] = {"value": value, "context": context, "measurand": measurand}
        entry["unitOfMeasure"] = {"unit": unit}
        if phase:
            entry["phase"] = phase
        if measurand == "SoC":
            entry["location"] = "EV"
        values.append(entry)
    return {"timestamp": iso(utc_now()), "sampledValue": values}


class V201(Dialect):
    version = "2.0.1"
    subprotocol = "ocpp2.0.1"
    config_defs = {
        **COMMON_KEYS,
        "MessageTimeout": KeyDef("30", kind="int"),
        "NetworkConfigurationPriority": KeyDef("0", kind="csv"),
        "OfflineThreshold": KeyDef("60", kind="int"),
        "TxEndedInterval": KeyDef("0", kind="int"),
        "TxStartPoint": KeyDef("PowerPathClosed", readonly=True, kind="csv"),
        "TxStopPoint": KeyDef("PowerPathClosed", readonly=True, kind="csv"),
        "ItemsPerMessage": KeyDef("50", readonly=True, kind="int"),
        "BytesPerMessage": KeyDef("65000", readonly=True, kind="int"),
        "SecurityProfile": KeyDef("1", readonly=True, kind="int"),
        "OrganizationName": KeyDef("ChargeOps"),
        "TimeSource": KeyDef("Heartbeat", kind="csv"),
    }
    profile_purposes = {
        "ChargingStationMaxProfile": "max",
        "TxDefaultProfile": "txdefault",
        "TxProfile": "tx",
        "ChargingStationExternalConstraints": "external",
    }

    # ------------------------------------------------------------------ charger -> CSMS
    def boot_request(self, cp: SimulatedCharger, reason: str) -> tuple[str, Payload]:
        return "BootNotification", {
            "reason": reason,
            "chargingStation": {
                "model": cp.model[:20],
                "vendorName": cp.vendor[:50],
                "serialNumber": cp.serial[:25],
                "firmwareVersion": cp.firmware_version[:50],
            },
        }

    def after_boot(self, cp: SimulatedCharger) -> None:
        for c in cp.connectors[1:]:
            self.status_changed(cp, c, "")

    def status_changed(self, cp: SimulatedCharger, c: Connector, old: str) -> None:
        if c.index == 0:
            return
        new_status = _CONNECTOR_STATUS.get(c.status, "Occupied")
        if not old or _CONNECTOR_STATUS.get(old, "Occupied") != new_status:
            payload = {
                "timestamp": iso(utc_now()),
                "connectorStatus": new_status,
                "evseId": c.index,
                "connectorId": 1,
            }
            cp.emit("StatusNotification", payload)
        tx = c.tx
        state = _CHARGING_STATE.get(c.status)
        if tx is not None and state is not None and tx.charging_state != state:
            tx.charging_state = state
            self._tx_event(cp, c, tx, "Updated", "ChargingStateChanged")

    def authorize(self, cp: SimulatedCharger, c: Connector, tag: str) -> None:
        cp.emit(
            "Authorize",
            {"idToken": {"idToken": tag[:36], "type": "ISO14443"}},
            on_result=lambda r: cp.authorized(c, tag, r["idTokenInfo"]["status"]),
        )

    def _tx_event(
        self,
        cp: SimulatedCharger,
        c: Connector,
        tx: Transaction,
        event_type: str,
        trigger: str,
        *,
        meter: Payload | None = None,
        stopped_reason: str | None = None,
        on_result: Callable[[Payload], None] | None = None,
    ) -> None:
        info: Payload = {"transactionId": tx.local_id}
        if tx.charging_state:
            info["chargingState"] = tx.charging_state
        if stopped_reason:
            info["stoppedReason"] = stopped_reason
        if event_type == "Started" and tx.remote_start_id is not None:
            info["remoteStartId"] = tx.remote_start_id
        payload: Payload = {
            "eventType": event_type,
            "timestamp": iso(utc_now()),
            "triggerReason": trigger,
            "seqNo": tx.next_seq(),
            "transactionInfo": info,
            "evse": {"id": c.index, "connectorId": 1},
        }
        if not cp.accepted:
            payload["offline"] = True
        if event_type != "Updated":
            payload["idToken"] = _token(tx)
        if event_type == "Started" and tx.reservation_id is not None:
            payload["reservationId"] = tx.reservation_id
        if meter is not None:
            payload["meterValue"] = [meter]
        cp.emit(
            "TransactionEvent",
            payload,
            tx=tx,
            transactional=True,
            droppable=trigger == "MeterValuePeriodic",
            on_result=on_result,
        )

    def tx_started(self, cp: SimulatedCharger, c: Connector, tx: Transaction) -> None:
        tx.charging_state = _CHARGING_STATE.get(cp.derive_status(c), "EVConnected")
        begin = _meter_value(cp.sample(c, cp.config.get_list("MeterValuesSampledData")), "Transaction.Begin")

        def confirmed(result: Payload) -> None:
            cp.tx_confirmed(c, tx, (result.get("idTokenInfo") or {}).get("status"))

        if tx.remote_start_id is not None:
            trigger = "RemoteStart"
        else:
            trigger = "Authorized" if tx.id_tag else "CablePluggedIn"
        self._tx_event(cp, c, tx, "Started", trigger, meter=begin, on_result=confirmed)

    def tx_periodic(self, cp: SimulatedCharger, c: Connector, tx: Transaction) -> None:
        meter = _meter_value(cp.sample(c, cp.config.get_list("MeterValuesSampledData")), "Sample.Periodic")
        self._tx_event(cp, c, tx, "Updated", "MeterValuePeriodic", meter=meter)

    def tx_ended(self, cp: SimulatedCharger, c: Connector, tx: Transaction, reason: str) -> None:
        if reason == "Fault":
            trigger, stopped = "AbnormalCondition", _FAULT_STOP.get(c.fault or "", "Other")
        else:
            trigger, stopped = _STOP.get(reason, ("AbnormalCondition", "Other"))
        tx.charging_state = "EVConnected" if c.ev is not None else "Idle"
        end = _meter_value(cp.sample(c, cp.config.get_list("StopTxnSampledData")), "Transaction.End")
        self._tx_event(cp, c, tx, "Ended", trigger, meter=end, stopped_reason=stopped)

    def meter_values(self, cp: SimulatedCharger, c: Connector, context: str) -> None:
        samples = cp.sample(c, cp.config.get_list("MeterValuesSampledData"))
        payload = {"evseId": c.index, "meterValue": [_meter_value(samples, context)]}
        cp.emit("MeterValues", payload, triggered=True)

    def fault_changed(self, cp: SimulatedCharger, c: Connector, raised: bool) -> None:
        code = c.fault or "OtherError"
        name, variable = _FAULT_COMPONENT.get(
            code, ("ChargingStation" if c.index == 0 else "Connector", "Problem")
        )
        component: Payload = {"name": name}
        if c.index:
            component["evse"] = {"id": c.index, "connectorId": 1}
        event: Payload = {
            "eventId": cp.device.next_event_id(),
            "timestamp": iso(utc_now()),
            "trigger": "Alerting",
            "actualValue": "true" if raised else "false",
            "techInfo": code,
            "cleared": not raised,
            "eventNotificationType": "HardWiredNotification",
            "component": component,
            "variable": {"name": variable},
        }
        if c.vendor_fault:
            event["techCode"] = c.vendor_fault[:50]
        payload = {"generatedAt": iso(utc_now()), "seqNo": 0, "tbc": False, "eventData": [event]}
        cp.emit("NotifyEvent", payload)

    def firmware_status(
        self, cp: SimulatedCharger, status: str, request_id: int | None, signed: bool
    ) -> None:
        payload: Payload = {"status": status}
        if request_id is not None and status != "Idle":
            payload["requestId"] = request_id
        cp.emit("FirmwareStatusNotification", payload, triggered=True)

    def upload_status(self, cp: SimulatedCharger, kind: str, status: str, request_id: int | None) -> None:
        payload: Payload = {"status": "UploadFailure" if status == "UploadFailed" else status}
        if request_id is not None and status != "Idle":
            payload["requestId"] = request_id
        cp.emit("LogStatusNotification", payload, triggered=True)

    def reservation_ended(self, cp: SimulatedCharger, c: Connector, res: Reservation, why: str) -> None:
        cp.emit("ReservationStatusUpdate", {"reservationId": res.id, "reservationUpdateStatus": why})

    def finalize(self, cp: SimulatedCharger, item: OutboundCall) -> Payload:
        return item.payload

    # ------------------------------------------------------------------ device model
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

    # ------------------------------------------------------------------ monitoring
    def on_SetVariableMonitoring(self, cp: SimulatedCharger, p: Payload) -> Payload:
        monitors = cp.device.monitors
        results = []
        for item in p["setMonitoringData"]:
            status, _, _ = self._lookup(cp, item["component"], item["variable"])
            result: Payload = {
                "status": status,
                "type": item["type"],
                "severity": item["severity"],
                "component": item["component"],
                "variable": item["variable"],
            }
            if status == "Accepted":
                monitor_id = item.get("id") or max(monitors, default=0) + 1
                monitors[monitor_id] = item
                result["id"] = monitor_id
            results.append(result)
        return {"setMonitoringResult": results}

    def on_ClearVariableMonitoring(self, cp: SimulatedCharger, p: Payload) -> Payload:
        monitors = cp.device.monitors
        results = [{"id": i, "status": "Accepted" if monitors.pop(i, None) else "NotFound"} for i in p["id"]]
        return {"clearMonitoringResult": results}

    def on_SetMonitoringBase(self, cp: SimulatedCharger, p: Payload) -> Payload:
        cp.device.monitoring_base = p["monitoringBase"]
        return {"status": "Accepted"}

    def on_SetMonitoringLevel(self, cp: SimulatedCharger, p: Payload) -> Payload:
        cp.device.monitoring_level = p["severity"]
        return {"status": "Accepted"}

    def on_GetMonitoringReport(self, cp: SimulatedCharger, p: Payload) -> Payload:
        monitors = cp.device.monitors
        if not monitors:
            return {"status": "EmptyResultSet"}
        report = [
            {
                "component": m["component"],
                "variable": m["variable"],
                "variableMonitoring": [
                    {
                        "id": i,
                        "transaction": m.get("transaction", False),
                        "value": m["value"],
                        "type": m["type"],
                        "severity": m["severity"],
                    }
                ],
            }
            for i, m in monitors.items()
        ]
        payload = {"requestId": p["requestId"], "seqNo": 0, "generatedAt": iso(utc_now()), "tbc": False}
        cp.emit("NotifyMonitoringReport", {**payload, "monitor": report}, triggered=True)
        return {"status": "Accepted"}

    # ------------------------------------------------------------------ transactions & control
    def on_RequestStartTransaction(self, cp: SimulatedCharger, p: Payload) -> Payload:
        profile = None
        if "chargingProfile" in p:
            raw = p["chargingProfile"]
            if raw["chargingProfilePurpose"] != "TxProfile":
                return {"status": "Rejected"}
            profile = self.parse_profile(raw, p.get("evseId", 0), "id", raw["chargingSchedule"][0])
        used = cp.remote_start(
            p.get("evseId"), p["idToken"]["idToken"], remote_start_id=p["remoteStartId"], profile=profile
        )
        if used is None:
            return {"status": "Rejected"}
        result: Payload = {"status": "Accepted"}
        if used.tx is not None:
            result["transactionId"] = used.tx.local_id
        return result

    def on_RequestStopTransaction(self, cp: SimulatedCharger, p: Payload) -> Payload:
        return {"status": "Accepted" if cp.stop_transaction(p["transactionId"], "Remote") else "Rejected"}

    def on_GetTransactionStatus(self, cp: SimulatedCharger, p: Payload) -> Payload:
        tx_id = p.get("transactionId")
        pending = cp.queued > 0
        if tx_id is None:
            return {"messagesInQueue": pending}
        ongoing = any(t.matches(tx_id) for t in cp.transactions)
        return {"messagesInQueue": pending, "ongoingIndicator": ongoing}

    def on_CostUpdated(self, cp: SimulatedCharger, p: Payload) -> Payload:
        for tx in cp.transactions:
            if tx.matches(p["transactionId"]):
                tx.cost = float(p["totalCost"])
        return {}

    def on_Reset(self, cp: SimulatedCharger, p: Payload) -> Payload:
        if "evseId" in p:
            return {"status": "Rejected"}
        if p["type"] == "Immediate":
            cp.request_reboot("RemoteReset", hard=True, stop_reason="ImmediateReset")
            return {"status": "Accepted"}
        return {"status": "Accepted" if cp.reboot_when_idle("RemoteReset") else "Scheduled"}

    def on_UnlockConnector(self, cp: SimulatedCharger, p: Payload) -> Payload:
        if p["connectorId"] != 1:
            return {"status": "UnknownConnector"}
        result = cp.unlock(p["evseId"], stop_running=False)
        names = {"Ongoing": "OngoingAuthorizedTransaction", "Unknown": "UnknownConnector"}
        return {"status": names.get(result, result)}

    def on_ChangeAvailability(self, cp: SimulatedCharger, p: Payload) -> Payload:
        evse = (p.get("evse") or {}).get("id", 0)
        return {"status": cp.change_availability(evse, p["operationalStatus"] == "Operative")}

    def on_TriggerMessage(self, cp: SimulatedCharger, p: Payload) -> Payload:
        what = p["requestedMessage"]
        if what not in _TRIGGERS:
            return {"status": "NotImplemented"}
        evse = (p.get("evse") or {}).get("id")
        if evse is not None and not 1 <= evse < len(cp.connectors):
            return {"status": "Rejected"}
        targets = cp.connectors[1:] if evse is None else [cp.connectors[evse]]
        if what == "BootNotification":
            if cp.accepted:
                return {"status": "Rejected"}
            cp.trigger_boot()
        elif what == "Heartbeat":
            cp.emit("Heartbeat", {}, triggered=True)
        elif what == "StatusNotification":
            for c in targets:
                self.status_changed(cp, c, "")
        elif what == "MeterValues":
            for c in targets:
                self.meter_values(cp, c, "Trigger")
        elif what == "TransactionEvent":
            for c in targets:
                if c.tx is not None:
                    meter = _meter_value(
                        cp.sample(c, cp.config.get_list("MeterValuesSampledData")), "Trigger"
                    )
                    self._tx_event(cp, c, c.tx, "Updated", "Trigger", meter=meter)
        elif what == "FirmwareStatusNotification":
            status, request_id, _ = cp.firmware_state()
            self.firmware_status(cp, status, request_id, False)
        elif what == "LogStatusNotification":
            self.upload_status(cp, "log", *cp.upload_state("log"))
        else:
            cp.emit(
                "SignCertificate",
                {"csr": cp.csr(), "certificateType": "ChargingStationCertificate"},
                triggered=True,
            )
        return {"status": "Accepted"}

    def on_UpdateFirmware(self, cp: SimulatedCharger, p: Payload) -> Payload:
        firmware = p["firmware"]
        cp.start_firmware_update(
            firmware["location"], parse_iso(firmware["retrieveDateTime"]), p["requestId"]
        )
        return {"status": "Accepted"}

    def on_PublishFirmware(self, cp: SimulatedCharger, p: Payload) -> Payload:
        """Only local controllers publish firmware; a charging station declines."""
        return {"status": "Rejected"}

    def on_UnpublishFirmware(self, cp: SimulatedCharger, p: Payload) -> Payload:
        return {"status": "NoFirmware"}

    # ------------------------------------------------------------------ smart charging
    def on_SetChargingProfile(self, cp: SimulatedCharger, p: Payload) -> Payload:
        raw = p["chargingProfile"]
        profile = self.parse_profile(raw, p["evseId"], "id", raw["chargingSchedule"][0])
        return {"status": "Accepted" if cp.set_profile(profile) else "Rejected"}

    def on_ClearChargingProfile(self, cp: SimulatedCharger, p: Payload) -> Payload:
        criteria = p.get("chargingProfileCriteria") or {}
        removed = cp.clear_profiles(
            p.get("chargingProfileId"),
            criteria.get("evseId"),
            self.neutral_purpose(criteria.get("chargingProfilePurpose")),
            criteria.get("stackLevel"),
        )
        return {"status": "Accepted" if removed else "Unknown"}

    def on_GetChargingProfiles(self, cp: SimulatedCharger, p: Payload) -> Payload:
        criteria = p["chargingProfile"]
        purpose = self.neutral_purpose(criteria.get("chargingProfilePurpose"))
        ids = criteria.get("chargingProfileId")
        found = [
            prof
            for prof in cp.charging_profiles
            if ("evseId" not in p or prof.connector == p["evseId"])
            and (purpose is None or prof.purpose == purpose)
            and (criteria.get("stackLevel") is None or prof.stack_level == criteria["stackLevel"])
            and (not ids or prof.id in ids)
        ]
        if not found:
            return {"status": "NoProfiles"}
        evses = sorted({prof.connector for prof in found})
        for n, evse in enumerate(evses):
            payload = {
                "requestId": p["requestId"],
                "chargingLimitSource": "CSO",
                "evseId": evse,
                "tbc": n < len(evses) - 1,
                "chargingProfile": [prof.raw for prof in found if prof.connector == evse],
            }
            cp.emit("ReportChargingProfiles", payload, triggered=True)
        return {"status": "Accepted"}

    def on_GetCompositeSchedule(self, cp: SimulatedCharger, p: Payload) -> Payload:
        evse = p["evseId"]
        if not 0 <= evse < len(cp.connectors):
            return {"status": "Rejected"}
        unit = p.get("chargingRateUnit", "W")
        start, periods = cp.composite_schedule(evse, p["duration"], unit)
        return {
            "status": "Accepted",
            "schedule": {
                "evseId": evse,
                "duration": p["duration"],
                "scheduleStart": iso(start),
                "chargingRateUnit": unit,
                "chargingSchedulePeriod": schedule_periods(periods),
            },
        }

    # ------------------------------------------------------------------ authorization & reservations
    def on_SendLocalList(self, cp: SimulatedCharger, p: Payload) -> Payload:
        entries = [
            (e["idToken"]["idToken"], e["idTokenInfo"]["status"] if "idTokenInfo" in e else None)
            for e in p.get("localAuthorizationList", ())
        ]
        return {"status": cp.send_local_list(p["versionNumber"], p["updateType"] == "Full", entries)}

    def on_GetLocalListVersion(self, cp: SimulatedCharger, p: Payload) -> Payload:
        return {"versionNumber": cp.local_list_version}

    def on_ReserveNow(self, cp: SimulatedCharger, p: Payload) -> Payload:
        expiry = parse_iso(p["expiryDateTime"]) or utc_now()
        return {"status": cp.reserve(p.get("evseId"), p["id"], p["idToken"]["idToken"], expiry)}

    def on_CustomerInformation(self, cp: SimulatedCharger, p: Payload) -> Payload:
        token = (p.get("idToken") or {}).get("idToken")
        if token and p["clear"]:
            cp.forget_id_tag(token)
        if p["report"]:
            known = token is not None and (token in cp.local_list)
            data = (
                f"idToken {token}: {'in local list' if known else 'no stored data'}" if token else "no data"
            )
            payload = {
                "data": data[:512],
                "tbc": False,
                "seqNo": 0,
                "generatedAt": iso(utc_now()),
                "requestId": p["requestId"],
            }
            cp.emit("NotifyCustomerInformation", payload, triggered=True)
        return {"status": "Accepted"}

    # ------------------------------------------------ display messages, network, certificates
    def on_SetDisplayMessage(self, cp: SimulatedCharger, p: Payload) -> Payload:
        cp.device.display[p["message"]["id"]] = p["message"]
        return {"status": "Accepted"}

    def on_GetDisplayMessages(self, cp: SimulatedCharger, p: Payload) -> Payload:
        messages = cp.device.display
        found = [
            m
            for i, m in messages.items()
            if (not p.get("id") or i in p["id"])
            and ("priority" not in p or m["priority"] == p["priority"])
            and ("state" not in p or m.get("state") == p["state"])
        ]
        if not found:
            return {"status": "Unknown"}
        cp.emit("NotifyDisplayMessages", {"requestId": p["requestId"], "messageInfo": found}, triggered=True)
        return {"status": "Accepted"}

    def on_ClearDisplayMessage(self, cp: SimulatedCharger, p: Payload) -> Payload:
        messages = cp.device.display
        return {"status": "Accepted" if messages.pop(p["id"], None) else "Unknown"}

    def on_SetNetworkProfile(self, cp: SimulatedCharger, p: Payload) -> Payload:
        cp.device.network_profiles[p["configurationSlot"]] = p["connectionData"]
        return {"status": "Accepted"}

    def on_GetInstalledCertificateIds(self, cp: SimulatedCharger, p: Payload) -> Payload:
        found = cp.certificates(p.get("certificateType"))
        if not found:
            return {"status": "NotFound"}
        chain = [{"certificateType": kind, "certificateHashData": h} for kind, h in found]
        return {"status": "Accepted", "certificateHashDataChain": chain}
