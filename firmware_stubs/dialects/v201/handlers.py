"""OCPP 2.0.1 CSMS-initiated calls other than the device model's: transactions and control, firmware,
smart charging, authorization and reservations, display messages, network profiles, certificates.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from firmware_stubs.dialects.base import Payload, schedule_periods
from firmware_stubs.dialects.v201.messages import V201Messages, meter_value
from firmware_stubs.model import iso, parse_iso, utc_now

if TYPE_CHECKING:
    from firmware_stubs.charger import SimulatedCharger

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


class V201Handlers(V201Messages):
    """Handlers (``on_<Action>``) that drive the charger's neutral operations and answer in 2.0.1 terms."""

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
                    meter = meter_value(cp.sample(c, cp.config.get_list("MeterValuesSampledData")), "Trigger")
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
        if not cp.config.get_bool("LocalAuthListEnabled"):
            return {"status": "Failed", "statusInfo": {"reasonCode": "Disabled"}}
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
