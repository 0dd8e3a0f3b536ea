"""Simulated charger firmware against a tiny in-test central system (tests/mini_csms.py): strict mode
catching invalid CSMS responses, the right CALLERROR for invalid and unknown calls, a schema-valid answer to
every CSMS action."""

from __future__ import annotations

import asyncio

import pytest

from chargeops.pki.csr import check_csr
from firmware_stubs import EV
from tests.csms_payloads import V16_CALLS, V201_CALLS
from tests.mini_csms import MiniCSMS, Payload, make
from tests.waiting import until

pytest_plugins = ("tests.mini_csms",)


# --------------------------------------------------------------------------- strictness & errors
async def test_strict_mode_catches_invalid_csms_response() -> None:
    async with MiniCSMS() as csms:
        csms.overrides["Heartbeat"] = lambda cp, p: {"currentTime": "yesterday at noon"}
        csms.overrides["Authorize"] = lambda cp, p: {"idTagInfo": {"status": "Maybe"}}
        cp = make(csms, "CPSTRICT")
        await cp.start()
        try:
            await cp.wait_until_accepted(5)
            await csms.call("CPSTRICT", "TriggerMessage", {"requestedMessage": "Heartbeat"})
            await cp.plug_in(1, "T", ev=EV())
            await until(lambda: len(cp.schema_violations) >= 2)
        finally:
            await cp.stop()
    joined = "\n".join(cp.schema_violations)
    assert "received HeartbeatResponse: currentTime" in joined
    assert "received AuthorizeResponse" in joined


async def test_invalid_and_unknown_csms_calls_get_the_right_callerror(csms: MiniCSMS) -> None:
    cp16 = make(csms, "CPERR", strict=False)
    cp201 = make(csms, "CPERR2", "ocpp2.0.1", strict=False)
    await asyncio.gather(cp16.start(), cp201.start())
    try:
        await cp16.wait_until_accepted(5)
        await cp201.wait_until_accepted(5)
        assert (await csms.call("CPERR", "Reset", {"type": "Warm"}))[2] == "PropertyConstraintViolation"
        assert (await csms.call("CPERR", "Reset", {}))[2] == "OccurenceConstraintViolation"
        assert (await csms.call("CPERR", "Reset", {"type": 5}))[2] == "TypeConstraintViolation"
        assert (await csms.call("CPERR", "FlyToTheMoon", {}))[2] == "NotImplemented"
        assert (await csms.call("CPERR2", "Reset", {}))[2] == "OccurrenceConstraintViolation"
        assert (await csms.call("CPERR2", "Reset", {"type": "Immediate", "x": 1}))[2] == "FormatViolation"
        assert (await csms.call("CPERR2", "FlyToTheMoon", {}))[2] == "NotImplemented"
    finally:
        await asyncio.gather(cp16.stop(), cp201.stop())


# ------------------------------------------------------------------- every CSMS action answers validly


@pytest.mark.parametrize(("protocol", "calls"), [("ocpp1.6", V16_CALLS), ("ocpp2.0.1", V201_CALLS)])
async def test_every_csms_action_gets_a_schema_valid_answer(
    csms: MiniCSMS, protocol: str, calls: list[tuple[str, Payload]]
) -> None:
    cp_id = "CPALL" + protocol[-3:].replace(".", "")
    cp = make(csms, cp_id, protocol)
    await cp.start()
    try:
        await cp.wait_until_accepted(5)
        for action, payload in calls:
            reply = await csms.call(cp_id, action, payload)
            assert reply[0] == 3, (action, reply)
        await until(lambda: cp.queued == 0)
    finally:
        await cp.stop()
    assert cp.schema_violations == []
    assert cp.local_list_version in (2, 3)
    if protocol == "ocpp2.0.1":
        assert csms.payloads(cp_id, "NotifyCustomerInformation") and csms.payloads(
            cp_id, "NotifyDisplayMessages"
        )
        assert csms.payloads(cp_id, "ReportChargingProfiles") and csms.payloads(
            cp_id, "NotifyMonitoringReport"
        )
    else:
        signs = csms.payloads(cp_id, "SignCertificate")
        assert signs
        # a real CSR, as the built-in CA checks it (CN = the id, O = the default organization, key size)
        check_csr(signs[0]["csr"], cp_id, "chargeops")
