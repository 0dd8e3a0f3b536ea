"""One valid request for every charger-initiated action of each OCPP version (checked against the official
schemas by the test that uses them), so every answer the gateway can give is exercised."""

from __future__ import annotations

from typing import Any

T = "2026-11-25T10:00:00.000Z"

V16: dict[str, dict[str, Any]] = {
    "BootNotification": {"chargePointVendor": "Test", "chargePointModel": "Raw", "firmwareVersion": "1.0"},
    "Heartbeat": {},
    "StatusNotification": {"connectorId": 1, "errorCode": "NoError", "status": "Available", "timestamp": T},
    "Authorize": {"idTag": "TAG1"},
    "StartTransaction": {"connectorId": 1, "idTag": "TAG1", "meterStart": 1000, "timestamp": T},
    "MeterValues": {
        "connectorId": 1,
        "transactionId": 1,
        "meterValue": [
            {
                "timestamp": T,
                "sampledValue": [
                    {"value": "1500", "measurand": "Energy.Active.Import.Register", "unit": "Wh"},
                    {"value": "7200", "measurand": "Power.Active.Import", "unit": "W"},
                    {"value": "16.1", "measurand": "Current.Import", "phase": "L1", "unit": "A"},
                    {"value": "230.2", "measurand": "Voltage", "phase": "L1-N", "unit": "V"},
                    {"value": "55", "measurand": "SoC", "unit": "Percent", "location": "EV"},
                ],
            }
        ],
    },
    "StopTransaction": {
        "transactionId": 1,
        "meterStop": 2500,
        "timestamp": T,
        "idTag": "TAG1",
        "reason": "Local",
    },
    "DataTransfer": {"vendorId": "com.example", "messageId": "hello", "data": "x"},
    "DiagnosticsStatusNotification": {"status": "Uploaded"},
    "FirmwareStatusNotification": {"status": "Installed"},
    "SecurityEventNotification": {"type": "FirmwareUpdated", "timestamp": T, "techInfo": "ok"},
    "SignCertificate": {"csr": "-----BEGIN CERTIFICATE REQUEST-----"},
    "LogStatusNotification": {"status": "Uploaded", "requestId": 1},
    "SignedFirmwareStatusNotification": {"status": "Installed", "requestId": 1},
}

_EVSE = {"id": 1, "connectorId": 1}
_METER = [{"timestamp": T, "sampledValue": [{"value": 1000.0, "context": "Transaction.Begin"}]}]

V201: dict[str, dict[str, Any]] = {
    "BootNotification": {"reason": "PowerUp", "chargingStation": {"vendorName": "Test", "model": "Raw"}},
    "Heartbeat": {},
    "StatusNotification": {"timestamp": T, "connectorStatus": "Available", "evseId": 1, "connectorId": 1},
    "Authorize": {"idToken": {"idToken": "TAG1", "type": "ISO14443"}},
    "TransactionEvent": {
        "eventType": "Started",
        "timestamp": T,
        "triggerReason": "Authorized",
        "seqNo": 0,
        "transactionInfo": {"transactionId": "tx-1"},
        "idToken": {"idToken": "TAG1", "type": "ISO14443"},
        "evse": _EVSE,
        "meterValue": _METER,
    },
    "MeterValues": {"evseId": 1, "meterValue": _METER},
    "NotifyEvent": {
        "generatedAt": T,
        "seqNo": 0,
        "eventData": [
            {
                "eventId": 1,
                "timestamp": T,
                "trigger": "Delta",
                "actualValue": "true",
                "eventNotificationType": "HardWiredNotification",
                "component": {"name": "Connector", "evse": _EVSE},
                "variable": {"name": "Problem"},
            }
        ],
    },
    "NotifyReport": {
        "requestId": 1,
        "generatedAt": T,
        "seqNo": 0,
        "reportData": [
            {
                "component": {"name": "ChargingStation"},
                "variable": {"name": "Model"},
                "variableAttribute": [{"value": "Raw"}],
            }
        ],
    },
    "NotifyMonitoringReport": {"requestId": 1, "seqNo": 0, "generatedAt": T},
    "NotifyChargingLimit": {"chargingLimit": {"chargingLimitSource": "EMS"}},
    "ClearedChargingLimit": {"chargingLimitSource": "EMS"},
    "NotifyCustomerInformation": {"data": "none", "seqNo": 0, "generatedAt": T, "requestId": 1},
    "NotifyDisplayMessages": {"requestId": 1},
    "NotifyEVChargingNeeds": {"evseId": 1, "chargingNeeds": {"requestedEnergyTransfer": "DC"}},
    "NotifyEVChargingSchedule": {
        "timeBase": T,
        "evseId": 1,
        "chargingSchedule": {
            "id": 1,
            "chargingRateUnit": "W",
            "chargingSchedulePeriod": [{"startPeriod": 0, "limit": 11000.0}],
        },
    },
    "PublishFirmwareStatusNotification": {"status": "Published", "location": ["https://fw.example.com/x"]},
    "ReportChargingProfiles": {
        "requestId": 1,
        "chargingLimitSource": "CSO",
        "evseId": 1,
        "chargingProfile": [
            {
                "id": 1,
                "stackLevel": 0,
                "chargingProfilePurpose": "TxDefaultProfile",
                "chargingProfileKind": "Absolute",
                "chargingSchedule": [
                    {
                        "id": 1,
                        "chargingRateUnit": "W",
                        "chargingSchedulePeriod": [{"startPeriod": 0, "limit": 11000.0}],
                    }
                ],
            }
        ],
    },
    "ReservationStatusUpdate": {"reservationId": 1, "reservationUpdateStatus": "Expired"},
    "SecurityEventNotification": {"type": "FirmwareUpdated", "timestamp": T},
    "SignCertificate": {"csr": "-----BEGIN CERTIFICATE REQUEST-----"},
    "Get15118EVCertificate": {
        "iso15118SchemaVersion": "urn:iso:15118:2:2013:MsgDef",
        "action": "Install",
        "exiRequest": "AAAA",
    },
    "GetCertificateStatus": {
        "ocspRequestData": {
            "hashAlgorithm": "SHA256",
            "issuerNameHash": "a",
            "issuerKeyHash": "b",
            "serialNumber": "c",
            "responderURL": "https://ocsp.example.com",
        }
    },
    "DataTransfer": {"vendorId": "com.example", "messageId": "hello"},
    "FirmwareStatusNotification": {"status": "Installed", "requestId": 1},
    "LogStatusNotification": {"status": "Uploaded", "requestId": 1},
}


def started_event(token: dict[str, str], tx: str = "TX-C") -> dict[str, Any]:
    """A 2.0.1 TransactionEvent Started on EVSE 1 with `token`, transaction id `tx`."""
    return {
        "eventType": "Started",
        "timestamp": "2026-11-25T10:00:00Z",
        "triggerReason": "Authorized",
        "seqNo": 0,
        "transactionInfo": {"transactionId": tx},
        "evse": {"id": 1, "connectorId": 1},
        "idToken": token,
    }
