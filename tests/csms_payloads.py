"""A valid request for every CSMS-initiated action (1.6 with the security extension, and 2.0.1) that has no
side effect a test would have to wait out; used against the simulator alone and through the whole stack."""

from __future__ import annotations

import datetime as dt
from typing import Any

Payload = dict[str, Any]


def now_iso() -> str:
    return dt.datetime.now(dt.UTC).isoformat().replace("+00:00", "Z")


SOON = (dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)).isoformat().replace("+00:00", "Z")
HASH = {
    "hashAlgorithm": "SHA256",
    "issuerNameHash": "a" * 64,
    "issuerKeyHash": "b" * 64,
    "serialNumber": "01",
}
CV = {"component": {"name": "OCPPCommCtrlr"}, "variable": {"name": "HeartbeatInterval"}}
V16_CALLS: list[tuple[str, Payload]] = [
    ("ChangeAvailability", {"connectorId": 2, "type": "Inoperative"}),
    ("ChangeAvailability", {"connectorId": 2, "type": "Operative"}),
    ("UnlockConnector", {"connectorId": 1}),
    ("ClearCache", {}),
    ("DataTransfer", {"vendorId": "someone"}),
    ("DataTransfer", {"vendorId": "ChargeOps", "data": "x"}),
    (
        "SendLocalList",
        {
            "listVersion": 2,
            "updateType": "Full",
            "localAuthorizationList": [{"idTag": "A", "idTagInfo": {"status": "Accepted"}}],
        },
    ),
    ("GetLocalListVersion", {}),
    ("ReserveNow", {"connectorId": 2, "expiryDate": SOON, "idTag": "A", "reservationId": 4}),
    ("CancelReservation", {"reservationId": 4}),
    ("TriggerMessage", {"requestedMessage": "StatusNotification", "connectorId": 1}),
    ("TriggerMessage", {"requestedMessage": "MeterValues"}),
    ("TriggerMessage", {"requestedMessage": "FirmwareStatusNotification"}),
    ("TriggerMessage", {"requestedMessage": "DiagnosticsStatusNotification"}),
    ("ExtendedTriggerMessage", {"requestedMessage": "SignChargePointCertificate"}),
    ("ExtendedTriggerMessage", {"requestedMessage": "LogStatusNotification"}),
    ("InstallCertificate", {"certificateType": "CentralSystemRootCertificate", "certificate": "PEM"}),
    ("GetInstalledCertificateIds", {"certificateType": "CentralSystemRootCertificate"}),
    ("DeleteCertificate", {"certificateHashData": HASH}),
    ("CertificateSigned", {"certificateChain": "PEM-CHAIN"}),
    ("GetCompositeSchedule", {"connectorId": 0, "duration": 600, "chargingRateUnit": "A"}),
    ("ClearChargingProfile", {}),
    ("GetConfiguration", {}),
]
V201_CALLS: list[tuple[str, Payload]] = [
    ("ChangeAvailability", {"operationalStatus": "Inoperative", "evse": {"id": 2}}),
    ("ChangeAvailability", {"operationalStatus": "Operative"}),
    ("UnlockConnector", {"evseId": 1, "connectorId": 1}),
    ("ClearCache", {}),
    ("DataTransfer", {"vendorId": "someone"}),
    (
        "SendLocalList",
        {
            "versionNumber": 3,
            "updateType": "Full",
            "localAuthorizationList": [
                {"idToken": {"idToken": "A", "type": "ISO14443"}, "idTokenInfo": {"status": "Accepted"}}
            ],
        },
    ),
    ("GetLocalListVersion", {}),
    (
        "ReserveNow",
        {"id": 5, "expiryDateTime": SOON, "idToken": {"idToken": "A", "type": "ISO14443"}, "evseId": 2},
    ),
    ("CancelReservation", {"reservationId": 5}),
    ("TriggerMessage", {"requestedMessage": "StatusNotification", "evse": {"id": 1}}),
    ("TriggerMessage", {"requestedMessage": "MeterValues"}),
    ("TriggerMessage", {"requestedMessage": "FirmwareStatusNotification"}),
    ("TriggerMessage", {"requestedMessage": "SignChargingStationCertificate"}),
    ("GetReport", {"requestId": 1, "componentVariable": [{"component": {"name": "TxCtrlr"}}]}),
    ("GetBaseReport", {"requestId": 2, "reportBase": "ConfigurationInventory"}),
    (
        "SetVariableMonitoring",
        {"setMonitoringData": [{**CV, "value": 10.0, "type": "UpperThreshold", "severity": 5}]},
    ),
    ("GetMonitoringReport", {"requestId": 3}),
    ("ClearVariableMonitoring", {"id": [1, 99]}),
    ("SetMonitoringBase", {"monitoringBase": "All"}),
    ("SetMonitoringLevel", {"severity": 4}),
    (
        "SetNetworkProfile",
        {
            "configurationSlot": 1,
            "connectionData": {
                "ocppVersion": "OCPP20",
                "ocppTransport": "JSON",
                "ocppCsmsUrl": "wss://x/ocpp",
                "messageTimeout": 30,
                "securityProfile": 1,
                "ocppInterface": "Wired0",
            },
        },
    ),
    ("InstallCertificate", {"certificateType": "CSMSRootCertificate", "certificate": "PEM"}),
    ("GetInstalledCertificateIds", {"certificateType": ["CSMSRootCertificate"]}),
    ("DeleteCertificate", {"certificateHashData": HASH}),
    ("CertificateSigned", {"certificateChain": "PEM-CHAIN"}),
    ("GetTransactionStatus", {"transactionId": "nope"}),
    (
        "CustomerInformation",
        {"requestId": 4, "report": True, "clear": True, "idToken": {"idToken": "A", "type": "ISO14443"}},
    ),
    (
        "SetDisplayMessage",
        {"message": {"id": 1, "priority": "NormalCycle", "message": {"format": "UTF8", "content": "hello"}}},
    ),
    ("GetDisplayMessages", {"requestId": 5}),
    ("ClearDisplayMessage", {"id": 1}),
    ("CostUpdated", {"totalCost": 1.5, "transactionId": "nope"}),
    (
        "SetChargingProfile",
        {
            "evseId": 0,
            "chargingProfile": {
                "id": 1,
                "stackLevel": 0,
                "chargingProfilePurpose": "ChargingStationMaxProfile",
                "chargingProfileKind": "Absolute",
                "chargingSchedule": [
                    {
                        "id": 1,
                        "startSchedule": now_iso(),
                        "chargingRateUnit": "W",
                        "chargingSchedulePeriod": [{"startPeriod": 0, "limit": 7000.0}],
                    }
                ],
            },
        },
    ),
    (
        "GetChargingProfiles",
        {"requestId": 6, "chargingProfile": {"chargingProfilePurpose": "ChargingStationMaxProfile"}},
    ),
    ("GetCompositeSchedule", {"duration": 600, "evseId": 1}),
    ("ClearChargingProfile", {"chargingProfileId": 1}),
    ("PublishFirmware", {"location": "http://x/fw", "checksum": "abc", "requestId": 7}),
    ("UnpublishFirmware", {"checksum": "abc"}),
    ("Reset", {"type": "OnIdle", "evseId": 1}),
]
