"""OCPP 2.1: 2.0.1's messages for everything 2.0.1 has, plus what swap stations (part 2, section S: battery
swapping) and bidirectional chargers (block R: DER control) need; the route table says what answers the other
charger-initiated additions."""

from __future__ import annotations

from chargeops.events import DerAlarm, DerControlsReported, DerControlStartStop
from ocpp_gateway import swaps
from ocpp_gateway.der import reported_controls
from ocpp_gateway.routes import NotSupported, Payload
from ocpp_gateway.times import parse_time
from ocpp_gateway.v201 import Session201
from ocpp_gateway.versions import V21

_NO_STREAMS = NotSupported(
    "periodic event streams are not consumed (their NotifyPeriodicEventStream SEND frames are dropped "
    "unread); monitoring reaches the central system by NotifyEvent"
)


class Session21(Session201):
    version = V21

    async def on_notify_der_alarm(self, p: Payload) -> Payload:
        alarm = DerAlarm(
            p["controlType"], p.get("gridEventFault"), bool(p.get("alarmEnded")), p.get("extraInfo")
        )
        self.log.warning(
            "DER alarm %s %s%s",
            alarm.control_type,
            alarm.grid_event_fault or "",
            " ended" if alarm.ended else "",
        )
        await self.emit(alarm, reported_at=parse_time(p["timestamp"]))
        return {}

    async def on_notify_der_start_stop(self, p: Payload) -> Payload:
        event = DerControlStartStop(p["controlId"], p["started"], list(p.get("supersededIds") or ()))
        await self.emit(event, reported_at=parse_time(p["timestamp"]))
        return {}

    async def on_report_der_control(self, p: Payload) -> Payload:
        await self.emit(DerControlsReported(p["requestId"], reported_controls(p), bool(p.get("tbc"))))
        return {}

    async def on_get_certificate_chain_status(self, p: Payload) -> Payload:
        return await self.ctx.pki.chain_status(p["certificateStatusRequests"])

    # Every charger-initiated action of OCPP 2.1: 2.0.1's, and the 2.1 additions.
    ROUTES = {
        **Session201.ROUTES,
        "BatterySwap": swaps.on_battery_swap,
        "NotifyDERAlarm": on_notify_der_alarm,
        "NotifyDERStartStop": on_notify_der_start_stop,
        "ReportDERControl": on_report_der_control,
        "ClosePeriodicEventStream": _NO_STREAMS,
        "GetCertificateChainStatus": on_get_certificate_chain_status,
        "NotifyPriorityCharging": NotSupported(
            "priority charging is never offered (no UsePriorityCharging is sent), so there is nothing to note"
        ),
        "NotifySettlement": NotSupported(
            "no payment-terminal settlement: transactions are authorized by id token only"
        ),
        "OpenPeriodicEventStream": _NO_STREAMS,
        "PullDynamicScheduleUpdate": NotSupported(
            "no dynamic charging profiles are issued (power limits are static TxDefaultProfiles)"
        ),
        "VatNumberValidation": NotSupported("no billing behind the central system to check a VAT number"),
    }
