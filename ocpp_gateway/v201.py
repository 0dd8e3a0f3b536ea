"""OCPP 2.0.1 (which 2.1 extends, `v21`): pure mappings of 2.0.1 payloads onto neutral events, the thin
handlers that store and answer them, and the route table."""

from __future__ import annotations

from dataclasses import dataclass

from chargeops import clock
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
from ocpp_gateway import certificates, ev_charging, seq_gaps, swaps
from ocpp_gateway.contract_auth import contract_authorize
from ocpp_gateway.local_auth import id_token_info
from ocpp_gateway.meter import energy_wh, meter_events, samples_of
from ocpp_gateway.plausibility import Reading, flag_events, readings_of
from ocpp_gateway.pricing import personal_message
from ocpp_gateway.routes import Payload, StoreOnly
from ocpp_gateway.rpc import RpcError
from ocpp_gateway.session import ChargerSession
from ocpp_gateway.store import TxProgress
from ocpp_gateway.times import parse_time
from ocpp_gateway.versions import V201

SEQ_NO_MAX = 2**31 - 1  # a transaction's last seqNo is stored as a 32-bit integer
# Triggers of an event whose idToken authorizes a transaction already started: E02 (cable plugged in first,
# then Authorized) and F02 (a remote start on a plugged-in cable). Its token becomes the transaction's.
AUTHORIZING_TRIGGERS = frozenset({"Authorized", "RemoteStart"})
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
    start: TransactionStarted  # meter_start_wh: a Transaction.Begin reading, or any of a Started event
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
    meter_start = energy_wh(samples, "Transaction.Begin")  # the register at the start, in any event
    if kind == "Started" and meter_start is None:
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
        """Stored as sent; the message limits it reports are kept to split list requests (`batching`), on
        this connection and the next ones (`message_limits`)."""
        self.message_limits.learn_report(p.get("reportData") or ())
        await self.message_limits.keep()
        await self.emit(Reported("NotifyReport", p))
        return {}

    async def on_authorize(self, p: Payload) -> Payload:
        """With an ISO 15118 contract certificate (its OCSP data, or the PEM chain) the answer also says
        what the chain is worth, and a bad chain overrides the token (C07, `ocpp_gateway.pki`)."""
        hash_data, certificate = p.get("iso15118CertificateHashData") or [], p.get("certificate")
        if not hash_data and certificate is None:
            return {"idTokenInfo": await self.id_token_info(p["idToken"])}
        return await contract_authorize(self, p, await self.id_token_info(p["idToken"], record=False))

    async def on_get_certificate_status(self, p: Payload) -> Payload:
        return await self.ctx.pki.certificate_status(p["ocspRequestData"])

    async def on_get_15118_ev_certificate(self, p: Payload) -> Payload:
        return await self.ctx.pki.ev_certificate(self.id, p, self.version)

    async def on_transaction_event(self, p: Payload) -> Payload:
        """A (transaction, seqNo) is stored once: a copy of an event already stored (resent `offline: true`,
        or again because our answer was lost) is answered as before and changes nothing. It is noted only
        after its events are stored, so a retry of one that failed is stored then; noting it also keeps the
        transaction's seqNo gaps (`seq_gaps`: a gap opening asks the station GetTransactionStatus).
        The hot path (an event of a transaction already held) asks the store once before its events are
        stored: is it a copy, progress and meter judged together (`Store.advance_transaction`)."""
        facts = transaction_facts(p)
        start, end, tx_id = facts.start, facts.end, facts.start.transaction_id
        if not 0 <= facts.seq_no <= SEQ_NO_MAX:
            raise RpcError("PropertyConstraintViolation", f"seqNo must be 0-{SEQ_NO_MAX}: {facts.seq_no}")
        store = self.ctx.store
        readings = readings_of(facts.meter)
        progress = None
        if facts.event_type == "Started":  # judged once recorded: the start's time bounds its readings
            copy = await store.seq_no_stored(self.id, tx_id, facts.seq_no)
        else:
            progress = await self.advance(facts, readings, facts.meter_wh)
            copy = progress.copy
        response: Payload = {}
        if p.get("idToken"):
            response["idTokenInfo"] = await self.id_token_info(p["idToken"], record=not copy)
        if copy:
            self.log.info(
                "TransactionEvent %s seqNo %d is stored already; answered again", tx_id, facts.seq_no
            )
            await self.tell_cost(p, facts, response, copy=True)
            return response
        events: list[Body] = []
        if progress is None or not progress.known:
            await self.record_start(start)
            progress = await self.advance(facts, readings, None)
            events.append(start)
        elif self.authorizes_later(p, response):
            await store.attach_id_token(self.id, tx_id, p["idToken"]["idToken"])
        if end is not None:
            tx = await self.record_end(end, start.id_token, start.evse_id, start.connector_id)
            if tx is not None and not tx.second_stop:
                events.append(end)
        elif facts.update is not None:
            events.append(facts.update)
        events.extend(facts.meter)
        events += flag_events(progress.flags, tx_id, start.evse_id, start.connector_id, self.log)
        await self.tell_cost(p, facts, response)
        await self.emit(*events, reported_at=start.started_at)
        seq_gaps.react(self, tx_id, facts.seq_no, await store.note_seq_no(self.id, tx_id, facts.seq_no))
        return response

    @staticmethod
    def authorizes_later(p: Payload, response: Payload) -> bool:
        """An accepted idToken given after the start (`AUTHORIZING_TRIGGERS`): kept as the transaction's
        token, if it has none, so that the session shows its driver and withdrawing the token clears the
        cache of the station it was used at (`ops.local_list.tokens`)."""
        accepted = (response.get("idTokenInfo") or {}).get("status") == "Accepted"
        return p["eventType"] != "Started" and p["triggerReason"] in AUTHORIZING_TRIGGERS and accepted

    async def advance(
        self, facts: TransactionFacts, readings: list[Reading], meter_wh: float | None
    ) -> TxProgress:
        """The event's progress and register readings, in one transaction of the store."""
        return await self.ctx.store.advance_transaction(
            self.id,
            facts.start.transaction_id,
            facts.seq_no,
            meter_wh=meter_wh,
            readings=readings,
            limits=await self.meter_limits() if readings else None,
            now=clock.now(),
            evse_id=facts.start.evse_id,
        )

    async def on_notify_ev_charging_needs(self, p: Payload) -> Payload:
        """K15/K17: Accepted when ops can plan a schedule (a transaction runs on the EVSE); ops then sends the
        session's TxProfile (`ocpp_gateway.ev_charging`: an EV without AC or DC parameters at the station's
        rated power)."""
        transaction_id = await self.ctx.store.active_transaction(self.id, p["evseId"])
        needs = None
        if transaction_id is not None:
            rated_kw = await self.ctx.store.max_power_kw(self.id) or self.ctx.settings.meter_max_power_kw
            needs = ev_charging.needs_of(p, transaction_id, rated_kw * 1000)
        if needs is None:
            why = "no transaction on this EVSE"
            await self.emit(Reported("NotifyEVChargingNeeds", p))
            return {"status": "Rejected", "statusInfo": {"reasonCode": "NoSchedule", "additionalInfo": why}}
        await self.emit(needs, reported_at=parse_time(p["timestamp"]) if p.get("timestamp") else None)
        return {"status": "Accepted"}

    async def on_notify_ev_charging_schedule(self, p: Payload) -> Payload:
        """K15.FR.10/11: the schedule the EV chose, stored with its transaction (`ev_charging_schedules`)."""
        transaction_id = await self.ctx.store.active_transaction(self.id, p["evseId"])
        await self.emit(ev_charging.schedule_of(p, transaction_id), reported_at=parse_time(p["timeBase"]))
        return {"status": "Accepted"}

    async def tell_cost(
        self, p: Payload, facts: TransactionFacts, response: Payload, copy: bool = False
    ) -> None:
        """Block I: the running cost (I02) of an Updated event and the final one (I03, stored) of an Ended
        one as `totalCost`, when a tariff prices the transaction; the tariff's text as
        `updatedPersonalMessage` when this event chose it and the idTokenInfo does not show it (I06: e.g.
        the driver's group has a tariff of its own). A copy already stored moves no charging state."""
        if self.ctx.pricing is None:
            return
        info = response.get("idTokenInfo") or {}
        token = (p.get("idToken") or {}).get("idToken") if info.get("status") == "Accepted" else None
        priced = await self.ctx.pricing.price(
            self.id,
            facts.start.transaction_id,
            token=token or None,
            group=(info.get("groupIdToken") or {}).get("idToken"),
            state=None if copy else p["transactionInfo"].get("chargingState"),
            at=facts.start.started_at,
            final=facts.event_type == "Ended",
        )
        if priced is None:
            return
        if facts.event_type != "Started":
            response["totalCost"] = float(priced.cost.total)  # a decimal of the currency's minor unit
        if priced.chosen and "personalMessage" not in info:
            response["updatedPersonalMessage"] = personal_message(priced.tariff)

    async def id_token_info(self, id_token: Payload, *, record: bool = True) -> Payload:
        """IdTokenInfo for an idToken: every type is looked up (Central too: C01-C05), except
        NoAuthorization, which by definition carries no identity to check. An accepted one is shown the
        tariff it will charge under here (I01 personalMessage), if one applies."""
        if id_token["type"] == "NoAuthorization":
            info: Payload = {"status": "Accepted"}
            group = None
        else:
            token = await self.authorize(id_token["idToken"], record=record)
            info = id_token_info(token.status, token.expiry, token.group_id)
            group = token.group_id
        if info["status"] == "Accepted" and self.ctx.pricing is not None:
            tariff = await self.ctx.pricing.tariff_for(self.id, group)
            if tariff is not None:
                info["personalMessage"] = personal_message(tariff)
        return info

    # Every charger-initiated action of OCPP 2.0.1. Those with no feature behind them yet are stored as
    # sent and answered so that the charger goes on: device-model reports that are kept (of NotifyReport only
    # the message limits are read). SignCertificate is answered by the CA behind the gateway (`certificates`),
    # Plug & Charge by the PKI clients (`pki`), the EV's charging needs by ops (`ev_charging`).
    ROUTES = {
        "Authorize": on_authorize,
        "BootNotification": on_boot_notification,
        "ClearedChargingLimit": StoreOnly({}),
        "DataTransfer": swaps.on_data_transfer,
        "FirmwareStatusNotification": ChargerSession.on_firmware_status,
        "Get15118EVCertificate": on_get_15118_ev_certificate,
        "GetCertificateStatus": on_get_certificate_status,
        "Heartbeat": ChargerSession.on_heartbeat,
        "LogStatusNotification": ChargerSession.on_log_status,
        "MeterValues": on_meter_values,
        "NotifyChargingLimit": StoreOnly({}),
        "NotifyCustomerInformation": StoreOnly({}),
        "NotifyDisplayMessages": StoreOnly({}),
        "NotifyEVChargingNeeds": on_notify_ev_charging_needs,
        "NotifyEVChargingSchedule": on_notify_ev_charging_schedule,
        "NotifyEvent": on_notify_event,
        "NotifyMonitoringReport": StoreOnly({}),
        "NotifyReport": on_notify_report,
        "PublishFirmwareStatusNotification": StoreOnly({}),
        "ReportChargingProfiles": StoreOnly({}),
        "ReservationStatusUpdate": StoreOnly({}),
        "SecurityEventNotification": ChargerSession.on_security_event,
        "SignCertificate": certificates.on_sign_certificate,
        "StatusNotification": on_status_notification,
        "TransactionEvent": on_transaction_event,
    }
