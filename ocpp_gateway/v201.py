"""OCPP 2.0.1 (and 2.1, which extends it): thin handlers mapping payloads onto neutral events and answers."""

from __future__ import annotations

from typing import Any

from ocpp.routing import on

from chargeops.events import (
    Body,
    Booted,
    FaultReported,
    FirmwareStatus,
    LogStatus,
    Reported,
    SecurityEvent,
    StatusChanged,
    TransactionEnded,
    TransactionStarted,
    TransactionUpdated,
)
from ocpp_gateway.der import DerReports
from ocpp_gateway.meter import energy_wh, meter_events, samples_of
from ocpp_gateway.session import ChargerSession
from ocpp_gateway.swaps import SwapReports, swap_event
from ocpp_gateway.times import ocpp_time, parse_time
from ocpp_gateway.versions import V21, V201

Payload = dict[str, Any]

# Component variables whose value "true" means something is broken (OCPP 2.0.1 part 2, appendix 3).
PROBLEM_VARIABLES = frozenset({"Problem", "Fault", "Tripped", "Overheated", "Overload", "Failed", "Alarm"})


def fault_of(event: Payload) -> FaultReported | None:
    """A NotifyEvent eventData entry as a fault, if it reports (or clears) a problem."""
    variable = event["variable"]["name"]
    component = event["component"]
    value = str(event.get("actualValue", "")).lower()
    if variable not in PROBLEM_VARIABLES and event.get("trigger") != "Alerting":
        return None
    evse = component.get("evse") or {}
    cleared = bool(event.get("cleared")) or value in ("false", "0", "ok")
    return FaultReported(
        evse_id=evse.get("id", 0),
        connector_id=evse.get("connectorId", 0),
        component=component["name"],
        code=f"{component['name']}.{variable}",
        description=event.get("techInfo") or event.get("actualValue"),
        vendor_code=event.get("techCode"),
        cleared=cleared,
    )


class Session201(SwapReports, ChargerSession):
    version = V201
    STORE_ONLY = {
        "SignCertificate": {"status": "Rejected"},
        "Get15118EVCertificate": {"status": "Failed", "exiResponse": ""},
        "GetCertificateStatus": {"status": "Failed"},
        "NotifyEVChargingNeeds": {"status": "Rejected"},
        "NotifyEVChargingSchedule": {"status": "Accepted"},
        **{
            action: {}
            for action in (
                "ClearedChargingLimit",
                "NotifyChargingLimit",
                "NotifyCustomerInformation",
                "NotifyDisplayMessages",
                "NotifyMonitoringReport",
                "NotifyReport",
                "PublishFirmwareStatusNotification",
                "ReportChargingProfiles",
                "ReservationStatusUpdate",
            )
        },
    }

    @on("BootNotification")
    async def on_boot_notification(self, p: Payload) -> Payload:
        station = p["chargingStation"]
        boot = Booted(
            vendor=station["vendorName"],
            model=station["model"],
            serial_number=station.get("serialNumber"),
            firmware_version=station.get("firmwareVersion"),
            reason=p["reason"],
        )
        return await self.register_boot(boot)

    @on("StatusNotification")
    async def on_status_notification(self, p: Payload) -> Payload:
        await self.emit(
            StatusChanged(p["evseId"], p["connectorId"], p["connectorStatus"]),
            reported_at=parse_time(p["timestamp"]),
        )
        return {}

    @on("NotifyEvent")
    async def on_notify_event(self, p: Payload) -> Payload:
        faults = [f for f in map(fault_of, p["eventData"]) if f is not None]
        await self.emit(Reported("NotifyEvent", p), *faults, reported_at=parse_time(p["generatedAt"]))
        return {}

    @on("MeterValues")
    async def on_meter_values(self, p: Payload) -> Payload:
        await self.emit(*meter_events(p["meterValue"], p["evseId"], 0, None))
        return {}

    @on("Authorize")
    async def on_authorize(self, p: Payload) -> Payload:
        return {"idTokenInfo": await self.id_token_info(p["idToken"])}

    @on("TransactionEvent")
    async def on_transaction_event(self, p: Payload) -> Payload:
        info = p["transactionInfo"]
        tx_id = info["transactionId"]
        at = parse_time(p["timestamp"])
        evse = p.get("evse") or {}
        evse_id, connector_id = evse.get("id", 0), evse.get("connectorId", 0)
        token = (p.get("idToken") or {}).get("idToken")
        samples = samples_of(p.get("meterValue") or [])
        store = self.ctx.store
        response: Payload = {}
        if p.get("idToken"):
            response["idTokenInfo"] = await self.id_token_info(p["idToken"])
        events: list[Body] = []
        kind = p["eventType"]
        if kind == "Started" or not await store.update_transaction(
            self.id, tx_id, seq_no=p["seqNo"], meter_wh=energy_wh(samples)
        ):
            meter_start = energy_wh(samples, "Transaction.Begin") if kind == "Started" else None
            if meter_start is None and kind == "Started":
                meter_start = energy_wh(samples)
            await store.start_transaction(
                self.id,
                transaction_id=tx_id,
                evse_id=evse_id,
                connector_id=connector_id,
                id_token=token,
                started_at=at,
                meter_start_wh=meter_start,
            )
            await store.update_transaction(self.id, tx_id, seq_no=p["seqNo"])
            events.append(TransactionStarted(tx_id, evse_id, connector_id, token, at, meter_start))
        if kind == "Ended":
            meter_stop = energy_wh(samples, "Transaction.End") or energy_wh(samples)
            reason = info.get("stoppedReason", "Local")
            await store.end_transaction(
                self.id,
                tx_id,
                stopped_at=at,
                meter_stop_wh=meter_stop,
                reason=reason,
                id_token=token,
                evse_id=evse_id,
                connector_id=connector_id,
            )
            events.append(TransactionEnded(tx_id, at, meter_stop, reason))
        elif kind == "Updated":
            events.append(
                TransactionUpdated(
                    tx_id, p["seqNo"], p["triggerReason"], info.get("chargingState"), bool(p.get("offline"))
                )
            )
        events.extend(meter_events(p.get("meterValue") or [], evse_id, connector_id, tx_id))
        await self.emit(*events, reported_at=at)
        return response

    @on("FirmwareStatusNotification")
    async def on_firmware_status(self, p: Payload) -> Payload:
        await self.emit(FirmwareStatus(p["status"], p.get("requestId")))
        return {}

    @on("LogStatusNotification")
    async def on_log_status(self, p: Payload) -> Payload:
        await self.emit(LogStatus(p["status"], p.get("requestId")))
        return {}

    @on("SecurityEventNotification")
    async def on_security_event(self, p: Payload) -> Payload:
        await self.emit(SecurityEvent(p["type"], p.get("techInfo")), reported_at=parse_time(p["timestamp"]))
        return {}

    async def id_token_info(self, id_token: Payload) -> Payload:
        """IdTokenInfo for an idToken; the central (non-local) token types are checked against our list."""
        if id_token["type"] in ("NoAuthorization", "Central"):
            return {"status": "Accepted"}
        token = await self.authorize(id_token["idToken"])
        info: Payload = {"status": token.status}
        if token.expiry is not None:
            info["cacheExpiryDateTime"] = ocpp_time(token.expiry)
        if token.group_id:
            info["groupIdToken"] = {"idToken": token.group_id, "type": "Central"}
        return info


class Session21(DerReports, Session201):
    """OCPP 2.1 keeps 2.0.1's messages for everything 2.0.1 has; the additions come with their features
    (battery swaps here, DER control in `der`)."""

    version = V21

    @on("BatterySwap")
    async def on_battery_swap(self, p: Payload) -> Payload:
        """BatteryIn / BatteryOut / BatteryOutTimeout of a swap station (OCPP 2.1 part 2, section S)."""
        await self.emit(swap_event(p))
        return {}
