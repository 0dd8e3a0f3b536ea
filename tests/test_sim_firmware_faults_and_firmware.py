"""Simulated charger firmware against a tiny in-test central system (tests/mini_csms.py): fault injection,
resets, firmware updates (and their failure), diagnostics and log uploads."""

from __future__ import annotations

import asyncio

import pytest

from firmware_stubs import EV
from tests.mini_csms import HttpSink, MiniCSMS, make, now_iso
from tests.waiting import until

pytest_plugins = ("tests.mini_csms",)


# --------------------------------------------------------------------------- faults
async def test_fault_injection_16_and_201(csms: MiniCSMS) -> None:
    cp16 = make(csms, "CPF16")
    cp201 = make(csms, "CPF201", "ocpp2.0.1")
    await asyncio.gather(cp16.start(), cp201.start())
    try:
        await cp16.wait_until_accepted(5)
        await cp201.wait_until_accepted(5)
        await cp16.plug_in(1, "T", ev=EV())
        await until(lambda: cp16.status(1) == "Charging")
        for cp in (cp16, cp201):
            cp.inject_fault(1, "GroundFailure", vendor_code="GF-42")
        await until(lambda: bool(csms.payloads("CPF201", "NotifyEvent")))
        await until(lambda: bool(csms.payloads("CPF16", "StopTransaction")))
        for cp in (cp16, cp201):
            cp.clear_fault(1)
        await until(lambda: len(csms.payloads("CPF201", "NotifyEvent")) == 2)
        await until(
            lambda: csms.payloads("CPF16", "StatusNotification")[-1]["status"] in ("Finishing", "Preparing")
        )
        with pytest.raises(ValueError):
            cp16.inject_fault(1, "Gremlins")
    finally:
        await asyncio.gather(cp16.stop(), cp201.stop())
    faulted = [s for s in csms.payloads("CPF16", "StatusNotification") if s["status"] == "Faulted"]
    assert faulted[0]["errorCode"] == "GroundFailure" and faulted[0]["vendorErrorCode"] == "GF-42"
    assert csms.payloads("CPF16", "StatusNotification")[-1]["errorCode"] == "NoError"
    assert csms.payloads("CPF16", "StopTransaction")[0]["reason"] == "Other"
    raised, cleared = csms.payloads("CPF201", "NotifyEvent")
    assert (
        raised["eventData"][0]["component"]["name"] == "RCD" and raised["eventData"][0]["techCode"] == "GF-42"
    )
    assert cleared["eventData"][0]["cleared"] is True
    statuses = [
        s["connectorStatus"] for s in csms.payloads("CPF201", "StatusNotification") if s["evseId"] == 1
    ]
    assert "Faulted" in statuses and statuses[-1] == "Available"
    assert cp16.schema_violations == [] and cp201.schema_violations == []


# --------------------------------------------------------------------------- reset & firmware
async def test_reset_reboots_16_and_201(csms: MiniCSMS) -> None:
    cp16 = make(csms, "CPR16", reboot_delay=0.2)
    cp201 = make(csms, "CPR201", "ocpp2.0.1", reboot_delay=0.2)
    await asyncio.gather(cp16.start(), cp201.start())
    try:
        await cp16.wait_until_accepted(5)
        await cp201.wait_until_accepted(5)
        await cp16.plug_in(1, "T", ev=EV())
        await until(lambda: cp16.transaction(1) is not None and cp16.queued == 0)
        assert (await csms.call("CPR16", "Reset", {"type": "Soft"}))[2] == {"status": "Accepted"}
        assert (await csms.call("CPR201", "Reset", {"type": "Immediate"}))[2] == {"status": "Accepted"}
        await until(lambda: csms.connects.get("CPR16") == 2 and csms.connects.get("CPR201") == 2)
        await cp16.wait_until_accepted(5)
        await cp201.wait_until_accepted(5)
    finally:
        await asyncio.gather(cp16.stop(), cp201.stop())
    assert csms.payloads("CPR16", "StopTransaction")[0]["reason"] == "SoftReset"
    assert len(csms.payloads("CPR16", "BootNotification")) == 2
    assert [b["reason"] for b in csms.payloads("CPR201", "BootNotification")] == ["PowerUp", "RemoteReset"]


async def test_firmware_update_sequence_and_failure(csms: MiniCSMS) -> None:
    async with HttpSink() as http:
        cp16 = make(csms, "CPFW", firmware_step=0.05, reboot_delay=0.1)
        cp201 = make(csms, "CPFW2", "ocpp2.0.1", firmware_step=0.05, reboot_delay=0.1)
        await asyncio.gather(cp16.start(), cp201.start())
        try:
            await cp16.wait_until_accepted(5)
            await cp201.wait_until_accepted(5)
            url = f"{http.url}/fw-2.0.0.bin"
            reply = await csms.call("CPFW", "UpdateFirmware", {"location": url, "retrieveDate": now_iso()})
            assert reply[2] == {}
            fw201 = {"location": url, "retrieveDateTime": now_iso()}
            reply = await csms.call("CPFW2", "UpdateFirmware", {"requestId": 9, "firmware": fw201})
            assert reply[2] == {"status": "Accepted"}
            await until(lambda: len(csms.payloads("CPFW", "BootNotification")) == 2)
            await until(lambda: len(csms.payloads("CPFW2", "BootNotification")) == 2)
            await cp16.wait_until_accepted(5)
            bad = {"location": "http://127.0.0.1:9/nothing.bin", "retrieveDate": now_iso()}
            await csms.call("CPFW", "UpdateFirmware", bad)
            await until(
                lambda: csms.payloads("CPFW", "FirmwareStatusNotification")[-1]["status"] == "DownloadFailed"
            )
        finally:
            await asyncio.gather(cp16.stop(), cp201.stop())
    steps = [p["status"] for p in csms.payloads("CPFW", "FirmwareStatusNotification")]
    assert steps == ["Downloading", "Downloaded", "Installing", "Installed", "Downloading", "DownloadFailed"]
    assert csms.payloads("CPFW", "BootNotification")[1]["firmwareVersion"] == "fw-2.0.0"
    assert cp16.firmware_version == "fw-2.0.0"
    steps201 = csms.payloads("CPFW2", "FirmwareStatusNotification")
    assert [p["status"] for p in steps201] == ["Downloading", "Downloaded", "Installing", "Installed"]
    assert all(p["requestId"] == 9 for p in steps201)
    assert csms.payloads("CPFW2", "BootNotification")[1]["reason"] == "FirmwareUpdate"
    assert cp16.schema_violations == [] and cp201.schema_violations == []


async def test_get_diagnostics_and_get_log_upload(csms: MiniCSMS) -> None:
    async with HttpSink() as http:
        cp16 = make(csms, "CPDIAG")
        cp201 = make(csms, "CPLOG", "ocpp2.0.1")
        await asyncio.gather(cp16.start(), cp201.start())
        try:
            await cp16.wait_until_accepted(5)
            await cp201.wait_until_accepted(5)
            reply = await csms.call("CPDIAG", "GetDiagnostics", {"location": f"{http.url}/upload"})
            assert reply[2]["fileName"].startswith("CPDIAG-diagnostics")
            log = {"remoteLocation": f"{http.url}/logs"}
            reply = await csms.call(
                "CPLOG", "GetLog", {"logType": "DiagnosticsLog", "requestId": 3, "log": log}
            )
            assert reply[2]["status"] == "Accepted"
            await until(lambda: len(csms.payloads("CPDIAG", "DiagnosticsStatusNotification")) == 2)
            await until(lambda: len(csms.payloads("CPLOG", "LogStatusNotification")) == 2)
            unreachable = await csms.call("CPDIAG", "GetDiagnostics", {"location": "http://127.0.0.1:9/x"})
            assert unreachable[0] == 3
            await until(lambda: len(csms.payloads("CPDIAG", "DiagnosticsStatusNotification")) == 4)
        finally:
            await asyncio.gather(cp16.stop(), cp201.stop())
    diag = [p["status"] for p in csms.payloads("CPDIAG", "DiagnosticsStatusNotification")]
    assert diag == ["Uploading", "Uploaded", "Uploading", "UploadFailed"]
    assert [p["status"] for p in csms.payloads("CPLOG", "LogStatusNotification")] == ["Uploading", "Uploaded"]
    paths = sorted(path for path, _ in http.uploads)
    assert paths == ["/logs", "/upload"]
    assert all(b"CPDIAG" in body or b"CPLOG" in body for _, body in http.uploads)
