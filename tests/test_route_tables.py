"""One visible route table per OCPP version: every charger-initiated action the version defines maps to its
handler, a fixed store-only answer, or an explicit "answered NotSupported because …".

Which actions are charger-initiated is the specifications' direction (charging station → central system),
written here independently of the gateway: OCPP 1.6 §4 "Operations initiated by Charge Point" and the 1.6
security whitepaper's additions; OCPP 2.0.1 part 2 and OCPP 2.1 part 2, the messages a Charging Station
sends. Each is a CALL with a request schema among the `ocpp` library's packaged schemas."""

from __future__ import annotations

import inspect

import pytest

from chargeops.events import Reported
from ocpp_gateway.routes import NotSupported, StoreOnly
from ocpp_gateway.server import SESSION_CLASSES
from ocpp_gateway.versions import OcppVersion
from tests.gateway_memory import MemoryCharger

_V16 = (
    "Authorize BootNotification DataTransfer DiagnosticsStatusNotification FirmwareStatusNotification "
    "Heartbeat MeterValues StartTransaction StatusNotification StopTransaction"
)
_V16_SECURITY = (
    "LogStatusNotification SecurityEventNotification SignCertificate SignedFirmwareStatusNotification"
)
_V201 = (
    "Authorize BootNotification ClearedChargingLimit DataTransfer FirmwareStatusNotification "
    "Get15118EVCertificate GetCertificateStatus Heartbeat LogStatusNotification MeterValues "
    "NotifyChargingLimit NotifyCustomerInformation NotifyDisplayMessages NotifyEVChargingNeeds "
    "NotifyEVChargingSchedule NotifyEvent NotifyMonitoringReport NotifyReport "
    "PublishFirmwareStatusNotification ReportChargingProfiles ReservationStatusUpdate "
    "SecurityEventNotification SignCertificate StatusNotification TransactionEvent"
)
_V21_ADDED = (
    "BatterySwap ClosePeriodicEventStream GetCertificateChainStatus NotifyDERAlarm NotifyDERStartStop "
    "NotifyPriorityCharging NotifySettlement OpenPeriodicEventStream PullDynamicScheduleUpdate "
    "ReportDERControl VatNumberValidation"
)
CHARGER_INITIATED = {
    "ocpp1.6": frozenset(f"{_V16} {_V16_SECURITY}".split()),
    "ocpp2.0.1": frozenset(_V201.split()),
    "ocpp2.1": frozenset(f"{_V201} {_V21_ADDED}".split()),
}
# NotifyPeriodicEventStream (2.1) is charger-initiated too, but a SEND: no request schema, never answered.
PROTOCOLS = sorted(CHARGER_INITIATED)


def schema_actions(version: OcppVersion) -> set[str]:
    """Actions with both a request and a response schema in the `ocpp` library."""
    return {
        a for a in version.known_actions() if all(version.schema_path(a, r).is_file() for r in (False, True))
    }


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_every_charger_initiated_action_is_routed(protocol: str) -> None:
    session = SESSION_CLASSES[protocol]
    version = session.version
    spec = CHARGER_INITIATED[protocol]
    assert spec <= schema_actions(version), spec - schema_actions(version)
    assert version.charger_actions == spec  # what the gateway believes is initiated by whom
    routed = set(session.ROUTES)
    assert routed == spec, {"missing": spec - routed, "extra": routed - spec}
    for action, route in session.ROUTES.items():
        if isinstance(route, NotSupported):
            assert len(route.why) > 20, f"{action}: say why it is not supported"
        else:
            assert isinstance(route, StoreOnly) or inspect.iscoroutinefunction(route), action


def test_what_is_not_supported_is_said() -> None:
    refused = {
        protocol: sorted(a for a, r in cls.ROUTES.items() if isinstance(r, NotSupported))
        for protocol, cls in SESSION_CLASSES.items()
    }
    assert refused == {
        "ocpp1.6": [],
        "ocpp2.0.1": [],
        "ocpp2.1": [
            "ClosePeriodicEventStream",
            "NotifyPriorityCharging",
            "NotifySettlement",
            "OpenPeriodicEventStream",
            "PullDynamicScheduleUpdate",
            "VatNumberValidation",
        ],
    }


async def test_a_refused_action_is_answered_with_its_reason() -> None:
    cp = MemoryCharger("ocpp2.1")
    frame = await cp.call("VatNumberValidation", {"vatNumber": "DE123456789"})
    why = SESSION_CLASSES["ocpp2.1"].ROUTES["VatNumberValidation"]
    assert isinstance(why, NotSupported)
    assert frame[0] == 4 and frame[2] == "NotSupported" and frame[3] == f"VatNumberValidation: {why.why}"
    # an action of the other direction, and one the version does not define
    assert (await cp.call("Reset", {"type": "Immediate"}))[2:4] == [
        "NotSupported",
        "Reset is not supported from a charger",
    ]
    assert (await cp.call("Frobnicate", {}))[2] == "NotImplemented"
    assert cp.bus.events == []  # nothing refused is stored


async def test_store_only_actions_are_stored_as_sent() -> None:
    cp = MemoryCharger("ocpp2.0.1")
    payload = {"chargingLimitSource": "EMS", "evseId": 1}
    assert await cp.result("ClearedChargingLimit", payload) == {}
    assert cp.bodies(Reported) == [Reported("ClearedChargingLimit", payload)]
