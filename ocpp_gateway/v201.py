"""OCPP 2.0.1 (which 2.1 extends, `v21`): pure mappings of 2.0.1 payloads onto neutral events, the thin
handlers that store and answer them, and the route table."""

from __future__ import annotations

from dataclasses import dataclass

from chargeops.events import (
    Body,
    Booted,
    FaultReported,
    Reported,
    StatusChanged,
    TransactionEnded,
    TransactionStarted,
    TransactionUpdated,
)
from ocpp_gateway import seq_gaps, swaps
from ocpp_gateway.local_auth import id_token_info
from ocpp_gateway.meter import energy_wh, meter_events, samples_of
from ocpp_gateway.plausibility import readings_of
from ocpp_gateway.routes import Payload, StoreOnly
from ocpp_gateway.session import ChargerSession
from ocpp_gateway.times import parse_time
from ocpp_gateway.versions import V201

# Component variables whose value "true" means something is broken (OCPP 2.0.1 part 2, appendix 3).
PROBLEM_VARIABLES = frozenset({"Problem", "Fault", "Tripped", "Overheated", "Overload", "Failed", "Alarm"})

# -- payload → neutral (pure) ---------------------------------------------------------------------------


def boot_of(p: Payload) -> Booted:
    station = p["chargingStation"]
    return Booted(
        vendor=station["vendorName"],
        model=station["model"],
        serial_number=station.get("serialNumber"),
        firmware_version=station.get("firmwareVersion"),
        reason=p["reason"],
    )


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


def notify_event_events(p: Payload) -> list[Body]:
    """A NotifyEvent as sent (the device model is not interpreted yet), and the faults it reports."""
    return [Reported("NotifyEvent", p), *(f for f in map(fault_of, p["eventData"]) if f is not None)]


@dataclass(slots=True)
class TransactionFacts:
    """What one TransactionEvent says, in neutral words. Which of it is recorded is the handler's decision
    with the store: an event of a transaction heard of for the first time starts it, whatever its type."""

    event_type: str
    seq_no: int
    start: TransactionStarted  # meter_start_wh only from a Started event
    end: TransactionEnded | None
    update: TransactionUpdated | None
    meter: list[Body]  # MeterValues, and SignedMeterValues where the meter signed
    meter_wh: float | None  # the latest main energy register in the event


def transaction_facts(p: Payload) -> TransactionFacts:
    info = p["transactionInfo"]
    tx_id = info["transactionId"]
    at = parse_time(p["timestamp"])
    evse = p.get("evse") or {}
    evse_id, connector_id = evse.get("id"), evse.get("connectorId")  # unknown stays unknown, not 0
    token = (p.get("idToken") or {}).get("idToken")
    samples = samples_of(p.get("meterValue") or [])
    kind = p["eventType"]
    meter_start = None
    if kind == "Started":
        meter_start = energy_wh(samples, "Transaction.Begin")
        if meter_start is None:
            meter_start = energy_wh(samples)
    end = update = None
    if kind == "Ended":
        meter_stop = energy_wh(samples, "Transaction.End") or energy_wh(samples)
        end = TransactionEnded(tx_id, at, meter_stop, info.get("stoppedReason", "Local"))
    elif kind == "Updated":
        offline = bool(p.get("offline"))
        update = TransactionUpdated(tx_id, p["seqNo"], p["triggerReason"], info.get("chargingState"), offline)
    return TransactionFacts(
        event_type=kind,
        seq_no=p["seqNo"],
        start=TransactionStarted(tx_id, evse_id, connector_id, token, at, meter_start),
        end=end,
        update=update,
        meter=meter_events(p.get("meterValue") or [], evse_id or 0, connector_id or 0, tx_id),
        meter_wh=energy_wh(samples),
    )


# -- handlers -------------------------------------------------------------------------------------------


class Session201(ChargerSession):
    version = V201

    async def on_boot_notification(self, p: Payload) -> Payload:
        return await self.register_boot(boot_of(p))

    async def on_status_notification(self, p: Payload) -> Payload:
        status = StatusChanged(p["evseId"], p["connectorId"], p["connectorStatus"])
        await self.emit(status, reported_at=parse_time(p["timestamp"]))
        return {}

    async def on_notify_event(self, p: Payload) -> Payload:
        await self.emit(*notify_event_events(p), reported_at=parse_time(p["generatedAt"]))
        return {}

    async def on_meter_values(self, p: Payload) -> Payload:
        await self.emit(*meter_events(p["meterValue"], p["evseId"], 0, None))
        return {}

    async def on_notify_report(self, p: Payload) -> Payload:
        """Stored as sent; the message limits it reports are kept to split list requests (`batching`)."""
        self.message_limits.learn_report(p.get("reportData") or ())
        await self.emit(Reported("NotifyReport", p))
        return {}

    async def on_authorize(self, p: Payload) -> Payload:
        return {"idTokenInfo": await self.id_token_info(p["idToken"])}

    async def on_transaction_event(self, p: Payload) -> Payload:
        """A (transaction, seqNo) is stored once: a copy of an event already stored (resent `offline: true`,
        or again because our answer was lost) is answered as before and changes nothing. It is noted only
        after its events are stored, so a retry of one that failed is stored then; noting it also keeps the
        transaction's seqNo gaps (`seq_gaps`: a gap opening asks the station GetTransactionStatus)."""
        facts = transaction_facts(p)
        start, end, tx_id = facts.start, facts.end, facts.start.transaction_id
        store = self.ctx.store
        copy = await store.seq_no_stored(self.id, tx_id, facts.seq_no)
        response: Payload = {}
        if p.get("idToken"):
            response["idTokenInfo"] = await self.id_token_info(p["idToken"], record=not copy)
        if copy:
            self.log.info(
                "TransactionEvent %s seqNo %d is stored already; answered again", tx_id, facts.seq_no
            )
            return response
        events: list[Body] = []
        if facts.event_type == "Started" or not await store.update_transaction(
            self.id, tx_id, seq_no=facts.seq_no, meter_wh=facts.meter_wh
        ):
            await self.record_start(start)
            await store.update_transaction(self.id, tx_id, seq_no=facts.seq_no)
            events.append(start)
        if end is not None:
            tx = await self.record_end(end, start.id_token, start.evse_id, start.connector_id)
            if tx is not None and not tx.second_stop:
                events.append(end)
        elif facts.update is not None:
            events.append(facts.update)
        events.extend(facts.meter)
        events += await self.judge_meter(tx_id, start.evse_id, start.connector_id, readings_of(facts.meter))
        await self.emit(*events, reported_at=start.started_at)
        seq_gaps.react(self, tx_id, facts.seq_no, await store.note_seq_no(self.id, tx_id, facts.seq_no))
        return response

    async def id_token_info(self, id_token: Payload, *, record: bool = True) -> Payload:
        """IdTokenInfo for an idToken: every type is looked up (Central too: C01-C05), except
        NoAuthorization, which by definition carries no identity to check."""
        if id_token["type"] == "NoAuthorization":
            return {"status": "Accepted"}
        token = await self.authorize(id_token["idToken"], record=record)
        return id_token_info(token.status, token.expiry, token.group_id)

    # Every charger-initiated action of OCPP 2.0.1. Those with no feature behind them yet are stored as
    # sent and answered so that the charger goes on: no certificate authority, OCSP responder or ISO 15118
    # backend (refused or Failed), no smart-charging negotiation with the EV (Rejected, or Accepted for a
    # schedule it only reports), and device-model reports that are kept (of NotifyReport only the message
    # limits are read).
    ROUTES = {
        "Authorize": on_authorize,
        "BootNotification": on_boot_notification,
        "ClearedChargingLimit": StoreOnly({}),
        "DataTransfer": swaps.on_data_transfer,
        "FirmwareStatusNotification": ChargerSession.on_firmware_status,
        "Get15118EVCertificate": StoreOnly({"status": "Failed", "exiResponse": ""}),
        "GetCertificateStatus": StoreOnly({"status": "Failed"}),
        "Heartbeat": ChargerSession.on_heartbeat,
        "LogStatusNotification": ChargerSession.on_log_status,
        "MeterValues": on_meter_values,
        "NotifyChargingLimit": StoreOnly({}),
        "NotifyCustomerInformation": StoreOnly({}),
        "NotifyDisplayMessages": StoreOnly({}),
        "NotifyEVChargingNeeds": StoreOnly({"status": "Rejected"}),
        "NotifyEVChargingSchedule": StoreOnly({"status": "Accepted"}),
        "NotifyEvent": on_notify_event,
        "NotifyMonitoringReport": StoreOnly({}),
        "NotifyReport": on_notify_report,
        "PublishFirmwareStatusNotification": StoreOnly({}),
        "ReportChargingProfiles": StoreOnly({}),
        "ReservationStatusUpdate": StoreOnly({}),
        "SecurityEventNotification": ChargerSession.on_security_event,
        "SignCertificate": StoreOnly({"status": "Rejected"}),
        "StatusNotification": on_status_notification,
        "TransactionEvent": on_transaction_event,
    }
