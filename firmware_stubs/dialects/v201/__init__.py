"""OCPP 2.0.1 dialect: TransactionEvent, device model (components/variables), NotifyEvent faults.

Cut by concern: ``messages`` (what the charger sends), ``device_model`` (components and variables),
``monitoring`` (variable monitors) and ``handlers`` (every other CSMS-initiated call). Each connector N of
the core is EVSE N with a single connector 1.
"""

from __future__ import annotations

from firmware_stubs.dialects.v201.handlers import V201Handlers
from firmware_stubs.dialects.v201.monitoring import V201Monitoring
from firmware_stubs.model import COMMON_KEYS, KeyDef


class V201(V201Handlers, V201Monitoring):
    version = "2.0.1"
    subprotocol = "ocpp2.0.1"
    config_defs = {
        **COMMON_KEYS,
        "MessageTimeout": KeyDef("30", kind="int"),
        "NetworkConfigurationPriority": KeyDef("0", kind="csv"),
        "OfflineThreshold": KeyDef("60", kind="int"),
        "TxEndedInterval": KeyDef("0", kind="int"),
        "TxStartPoint": KeyDef("PowerPathClosed", readonly=True, kind="csv"),
        "TxStopPoint": KeyDef("PowerPathClosed", readonly=True, kind="csv"),
        "ItemsPerMessage": KeyDef("50", readonly=True, kind="int"),
        "BytesPerMessage": KeyDef("65000", readonly=True, kind="int"),
        "SecurityProfile": KeyDef("1", readonly=True, kind="int"),
        "OrganizationName": KeyDef("chargeops"),  # the O of its CSRs: the built-in CA's default
        "TimeSource": KeyDef("Heartbeat", kind="csv"),
    }
    profile_purposes = {
        "ChargingStationMaxProfile": "max",
        "TxDefaultProfile": "txdefault",
        "TxProfile": "tx",
        "ChargingStationExternalConstraints": "external",
    }


__all__ = ["V201"]
