"""OCPP 2.0.1 monitoring: variable monitors, the monitoring base and level, and the monitoring report.

Monitors are stored and reported, not evaluated: crossing one raises no NotifyEvent.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from firmware_stubs.dialects.base import Payload
from firmware_stubs.dialects.v201.device_model import V201DeviceModel
from firmware_stubs.model import iso, utc_now

if TYPE_CHECKING:
    from firmware_stubs.charger import SimulatedCharger


class V201Monitoring(V201DeviceModel):
    """Set/ClearVariableMonitoring, SetMonitoringBase/Level, GetMonitoringReport (on device variables)."""

    def on_SetVariableMonitoring(self, cp: SimulatedCharger, p: Payload) -> Payload:
        monitors = cp.device.monitors
        results = []
        for item in p["setMonitoringData"]:
            status, _, _ = self._lookup(cp, item["component"], item["variable"])
            result: Payload = {
                "status": status,
                "type": item["type"],
                "severity": item["severity"],
                "component": item["component"],
                "variable": item["variable"],
            }
            if status == "Accepted":
                monitor_id = item.get("id") or max(monitors, default=0) + 1
                monitors[monitor_id] = item
                result["id"] = monitor_id
            results.append(result)
        return {"setMonitoringResult": results}

    def on_ClearVariableMonitoring(self, cp: SimulatedCharger, p: Payload) -> Payload:
        monitors = cp.device.monitors
        results = [{"id": i, "status": "Accepted" if monitors.pop(i, None) else "NotFound"} for i in p["id"]]
        return {"clearMonitoringResult": results}

    def on_SetMonitoringBase(self, cp: SimulatedCharger, p: Payload) -> Payload:
        cp.device.monitoring_base = p["monitoringBase"]
        return {"status": "Accepted"}

    def on_SetMonitoringLevel(self, cp: SimulatedCharger, p: Payload) -> Payload:
        cp.device.monitoring_level = p["severity"]
        return {"status": "Accepted"}

    def on_GetMonitoringReport(self, cp: SimulatedCharger, p: Payload) -> Payload:
        monitors = cp.device.monitors
        if not monitors:
            return {"status": "EmptyResultSet"}
        report = [
            {
                "component": m["component"],
                "variable": m["variable"],
                "variableMonitoring": [
                    {
                        "id": i,
                        "transaction": m.get("transaction", False),
                        "value": m["value"],
                        "type": m["type"],
                        "severity": m["severity"],
                    }
                ],
            }
            for i, m in monitors.items()
        ]
        payload = {"requestId": p["requestId"], "seqNo": 0, "generatedAt": iso(utc_now()), "tbc": False}
        cp.emit("NotifyMonitoringReport", {**payload, "monitor": report}, triggered=True)
        return {"status": "Accepted"}
