"""OCPP 1.6J dialect (with the 1.6 security extension's CSMS-initiated actions)."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from firmware_stubs.dialects import pnc16
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

_STOP_REASONS = {"EVFull": "Other", "Fault": "Other", "ImmediateReset": "HardReset"}
_CERT_TYPES = {"CentralSystemRootCertificate", "ManufacturerRootCertificate"}
_TRIGGERS = (
    "BootNotification",
    "DiagnosticsStatusNotification",
    "FirmwareStatusNotification",
    "Heartbeat",
    "MeterValues",
    "StatusNotification",
    "LogStatusNotification",
    "SignChargePointCertificate",
)


def _meter_value(samples: list[Sample], context: str, at: datetime | None = None) -> Payload:
    values = []
    for measurand, value, unit, phase in samples:
        entry: dict[str, Any] = {
            "value": f"{value:g}" if unit != "Wh" else f"{value:.1f}",
            "context": context,
            "format": "Raw",
            "measurand": measurand,
            "location": "EV" if measurand == "SoC" else "Outlet",
            "unit": unit,
        }
        if phase:
            entry["phase"] = phase
        values.append(entry)
    return {"timestamp": iso(at or utc_now()), "sampledValue": values}


class V16(Dialect):
    version = "1.6"
    subprotocol = "ocpp1.6"
    config_defs = {
        **COMMON_KEYS,
        "SupportedFeatureProfiles": KeyDef(
            "Core,FirmwareManagement,LocalAuthListManagement,Reservation,SmartCharging,RemoteTrigger",
            readonly=True,
            kind="csv",
        ),
        "GetConfigurationMaxKeys": KeyDef("100", readonly=True, kind="int"),
        "ReserveConnectorZeroSupported": KeyDef("false", readonly=True, kind="bool"),
        "UnlockConnectorOnEVSideDisconnect": KeyDef("true", kind="bool"),
        "MeterValuesSampledDataMaxLength": KeyDef("10", readonly=True, kind="int"),
        "StopTxnAlignedData": KeyDef("", kind="csv"),
        "AllowOfflineTxForUnknownId": KeyDef("false", kind="bool"),
        "SecurityProfile": KeyDef("0", kind="int"),
        "CpoName": KeyDef("chargeops"),  # security whitepaper: the O of its CSRs (the built-in CA's default)
        pnc16.ENABLED_KEY: KeyDef("false", kind="bool"),  # ISO 15118 Plug & Charge over DataTransfer
    }
    error_names = {
        "OccurrenceConstraintViolation": "OccurenceConstraintViolation",
        "FormatViolation": "FormationViolation",
        "RpcFrameworkError": "ProtocolError",
        "MessageTypeNotSupported": "ProtocolError",
    }
    profile_purposes = {"ChargePointMaxProfile": "max", "TxDefaultProfile": "txdefault", "TxProfile": "tx"}

    # ------------------------------------------------------------------ charger -> CSMS
    def boot_request(self, cp: SimulatedCharger, reason: str) -> tuple[str, Payload]:
        return "BootNotification", {
            "chargePointVendor": cp.vendor[:20],
            "chargePointModel": cp.model[:20],
            "chargePointSerialNumber": cp.serial[:25],
            "firmwareVersion": cp.firmware_version[:50],
        }

    def after_boot(self, cp: SimulatedCharger) -> None:
        for c in cp.connectors:
            self.status_changed(cp, c, "")

    def status_changed(self, cp: SimulatedCharger, c: Connector, old: str) -> None:
        payload: Payload = {
            "connectorId": c.index,
            "errorCode": c.fault or "NoError",
            "status": c.status,
            "timestamp": iso(utc_now()),
        }
        if c.fault and c.vendor_fault:
            payload["vendorErrorCode"] = c.vendor_fault[:50]
        cp.emit("StatusNotification", payload)

    def authorize(self, cp: SimulatedCharger, c: Connector, tag: str) -> None:
        cp.emit(
            "Authorize",
            {"idTag": tag[:20]},
            on_result=lambda r: cp.authorized(c, tag, r["idTagInfo"]["status"]),
        )

    def tx_started(self, cp: SimulatedCharger, c: Connector, tx: Transaction) -> None:
        payload: Payload = {
            "connectorId": c.index,
            "idTag": tx.id_tag[:20],
            "meterStart": int(tx.meter_start),
            "timestamp": iso(tx.started),
        }
        if tx.reservation_id is not None:
            payload["reservationId"] = tx.reservation_id

        def started(result: Payload) -> None:
            tx.server_id = int(result["transactionId"])
            cp.tx_confirmed(c, tx, result["idTagInfo"]["status"])

        cp.emit("StartTransaction", payload, tx=tx, transactional=True, on_result=started)

    def tx_periodic(self, cp: SimulatedCharger, c: Connector, tx: Transaction) -> None:
        samples = cp.sample(c, cp.config.get_list("MeterValuesSampledData"))
        payload = {"connectorId": c.index, "meterValue": [_meter_value(samples, "Sample.Periodic")]}
        cp.emit("MeterValues", payload, tx=tx, transactional=True, droppable=True)

    def tx_ended(self, cp: SimulatedCharger, c: Connector, tx: Transaction, reason: str) -> None:
        begin: list[Sample] = [("Energy.Active.Import.Register", round(tx.meter_start, 1), "Wh", None)]
        end = cp.sample(c, cp.config.get_list("StopTxnSampledData"))
        now = utc_now()  # the stop and its End reading are one moment: stamped apart, a millisecond could
        # tick between them and make the whole-Wh meterStop look older than the End reading it rounds
        payload = {
            "idTag": tx.id_tag[:20],
            "meterStop": int(c.meter_wh),
            "timestamp": iso(now),
            "reason": _STOP_REASONS.get(reason, reason),
            "transactionData": [
                _meter_value(begin, "Transaction.Begin", tx.started),  # the register as it read then
                _meter_value(end, "Transaction.End", now),
            ],
        }
        cp.emit("StopTransaction", payload, tx=tx, transactional=True)

    def finalize(self, cp: SimulatedCharger, item: OutboundCall) -> Payload:
        """The CSMS issues 1.6 transaction ids, so queued follow-ups learn theirs only at send time."""
        if item.tx is not None and item.action in ("MeterValues", "StopTransaction"):
            return {**item.payload, "transactionId": item.tx.server_id or 0}
        return item.payload

    def meter_values(self, cp: SimulatedCharger, c: Connector, context: str) -> None:
        samples = cp.sample(c, cp.config.get_list("MeterValuesSampledData"))
        payload: Payload = {"connectorId": c.index, "meterValue": [_meter_value(samples, context)]}
        if c.tx is not None and c.tx.server_id is not None:
            payload["transactionId"] = c.tx.server_id
        cp.emit("MeterValues", payload, triggered=True)

    def fault_changed(self, cp: SimulatedCharger, c: Connector, raised: bool) -> None:
        """1.6 reports faults through StatusNotification errorCode, sent by the status change."""

    def firmware_status(
        self, cp: SimulatedCharger, status: str, request_id: int | None, signed: bool
    ) -> None:
        if signed:
            payload: Payload = {"status": status}
            if request_id is not None and status != "Idle":
                payload["requestId"] = request_id
            cp.emit("SignedFirmwareStatusNotification", payload, triggered=True)
        else:
            cp.emit("FirmwareStatusNotification", {"status": status}, triggered=True)

    def upload_status(self, cp: SimulatedCharger, kind: str, status: str, request_id: int | None) -> None:
        if kind == "diagnostics":
            cp.emit("DiagnosticsStatusNotification", {"status": status}, triggered=True)
            return
        payload: Payload = {"status": "UploadFailure" if status == "UploadFailed" else status}
        if request_id is not None and status != "Idle":
            payload["requestId"] = request_id
        cp.emit("LogStatusNotification", payload, triggered=True)

    def reservation_ended(self, cp: SimulatedCharger, c: Connector, res: Reservation, why: str) -> None:
        """1.6 has no reservation status message; the StatusNotification (Available) says it all."""

    # ------------------------------------------------------------------ CSMS -> charger
    def on_RemoteStartTransaction(self, cp: SimulatedCharger, p: Payload) -> Payload:
        profile = None
        if "chargingProfile" in p:
            raw = p["chargingProfile"]
            if raw["chargingProfilePurpose"] != "TxProfile":
                return {"status": "Rejected"}
            profile = self.parse_profile(
                raw, p.get("connectorId", 0), "chargingProfileId", raw["chargingSchedule"]
            )
        used = cp.remote_start(p.get("connectorId"), p["idTag"], profile=profile)
        return {"status": "Accepted" if used else "Rejected"}

    def on_RemoteStopTransaction(self, cp: SimulatedCharger, p: Payload) -> Payload:
        return {"status": "Accepted" if cp.stop_transaction(p["transactionId"], "Remote") else "Rejected"}

    def on_Reset(self, cp: SimulatedCharger, p: Payload) -> Payload:
        hard = p["type"] == "Hard"
        cp.request_reboot("RemoteReset", hard=hard, stop_reason="HardReset" if hard else "SoftReset")
        return {"status": "Accepted"}

    def on_UnlockConnector(self, cp: SimulatedCharger, p: Payload) -> Payload:
        result = cp.unlock(p["connectorId"], stop_running=True)
        return {"status": "NotSupported" if result == "Unknown" else result}

    def on_ChangeAvailability(self, cp: SimulatedCharger, p: Payload) -> Payload:
        return {"status": cp.change_availability(p["connectorId"], p["type"] == "Operative")}

    def on_ChangeConfiguration(self, cp: SimulatedCharger, p: Payload) -> Payload:
        status = cp.config.set(p["key"], p["value"])
        if status == "Accepted":
            cp.config_changed(p["key"])
        return {"status": status}

    def on_GetConfiguration(self, cp: SimulatedCharger, p: Payload) -> Payload:
        wanted = p.get("key") or None
        known = []
        for key, value, readonly in cp.config.items():
            if wanted is None or key in wanted:
                known.append({"key": key, "readonly": readonly, "value": value[:500]})
        result: Payload = {"configurationKey": known}
        unknown = [k for k in wanted or () if k not in cp.config]
        if unknown:
            result["unknownKey"] = unknown
        return result

    def _trigger(self, cp: SimulatedCharger, what: str, connector: int | None) -> bool:
        if connector is not None and not 0 <= connector < len(cp.connectors):
            return False
        targets = cp.connectors if connector is None else [cp.connectors[connector]]
        if what == "BootNotification":
            cp.trigger_boot()
        elif what == "Heartbeat":
            cp.emit("Heartbeat", {}, triggered=True)
        elif what == "StatusNotification":
            for c in targets:
                self.status_changed(cp, c, "")
        elif what == "MeterValues":
            for c in targets[1:] if connector is None else targets:
                self.meter_values(cp, c, "Trigger")
        elif what == "FirmwareStatusNotification":
            status, request_id, signed = cp.firmware_state()
            self.firmware_status(cp, status, request_id, signed)
        elif what in ("DiagnosticsStatusNotification", "LogStatusNotification"):
            kind = "diagnostics" if what.startswith("Diagnostics") else "log"
            self.upload_status(cp, kind, *cp.upload_state(kind))
        elif what == "SignChargePointCertificate":
            cp.emit("SignCertificate", {"csr": cp.csr()}, triggered=True)
        else:
            return False
        return True

    def on_TriggerMessage(self, cp: SimulatedCharger, p: Payload) -> Payload:
        if p["requestedMessage"] not in _TRIGGERS[:6]:
            return {"status": "NotImplemented"}
        ok = self._trigger(cp, p["requestedMessage"], p.get("connectorId"))
        return {"status": "Accepted" if ok else "Rejected"}

    def on_ExtendedTriggerMessage(self, cp: SimulatedCharger, p: Payload) -> Payload:
        what = p["requestedMessage"]
        if what not in _TRIGGERS:
            return {"status": "NotImplemented"}
        return {"status": "Accepted" if self._trigger(cp, what, p.get("connectorId")) else "Rejected"}

    def on_DataTransfer(self, cp: SimulatedCharger, p: Payload) -> Payload:
        if p["vendorId"] == pnc16.VENDOR_ID:
            return pnc16.on_data_transfer(cp, p)
        return super().on_DataTransfer(cp, p)

    def on_UpdateFirmware(self, cp: SimulatedCharger, p: Payload) -> Payload:
        cp.start_firmware_update(p["location"], parse_iso(p["retrieveDate"]), None)
        return {}

    def on_SignedUpdateFirmware(self, cp: SimulatedCharger, p: Payload) -> Payload:
        firmware = p["firmware"]
        cp.start_firmware_update(
            firmware["location"], parse_iso(firmware["retrieveDateTime"]), p["requestId"], signed=True
        )
        return {"status": "Accepted"}

    def on_GetDiagnostics(self, cp: SimulatedCharger, p: Payload) -> Payload:
        return {"fileName": cp.start_upload("diagnostics", p["location"], None)[:255]}

    def on_SetChargingProfile(self, cp: SimulatedCharger, p: Payload) -> Payload:
        raw = p["csChargingProfiles"]
        profile = self.parse_profile(raw, p["connectorId"], "chargingProfileId", raw["chargingSchedule"])
        return {"status": "Accepted" if cp.set_profile(profile) else "Rejected"}

    def on_ClearChargingProfile(self, cp: SimulatedCharger, p: Payload) -> Payload:
        removed = cp.clear_profiles(
            p.get("id"),
            p.get("connectorId"),
            self.neutral_purpose(p.get("chargingProfilePurpose")),
            p.get("stackLevel"),
        )
        return {"status": "Accepted" if removed else "Unknown"}

    def on_GetCompositeSchedule(self, cp: SimulatedCharger, p: Payload) -> Payload:
        connector = p["connectorId"]
        if not 0 <= connector < len(cp.connectors):
            return {"status": "Rejected"}
        unit = p.get("chargingRateUnit", "W")
        start, periods = cp.composite_schedule(connector, p["duration"], unit)
        return {
            "status": "Accepted",
            "connectorId": connector,
            "scheduleStart": iso(start),
            "chargingSchedule": {
                "duration": p["duration"],
                "startSchedule": iso(start),
                "chargingRateUnit": unit,
                "chargingSchedulePeriod": schedule_periods(periods),
            },
        }

    def on_SendLocalList(self, cp: SimulatedCharger, p: Payload) -> Payload:
        if not cp.config.get_bool("LocalAuthListEnabled"):
            return {"status": "NotSupported"}
        entries = [
            (e["idTag"], e["idTagInfo"]["status"] if "idTagInfo" in e else None)
            for e in p.get("localAuthorizationList", ())
        ]
        return {"status": cp.send_local_list(p["listVersion"], p["updateType"] == "Full", entries)}

    def on_GetLocalListVersion(self, cp: SimulatedCharger, p: Payload) -> Payload:
        enabled = cp.config.get_bool("LocalAuthListEnabled")
        return {"listVersion": cp.local_list_version if enabled else -1}

    def on_ReserveNow(self, cp: SimulatedCharger, p: Payload) -> Payload:
        connector = p["connectorId"]
        if connector == 0 and not cp.config.get_bool("ReserveConnectorZeroSupported"):
            return {"status": "Rejected"}
        expiry = parse_iso(p["expiryDate"]) or utc_now()
        return {"status": cp.reserve(connector or None, p["reservationId"], p["idTag"], expiry)}

    def on_GetInstalledCertificateIds(self, cp: SimulatedCharger, p: Payload) -> Payload:
        found = [h for _, h in cp.certificates([p["certificateType"]]) if p["certificateType"] in _CERT_TYPES]
        if not found:
            return {"status": "NotFound"}
        return {"status": "Accepted", "certificateHashData": found}
