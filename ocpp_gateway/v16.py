"""OCPP 1.6J: thin handlers mapping 1.6 payloads onto neutral events and answers.

Connector model: a 1.6 connectorId N is EVSE N with connector 1 (connectorId 0, the charger, is 0/0).
"""

from __future__ import annotations

from typing import Any

from ocpp.routing import on

from chargeops.events import (
    Booted,
    FaultReported,
    FirmwareStatus,
    LogStatus,
    SecurityEvent,
    StatusChanged,
    TransactionEnded,
    TransactionStarted,
)
from ocpp_gateway.meter import meter_events
from ocpp_gateway.session import ChargerSession
from ocpp_gateway.swaps import SwapReports
from ocpp_gateway.times import ocpp_time, parse_time
from ocpp_gateway.versions import V16

Payload = dict[str, Any]


def evse_connector(connector_id: int) -> tuple[int, int]:
    return (connector_id, 1 if connector_id else 0)


class Session16(SwapReports, ChargerSession):
    version = V16
    STORE_ONLY = {
        # No certificate authority behind the central system yet: refuse rather than promise a signature.
        "SignCertificate": {"status": "Rejected"},
    }

    @on("BootNotification")
    async def on_boot_notification(self, p: Payload) -> Payload:
        boot = Booted(
            vendor=p["chargePointVendor"],
            model=p["chargePointModel"],
            serial_number=p.get("chargePointSerialNumber") or p.get("chargeBoxSerialNumber"),
            firmware_version=p.get("firmwareVersion"),
        )
        return await self.register_boot(boot)

    @on("StatusNotification")
    async def on_status_notification(self, p: Payload) -> Payload:
        evse, connector = evse_connector(p["connectorId"])
        at = parse_time(p["timestamp"]) if p.get("timestamp") else None
        error = p["errorCode"] if p["errorCode"] != "NoError" else None  # neutral: no error is None
        events: list[Any] = [
            StatusChanged(evse, connector, p["status"], error, p.get("vendorErrorCode"), p.get("info"))
        ]
        if error is not None:
            events.append(
                FaultReported(evse, connector, "Connector", error, p.get("info"), p.get("vendorErrorCode"))
            )
        await self.emit(*events, reported_at=at)
        return {}

    @on("MeterValues")
    async def on_meter_values(self, p: Payload) -> Payload:
        evse, connector = evse_connector(p["connectorId"])
        tx = p.get("transactionId")
        await self.emit(*meter_events(p["meterValue"], evse, connector, str(tx) if tx is not None else None))
        return {}

    @on("Authorize")
    async def on_authorize(self, p: Payload) -> Payload:
        return {"idTagInfo": await self.id_tag_info(p["idTag"])}

    @on("StartTransaction")
    async def on_start_transaction(self, p: Payload) -> Payload:
        evse, connector = evse_connector(p["connectorId"])
        info = await self.id_tag_info(p["idTag"])
        started_at = parse_time(p["timestamp"])
        tx = await self.ctx.store.start_transaction(
            self.id,
            transaction_id=None,
            evse_id=evse,
            connector_id=connector,
            id_token=p["idTag"],
            started_at=started_at,
            meter_start_wh=float(p["meterStart"]),
        )
        await self.emit(
            TransactionStarted(
                tx.transaction_id, evse, connector, p["idTag"], started_at, float(p["meterStart"])
            ),
            reported_at=started_at,
        )
        return {"transactionId": int(tx.transaction_id), "idTagInfo": info}

    @on("StopTransaction")
    async def on_stop_transaction(self, p: Payload) -> Payload:
        tx_id = str(p["transactionId"])
        stopped_at = parse_time(p["timestamp"])
        data = p.get("transactionData") or []
        tx = await self.ctx.store.end_transaction(
            self.id,
            tx_id,
            stopped_at=stopped_at,
            meter_stop_wh=float(p["meterStop"]),
            reason=p.get("reason", "Local"),
            id_token=p.get("idTag"),
        )
        evse, connector = tx.evse_id or 0, tx.connector_id or 0
        await self.emit(*meter_events(data, evse, connector, tx_id))
        await self.emit(
            TransactionEnded(tx_id, stopped_at, float(p["meterStop"]), p.get("reason", "Local")),
            reported_at=stopped_at,
        )
        return {"idTagInfo": await self.id_tag_info(p["idTag"])} if p.get("idTag") else {}

    @on("DiagnosticsStatusNotification")
    async def on_diagnostics_status(self, p: Payload) -> Payload:
        await self.emit(LogStatus(p["status"]))
        return {}

    @on("FirmwareStatusNotification")
    async def on_firmware_status(self, p: Payload) -> Payload:
        await self.emit(FirmwareStatus(p["status"]))
        return {}

    @on("LogStatusNotification")
    async def on_log_status(self, p: Payload) -> Payload:
        await self.emit(LogStatus(p["status"], p.get("requestId")))
        return {}

    @on("SignedFirmwareStatusNotification")
    async def on_signed_firmware_status(self, p: Payload) -> Payload:
        await self.emit(FirmwareStatus(p["status"], p.get("requestId"), signed=True))
        return {}

    @on("SecurityEventNotification")
    async def on_security_event(self, p: Payload) -> Payload:
        await self.emit(SecurityEvent(p["type"], p.get("techInfo")), reported_at=parse_time(p["timestamp"]))
        return {}

    async def id_tag_info(self, id_tag: str) -> Payload:
        token = await self.authorize(id_tag)
        info: Payload = {"status": token.status}
        if token.expiry is not None:
            info["expiryDate"] = ocpp_time(token.expiry)
        return info
