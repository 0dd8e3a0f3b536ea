"""OCPP 2.0.1 messages the charger sends: TransactionEvent, StatusNotification, NotifyEvent faults, and the
status notifications of background jobs. Each connector N of the core is EVSE N with a single connector 1.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from firmware_stubs.dialects.base import Dialect, Payload
from firmware_stubs.model import iso, utc_now

if TYPE_CHECKING:
    from firmware_stubs.charger import (
        Connector,
        OutboundCall,
        Reservation,
        Sample,
        SimulatedCharger,
        Transaction,
    )

CONNECTOR_STATUS = {
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


def _token(tx: Transaction) -> Payload:
    """The transaction's IdToken; an empty id tag is a session the station started on its own
    (a swap station charging a docked pack), which needs no authorization."""
    if not tx.id_tag:
        return {"idToken": "", "type": "NoAuthorization"}
    token_type = "Central" if tx.remote_start_id is not None else "ISO14443"
    return {"idToken": tx.id_tag[:36], "type": token_type}


def meter_value(samples: list[Sample], context: str) -> Payload:
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


class V201Messages(Dialect):
    """Neutral charger events worded as OCPP 2.0.1 CALLs (the charger -> CSMS direction)."""

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
        new_status = CONNECTOR_STATUS.get(c.status, "Occupied")
        if not old or CONNECTOR_STATUS.get(old, "Occupied") != new_status:
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
        begin = meter_value(cp.sample(c, cp.config.get_list("MeterValuesSampledData")), "Transaction.Begin")

        def confirmed(result: Payload) -> None:
            cp.tx_confirmed(c, tx, (result.get("idTokenInfo") or {}).get("status"))

        if tx.remote_start_id is not None:
            trigger = "RemoteStart"
        else:
            trigger = "Authorized" if tx.id_tag else "CablePluggedIn"
        self._tx_event(cp, c, tx, "Started", trigger, meter=begin, on_result=confirmed)

    def tx_periodic(self, cp: SimulatedCharger, c: Connector, tx: Transaction) -> None:
        meter = meter_value(cp.sample(c, cp.config.get_list("MeterValuesSampledData")), "Sample.Periodic")
        self._tx_event(cp, c, tx, "Updated", "MeterValuePeriodic", meter=meter)

    def tx_ended(self, cp: SimulatedCharger, c: Connector, tx: Transaction, reason: str) -> None:
        if reason == "Fault":
            trigger, stopped = "AbnormalCondition", _FAULT_STOP.get(c.fault or "", "Other")
        else:
            trigger, stopped = _STOP.get(reason, ("AbnormalCondition", "Other"))
        tx.charging_state = "EVConnected" if c.ev is not None else "Idle"
        end = meter_value(cp.sample(c, cp.config.get_list("StopTxnSampledData")), "Transaction.End")
        self._tx_event(cp, c, tx, "Ended", trigger, meter=end, stopped_reason=stopped)

    def meter_values(self, cp: SimulatedCharger, c: Connector, context: str) -> None:
        samples = cp.sample(c, cp.config.get_list("MeterValuesSampledData"))
        payload = {"evseId": c.index, "meterValue": [meter_value(samples, context)]}
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
