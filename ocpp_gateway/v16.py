"""OCPP 1.6J (with the security extension): pure mappings of 1.6 payloads onto neutral events, the thin
handlers that store and answer them, and the route table.

Connector model: a 1.6 connectorId N is EVSE N with connector 1 (connectorId 0, the charger, is 0/0).
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime

from chargeops.events import (
    Body,
    Booted,
    FaultReported,
    FirmwareStatus,
    LogStatus,
    StatusChanged,
    TransactionEnded,
    TransactionStarted,
)
from ocpp_gateway import certificates, pnc16
from ocpp_gateway.local_auth import id_tag_info
from ocpp_gateway.meter import meter_events
from ocpp_gateway.plausibility import Reading, readings_of
from ocpp_gateway.routes import Payload
from ocpp_gateway.session import ChargerSession
from ocpp_gateway.times import parse_time
from ocpp_gateway.versions import V16

# -- payload → neutral (pure) ---------------------------------------------------------------------------


def evse_connector(connector_id: int) -> tuple[int, int]:
    return (connector_id, 1 if connector_id else 0)


def boot_of(p: Payload) -> Booted:
    return Booted(
        vendor=p["chargePointVendor"],
        model=p["chargePointModel"],
        serial_number=p.get("chargePointSerialNumber") or p.get("chargeBoxSerialNumber"),
        firmware_version=p.get("firmwareVersion"),
    )


def status_events(p: Payload) -> list[Body]:
    """A StatusNotification as the status change, and as a fault when it carries an error code."""
    evse, connector = evse_connector(p["connectorId"])
    error = p["errorCode"] if p["errorCode"] != "NoError" else None  # neutral: no error is None
    events: list[Body] = [
        StatusChanged(evse, connector, p["status"], error, p.get("vendorErrorCode"), p.get("info"))
    ]
    if error is not None:
        events.append(
            FaultReported(evse, connector, "Connector", error, p.get("info"), p.get("vendorErrorCode"))
        )
    return events


def transaction_start(p: Payload) -> TransactionStarted:
    """A StartTransaction; its `transaction_id` is left empty: on 1.6 the central system issues it."""
    evse, connector = evse_connector(p["connectorId"])
    return TransactionStarted(
        "", evse, connector, p["idTag"], parse_time(p["timestamp"]), float(p["meterStart"])
    )


def transaction_end(p: Payload) -> TransactionEnded:
    return TransactionEnded(
        str(p["transactionId"]), parse_time(p["timestamp"]), float(p["meterStop"]), p.get("reason", "Local")
    )


# -- handlers -------------------------------------------------------------------------------------------


class Session16(ChargerSession):
    version = V16

    async def on_boot_notification(self, p: Payload) -> Payload:
        return await self.register_boot(boot_of(p))

    async def on_status_notification(self, p: Payload) -> Payload:
        at = parse_time(p["timestamp"]) if p.get("timestamp") else None
        await self.emit(*status_events(p), reported_at=at)
        return {}

    async def on_meter_values(self, p: Payload) -> Payload:
        evse, connector = evse_connector(p["connectorId"])
        tx = p.get("transactionId")
        tx_id = str(tx) if tx is not None else None
        events = meter_events(p["meterValue"], evse, connector, tx_id)
        if tx_id is not None:
            events += await self.judge_meter(tx_id, evse, connector, readings_of(events))
        await self.emit(*events)
        return {}

    async def on_authorize(self, p: Payload) -> Payload:
        return {"idTagInfo": await self.id_tag_info(p["idTag"])}

    async def on_start_transaction(self, p: Payload) -> Payload:
        start = transaction_start(p)
        info = await self.id_tag_info(p["idTag"])
        tx = await self.record_start(start, issue_id=True)
        base = [Reading(start.meter_start_wh, start.started_at)] if start.meter_start_wh is not None else []
        flags = await self.judge_meter(tx.transaction_id, start.evse_id, start.connector_id, base)
        started = replace(start, transaction_id=tx.transaction_id)
        await self.price(tx.transaction_id, p["idTag"], info, start.started_at, final=False)
        await self.emit(started, *flags, reported_at=start.started_at)
        return {"transactionId": int(tx.transaction_id), "idTagInfo": info}

    async def on_stop_transaction(self, p: Payload) -> Payload:
        end = transaction_end(p)
        tx = await self.record_end(end, p.get("idTag"), issued_here=True)
        answer = {"idTagInfo": await self.id_tag_info(p["idTag"])} if p.get("idTag") else {}
        if tx is None:  # another charger's transaction: answered (or it retries forever), nothing changed
            return answer
        evse, connector = tx.evse_id or 0, tx.connector_id or 0
        events = meter_events(p.get("transactionData") or [], evse, connector, end.transaction_id)
        readings = readings_of(events)
        if end.meter_stop_wh is not None:
            readings.append(Reading(end.meter_stop_wh, end.stopped_at))
        events += await self.judge_meter(end.transaction_id, evse, connector, readings)
        await self.price(
            end.transaction_id, p.get("idTag"), answer.get("idTagInfo"), end.stopped_at, final=True
        )
        await self.emit(*events)
        if not tx.second_stop:
            await self.emit(end, reported_at=end.stopped_at)
        return answer

    async def on_diagnostics_status(self, p: Payload) -> Payload:
        await self.emit(LogStatus(p["status"]))
        return {}

    async def on_signed_firmware_status(self, p: Payload) -> Payload:
        await self.emit(FirmwareStatus(p["status"], p.get("requestId"), signed=True))
        return {}

    async def price(
        self, tx_id: str, id_tag: str | None, info: Payload | None, at: datetime, *, final: bool
    ) -> None:
        """1.6 has no cost in its messages: the tariff is chosen at the start and the final cost stored at
        the stop, for the API (`chargeops.tariffs`; no charging state, so all of the time is charging)."""
        if self.ctx.pricing is None:
            return
        accepted = info is not None and info.get("status") == "Accepted"
        await self.ctx.pricing.price(
            self.id,
            tx_id,
            token=id_tag if accepted else None,
            group=info.get("parentIdTag") if accepted and info is not None else None,
            state=None,
            at=at,
            final=final,
        )

    async def id_tag_info(self, id_tag: str) -> Payload:
        token = await self.authorize(id_tag)
        return id_tag_info(token.status, token.expiry, token.group_id)

    # Every charger-initiated action of OCPP 1.6 and its security extension.
    ROUTES = {
        "Authorize": on_authorize,
        "BootNotification": on_boot_notification,
        "DataTransfer": pnc16.on_data_transfer,  # ISO 15118 Plug & Charge, swaps
        "DiagnosticsStatusNotification": on_diagnostics_status,
        "FirmwareStatusNotification": ChargerSession.on_firmware_status,
        "Heartbeat": ChargerSession.on_heartbeat,
        "LogStatusNotification": ChargerSession.on_log_status,
        "MeterValues": on_meter_values,
        "SecurityEventNotification": ChargerSession.on_security_event,
        "SignCertificate": certificates.on_sign_certificate,
        "SignedFirmwareStatusNotification": on_signed_firmware_status,
        "StartTransaction": on_start_transaction,
        "StatusNotification": on_status_notification,
        "StopTransaction": on_stop_transaction,
    }
