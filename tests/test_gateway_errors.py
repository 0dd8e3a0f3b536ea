"""Bad input from a charger: every kind gets its defined answer, is counted, and never disturbs others."""

from __future__ import annotations

import asyncio
import logging

import pytest
from prometheus_client import REGISTRY
from websockets.exceptions import ConnectionClosed

from tests.conftest import StartRuntime
from tests.ocpp_client import raw_charger


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


V16_STATUS = {"connectorId": 1, "errorCode": "NoError", "status": "Available"}
V201_STATUS = {
    "timestamp": "2026-11-25T10:00:00Z",
    "connectorStatus": "Available",
    "evseId": 1,
    "connectorId": 1,
}

# (protocol, raw frame, expected message id, expected CALLERROR code)
BAD_FRAMES = [
    ("ocpp1.6", "not json", "-1", "FormationViolation"),
    ("ocpp2.0.1", "not json", "-1", "FormatViolation"),
    ("ocpp2.0.1", '[2, "abc", "Heartbeat", {}', "abc", "FormatViolation"),
    ("ocpp1.6", '{"a": 1}', "-1", "ProtocolError"),
    ("ocpp2.0.1", '{"a": 1}', "-1", "RpcFrameworkError"),
    ("ocpp2.0.1", '[2, "x1"]', "x1", "RpcFrameworkError"),
    ("ocpp2.0.1", '[2, 17, "Heartbeat", {}]', "-1", "RpcFrameworkError"),
    ("ocpp2.0.1", '[2, "x2", "Heartbeat", []]', "x2", "FormatViolation"),
    ("ocpp1.6", '[2, "x3", "Heartbeat", "payload"]', "x3", "FormationViolation"),
    ("ocpp1.6", '[9, "x4", "Heartbeat", {}]', "x4", "ProtocolError"),
    ("ocpp2.0.1", '[9, "x5", "Heartbeat", {}]', "x5", "MessageTypeNotSupported"),
    ("ocpp2.0.1", '["2", "x6", "Heartbeat", {}]', "x6", "RpcFrameworkError"),
    ("ocpp2.0.1", '[2, "' + "i" * 37 + '", "Heartbeat", {}]', "-1", "RpcFrameworkError"),
]


@pytest.mark.parametrize(("protocol", "frame", "unique_id", "code"), BAD_FRAMES)
async def test_malformed_frames_get_the_versions_callerror(
    start_runtime: StartRuntime, protocol: str, frame: str, unique_id: str, code: str
) -> None:
    runtime = await start_runtime(accept_unknown=True)
    before = metric("chargeops_ocpp_frames_rejected_total", reason=code)
    async with raw_charger(runtime.gateway.port, "CP-BAD", protocol) as cp:  # type: ignore[union-attr]
        await cp.boot()
        answer = await cp.send_raw(frame)
        assert answer[:3] == [4, unique_id, code]
        assert isinstance(answer[3], str) and isinstance(answer[4], dict)
        assert (await cp.call("Heartbeat", {}))[0] == 3  # the connection is still fine
    assert metric("chargeops_ocpp_frames_rejected_total", reason=code) == before + 1


# (protocol, action, payload, expected code)
BAD_PAYLOADS = [
    (
        "ocpp1.6",
        "StatusNotification",
        {"connectorId": 1, "status": "Available"},
        "OccurenceConstraintViolation",
    ),
    ("ocpp2.0.1", "StatusNotification", {**V201_STATUS, "evseId": None}, "TypeConstraintViolation"),
    ("ocpp1.6", "StatusNotification", {**V16_STATUS, "connectorId": "one"}, "TypeConstraintViolation"),
    ("ocpp1.6", "StatusNotification", {**V16_STATUS, "status": "Sleeping"}, "PropertyConstraintViolation"),
    (
        "ocpp2.0.1",
        "StatusNotification",
        {**V201_STATUS, "connectorStatus": "Sleeping"},
        "PropertyConstraintViolation",
    ),
    ("ocpp1.6", "StatusNotification", {**V16_STATUS, "extra": 1}, "FormationViolation"),
    ("ocpp2.0.1", "StatusNotification", {**V201_STATUS, "extra": 1}, "FormatViolation"),
    ("ocpp2.0.1", "StatusNotification", {**V201_STATUS, "timestamp": "yesterday"}, "TypeConstraintViolation"),
    ("ocpp1.6", "Authorize", {"idTag": "X" * 21}, "TypeConstraintViolation"),
    (
        "ocpp2.0.1",
        "BootNotification",
        {"reason": "Bored", "chargingStation": {"model": "M", "vendorName": "V"}},
        "PropertyConstraintViolation",
    ),
    ("ocpp2.0.1", "MeterValues", {"evseId": 1, "meterValue": []}, "OccurrenceConstraintViolation"),
    ("ocpp1.6", "FooBar", {}, "NotImplemented"),
    ("ocpp2.0.1", "FooBar", {}, "NotImplemented"),
    ("ocpp1.6", "RemoteStartTransaction", {"idTag": "X"}, "NotSupported"),
    (
        "ocpp2.0.1",
        "RequestStartTransaction",
        {"idToken": {"idToken": "X", "type": "Central"}, "remoteStartId": 1},
        "NotSupported",
    ),
]


@pytest.mark.parametrize(("protocol", "action", "payload", "code"), BAD_PAYLOADS)
async def test_bad_payloads_get_the_right_callerror(
    start_runtime: StartRuntime, protocol: str, action: str, payload: dict, code: str
) -> None:
    runtime = await start_runtime(accept_unknown=True)
    before = metric("chargeops_ocpp_call_errors_total", code=code, direction="out")
    async with raw_charger(runtime.gateway.port, "CP-BAD", protocol) as cp:  # type: ignore[union-attr]
        await cp.boot()
        answer = await cp.call(action, payload)
        assert answer[0] == 4 and answer[2] == code, answer
    assert metric("chargeops_ocpp_call_errors_total", code=code, direction="out") == before + 1


@pytest.mark.parametrize("protocol", ["ocpp1.6", "ocpp2.0.1"])
async def test_calls_before_an_accepted_boot_get_security_error(
    start_runtime: StartRuntime, protocol: str
) -> None:
    runtime = await start_runtime(accept_unknown=True)
    async with raw_charger(runtime.gateway.port, "CP-NEW", protocol) as cp:  # type: ignore[union-attr]
        answer = await cp.call("Heartbeat", {})
        assert answer[0] == 4 and answer[2] == "SecurityError"
        await cp.boot()
        assert (await cp.call("Heartbeat", {}))[0] == 3


async def test_oversized_frame_closes_with_1009(start_runtime: StartRuntime) -> None:
    runtime = await start_runtime(accept_unknown=True, max_frame_bytes=4096)
    async with raw_charger(runtime.gateway.port, "CP-BIG", "ocpp1.6", max_size=None) as cp:  # type: ignore[union-attr]
        await cp.boot()
        big = '[2,"b","DataTransfer",{"vendorId":"x","data":"' + "x" * 8000 + '"}]'
        await cp.ws.send(big)
        with pytest.raises(ConnectionClosed):
            await cp.recv()
        assert cp.ws.close_code == 1009


async def test_garbage_from_one_charger_does_not_disturb_another(start_runtime: StartRuntime) -> None:
    runtime = await start_runtime(accept_unknown=True)
    port = runtime.gateway.port  # type: ignore[union-attr]
    async with (
        raw_charger(port, "CP-NOISY", "ocpp2.0.1") as noisy,
        raw_charger(port, "CP-CALM", "ocpp1.6") as calm,
    ):
        await noisy.boot()
        await calm.boot()

        async def spew() -> int:
            answered = 0
            for i in range(300):
                answer = await noisy.send_raw(["{", "[]", f'[2,"n{i}","Nope",{{}}]'][i % 3])
                answered += answer[0] == 4
            return answered

        async def work() -> int:
            return sum([(await calm.call("Heartbeat", {}))[0] == 3 for _ in range(100)])

        answered, ok = await asyncio.gather(spew(), work())
        assert answered == 300 and ok == 100


async def test_every_session_log_line_names_the_charge_point(
    start_runtime: StartRuntime, caplog: pytest.LogCaptureFixture
) -> None:
    runtime = await start_runtime(accept_unknown=True)
    caplog.set_level("INFO", logger="chargeops.gateway")
    async with raw_charger(runtime.gateway.port, "CP-LOG", "ocpp2.0.1") as cp:  # type: ignore[union-attr]
        await cp.boot()
        await cp.send_raw("nonsense")
        await cp.call("FooBar", {})
    records = [
        r for r in caplog.records if r.name == "chargeops.gateway" and "listening" not in r.getMessage()
    ]
    assert len(records) >= 4  # connected, boot, two refusals (and disconnected)
    assert all(getattr(r, "charge_point_id", None) == "CP-LOG" for r in records)
    assert all("cp=CP-LOG" in r.getMessage() for r in records)


async def test_a_flood_of_bad_frames_is_counted_but_logged_a_few_times(
    start_runtime: StartRuntime, caplog: pytest.LogCaptureFixture
) -> None:
    """Issue 12: 30 malformed frames get 30 CALLERRORs and 30 counts, but only the first 5 log lines."""
    runtime = await start_runtime(accept_unknown=True)
    before = metric("chargeops_ocpp_frames_rejected_total", reason="FormationViolation")
    with caplog.at_level(logging.WARNING, logger="chargeops.gateway"):
        async with raw_charger(runtime.gateway.port, "CP-FLOOD") as cp:  # type: ignore[union-attr]
            for _ in range(30):
                assert (await cp.send_raw("not json"))[0] == 4
    lines = [r for r in caplog.records if "bad frame answered" in r.getMessage()]
    assert len(lines) == 5
    assert metric("chargeops_ocpp_frames_rejected_total", reason="FormationViolation") == before + 30
