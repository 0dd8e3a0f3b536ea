"""OCPP commands over HTTP: every CommandReply outcome maps to its status and body.

The charger side is a stand-in executor held on a real InProcessBus; end-to-end tests with simulated
chargers cover the gateway's part.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from telemetry.bus import CommandReply, InProcessBus
from tests.test_api_support import assert_error, bearer, issue_token

pytest_plugins = ("tests.test_api_support",)

Call = tuple[str, dict[str, Any], float]


class FakeCharger:
    """Answers every call with one prepared reply and remembers what it was sent."""

    def __init__(self, reply: CommandReply) -> None:
        self.reply = reply
        self.calls: list[Call] = []

    async def __call__(self, action: str, payload: dict[str, Any], timeout: float) -> CommandReply:
        self.calls.append((action, payload, timeout))
        return self.reply


@pytest.fixture
async def registered(admin: httpx.AsyncClient) -> str:
    assert (await admin.post("/api/chargers", json={"id": "CP-1"})).status_code == 201
    return "CP-1"


def held(bus: InProcessBus, reply: CommandReply) -> FakeCharger:
    charger = FakeCharger(reply)
    bus.hold("CP-1", charger)
    return charger


@pytest.mark.usefixtures("registered")
async def test_result_is_the_reply_exactly_as_sent(admin: httpx.AsyncClient, api_bus: InProcessBus) -> None:
    charger = held(
        api_bus, CommandReply("result", payload={"status": "Accepted", "statusInfo": {"reasonCode": "x"}})
    )
    r = await admin.post("/api/chargers/CP-1/ocpp/Reset", json={"type": "Immediate"})
    assert r.status_code == 200
    assert r.json() == {"response": {"status": "Accepted", "statusInfo": {"reasonCode": "x"}}}
    assert charger.calls == [("Reset", {"type": "Immediate"}, 7.0)]  # settings.call_timeout

    await admin.post("/api/chargers/CP-1/ocpp/ClearCache?timeout=2.5", json={})
    assert charger.calls[-1] == ("ClearCache", {}, 2.5)


@pytest.mark.usefixtures("registered")
@pytest.mark.parametrize(
    ("reply", "status", "body"),
    [
        (
            CommandReply("not_connected", description="charger CP-1 is not connected"),
            409,
            {"error": "not_connected", "detail": "charger CP-1 is not connected"},
        ),
        (
            CommandReply(
                "invalid",
                error_code="FormationViolation",
                description="data.type must be one of",
                details={"field": "type", "rule": "enum"},
            ),
            422,
            {
                "error": "invalid_payload",
                "detail": "data.type must be one of",
                "ocpp_error": "FormationViolation",
                "field": "type",
            },
        ),
        (
            CommandReply("invalid", error_code="UrlRefused", description="location: private address"),
            422,
            {
                "error": "url_refused",
                "detail": "location: private address",
                "ocpp_error": "UrlRefused",
                "field": None,
            },
        ),
        (
            CommandReply("invalid", description="Fly is not a CSMS-initiated OCPP 1.6 action"),
            422,
            {
                "error": "unknown_action",
                "detail": "Fly is not a CSMS-initiated OCPP 1.6 action",
                "ocpp_error": None,
                "field": None,
            },
        ),
        (
            CommandReply("error", error_code="NotSupported", description="no reset here", details={"why": 1}),
            502,
            {
                "error": "charger_error",
                "detail": "no reset here",
                "ocpp_error": "NotSupported",
                "details": {"why": 1},
            },
        ),
        (
            CommandReply(
                "bad_response",
                payload={"status": "Maybe"},
                error_code="FormationViolation",
                description="data.status must be one of",
            ),
            502,
            {
                "error": "invalid_charger_response",
                "detail": "data.status must be one of",
                "ocpp_error": "FormationViolation",
                "response": {"status": "Maybe"},
            },
        ),
        (
            CommandReply("timeout", description="no answer within 7 s"),
            504,
            {"error": "timeout", "detail": "no answer within 7 s"},
        ),
    ],
    ids=[
        "not_connected",
        "invalid_payload",
        "url_refused",
        "unknown_action",
        "error",
        "bad_response",
        "timeout",
    ],
)
async def test_outcomes_map_to_statuses(
    admin: httpx.AsyncClient, api_bus: InProcessBus, reply: CommandReply, status: int, body: dict[str, Any]
) -> None:
    held(api_bus, reply)
    r = await admin.post("/api/chargers/CP-1/ocpp/Reset", json={"type": "Hard"})
    assert r.status_code == status
    assert r.json() == body


@pytest.mark.usefixtures("registered")
async def test_nobody_holding_the_charger_is_409(admin: httpx.AsyncClient) -> None:
    assert_error(await admin.post("/api/chargers/CP-1/ocpp/Reset", json={}), 409, "not_connected")


async def test_unknown_charger_is_404_even_if_something_holds_it(
    admin: httpx.AsyncClient, api_bus: InProcessBus
) -> None:
    charger = held(api_bus, CommandReply("result"))
    assert_error(await admin.post("/api/chargers/CP-1/ocpp/Reset", json={}), 404, "not_found")
    assert charger.calls == []


@pytest.mark.usefixtures("registered")
@pytest.mark.parametrize(
    ("url", "content"),
    [
        ("/api/chargers/CP-1/ocpp/Reset", b"[1, 2]"),
        ("/api/chargers/CP-1/ocpp/Reset", b'"Hard"'),
        ("/api/chargers/CP-1/ocpp/Reset", b"{nope"),
        ("/api/chargers/CP-1/ocpp/Reset", b""),
        ("/api/chargers/CP-1/ocpp/Reset?timeout=0", b"{}"),
        ("/api/chargers/CP-1/ocpp/Reset?timeout=301", b"{}"),
        ("/api/chargers/CP-1/ocpp/Re-set", b"{}"),
    ],
)
async def test_bad_requests_never_reach_the_charger(
    admin: httpx.AsyncClient, api_bus: InProcessBus, url: str, content: bytes
) -> None:
    charger = held(api_bus, CommandReply("result"))
    r = await admin.post(url, content=content, headers={"content-type": "application/json"})
    assert_error(r, 422, "invalid_request")
    assert charger.calls == []


@pytest.mark.usefixtures("registered")
async def test_commands_need_the_operator_role(admin: httpx.AsyncClient, api_bus: InProcessBus) -> None:
    charger = held(api_bus, CommandReply("result"))
    for role in ("viewer", "crew"):
        headers = bearer(await issue_token(admin, role))
        assert_error(
            await admin.post("/api/chargers/CP-1/ocpp/Reset", json={}, headers=headers), 403, "forbidden"
        )
    operator = bearer(await issue_token(admin, "operator"))
    assert (await admin.post("/api/chargers/CP-1/ocpp/Reset", json={}, headers=operator)).status_code == 200
    assert len(charger.calls) == 1
