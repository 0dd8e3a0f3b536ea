"""OCPP 2.1 dialect: 2.0.1 plus what swap stations (part 2, section S: battery swapping) and bidirectional
chargers (block R: DER control) need.

Everything 2.0.1 has keeps its 2.0.1 shape in 2.1, so this only adds those messages and validates against the
2.1 schemas (``version``). DER payloads are plain dicts spelled as the schema spells them (``fixedPF...``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from firmware_stubs import rpc
from firmware_stubs.dialects.base import Payload
from firmware_stubs.dialects.v201 import V201
from firmware_stubs.model import MEASURANDS, V2X_MEASURANDS, KeyDef, iso, utc_now

if TYPE_CHECKING:
    from firmware_stubs.charger import SimulatedCharger
    from firmware_stubs.der import DerControl

_ALLOWED = MEASURANDS + V2X_MEASURANDS


def _v2x(cp: SimulatedCharger) -> None:
    if cp.max_discharge_w <= 0:
        raise rpc.CallError("NotSupported", "not a bidirectional charger: no DER control")


class V21(V201):
    version = "2.1"
    subprotocol = "ocpp2.1"
    config_defs = {
        **V201.config_defs,
        "MeterValuesSampledData": KeyDef(",".join(MEASURANDS), kind="csv", allowed=_ALLOWED, max_items=10),
        "StopTxnSampledData": KeyDef(
            "Energy.Active.Import.Register", kind="csv", allowed=_ALLOWED, max_items=10
        ),
    }

    def battery_swap(self, cp: SimulatedCharger, payload: Payload) -> None:
        cp.emit("BatterySwap", payload, transactional=True)

    def on_RequestBatterySwap(self, cp: SimulatedCharger, p: Payload) -> Payload:
        from firmware_stubs.swap_station import SwapStation

        if not isinstance(cp, SwapStation):
            raise rpc.CallError("NotSupported", "not a battery-swap station")
        return {"status": "Accepted" if cp.request_swap(p["requestId"], p["idToken"]) else "Rejected"}

    # ------------------------------------------------------------------ DER control (block R)
    def on_SetDERControl(self, cp: SimulatedCharger, p: Payload) -> Payload:
        _v2x(cp)
        answer = cp.der_controls.set(p, utc_now())
        cp.log.info("SetDERControl %s %s: %s", p["controlType"], p["controlId"], answer["status"])
        self.der_tick(cp)  # a control whose window is already open starts now
        return answer

    def on_GetDERControl(self, cp: SimulatedCharger, p: Payload) -> Payload:
        _v2x(cp)
        found = cp.der_controls.select(p)
        if not found:
            return {"status": "NotFound"}
        cp.emit("ReportDERControl", cp.der_controls.report(p["requestId"], found), triggered=True)
        return {"status": "Accepted"}

    def on_ClearDERControl(self, cp: SimulatedCharger, p: Payload) -> Payload:
        _v2x(cp)
        removed = cp.der_controls.clear(p)
        for control in removed:
            if control.running:
                self._start_stop(cp, control, started=False)
        return {"status": "Accepted" if removed else "NotFound"}

    def der_tick(self, cp: SimulatedCharger) -> None:
        for control, started in cp.der_controls.transitions(utc_now()):
            self._start_stop(cp, control, started=started)

    def _start_stop(self, cp: SimulatedCharger, control: DerControl, *, started: bool) -> None:
        payload: Payload = {"controlId": control.id, "started": started, "timestamp": iso(utc_now())}
        if started and control.supersedes:
            payload["supersededIds"] = control.supersedes[:24]
        cp.emit("NotifyDERStartStop", payload)

    def der_alarm(self, cp: SimulatedCharger, control_type: str, fault: str, *, ended: bool) -> None:
        payload: Payload = {
            "controlType": control_type,
            "gridEventFault": fault,
            "alarmEnded": ended,
            "timestamp": iso(utc_now()),
            "extraInfo": f"{fault} ended; discharge resumes" if ended else f"{fault}: discharge tripped",
        }
        cp.emit("NotifyDERAlarm", payload, transactional=True)
