"""Local authorization lists kept in step by chargeops (1.6 Local Auth List Management, 2.0.1 D01-D04) and
authorization caches cleared when a token is withdrawn (C11), against simulated chargers that keep a real
local list, on Postgres."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from chargeops.commands import (
    CLEAR_AUTH_CACHE,
    GET_LOCAL_AUTH_SETTINGS,
    GET_LOCAL_LIST_VERSION,
    SEND_LOCAL_LIST,
)
from chargeops.db.models import Transaction
from firmware_stubs import SimEnvironment, SimulatedCharger
from ocpp_gateway.batching import frame_bytes
from ocpp_gateway.commands import from_ocpp, to_ocpp
from ocpp_gateway.versions import V16, V21, V201, OcppVersion
from ops.runtime import Runtime
from tests.conftest import StartRuntime
from tests.ocpp_client import assert_strictly_valid, raw_charger
from tests.waiting import until

ADMIN = {"Authorization": "Bearer test-admin-token"}
SITE = "depot-1"
LATER = (datetime.now(UTC) + timedelta(days=30)).replace(microsecond=0)


class Stack:
    """A running chargeops, an API client and simulated chargers (strict: every frame schema-checked)."""

    def __init__(self, runtime: Runtime, api: httpx.AsyncClient) -> None:
        self.runtime = runtime
        self.api = api
        self.chargers: list[SimulatedCharger] = []
        self.env = SimEnvironment(strict=True, backoff_base=0.2, backoff_cap=1.0)

    async def charger(self, cp_id: str, protocol: str, site: str = SITE, **config: str) -> SimulatedCharger:
        password = "sim-password-1234"
        r = await self.api.post("/api/chargers", json={"id": cp_id, "password": password, "site": site})
        assert r.status_code == 201, r.text
        url = f"ws://127.0.0.1:{self.runtime.gateway.port}/ocpp"  # type: ignore[union-attr]
        cp = SimulatedCharger(cp_id, url, protocol=protocol, password=password, env=self.env)
        for key, value in config.items():
            cp.config.put(key, value)
        self.chargers.append(cp)
        await cp.start()
        await cp.wait_until_accepted(10)
        return cp

    async def token(self, token: str, status: str = "Accepted", **extra: Any) -> None:
        r = await self.api.put(f"/api/id-tokens/{token}", json={"status": status, **extra})
        assert r.status_code in (200, 201), r.text

    async def sync(self, cp_id: str, **query: Any) -> dict[str, Any]:
        r = await self.api.post(f"/api/chargers/{cp_id}/local-list/sync", params=query)
        assert r.status_code == 200, r.text
        return dict(r.json())

    async def state(self, cp_id: str) -> dict[str, Any]:
        r = await self.api.get(f"/api/chargers/{cp_id}/local-list")
        assert r.status_code == 200, r.text
        return dict(r.json())


@pytest.fixture
async def stack(start_runtime: StartRuntime, pg_url: str) -> AsyncIterator[Stack]:
    runtime = await start_runtime(pg_url, call_timeout=10.0)
    async with httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{runtime.http_port}", headers=ADMIN, timeout=30
    ) as api:
        s = Stack(runtime, api)
        yield s
        for cp in s.chargers:
            await cp.stop()
        for cp in s.chargers:
            assert cp.schema_violations == [], cp.schema_violations


def sent_lists(cp: SimulatedCharger) -> list[dict[str, Any]]:
    return [p for action, p in cp.received_calls if action == "SendLocalList"]


async def test_tc_d_01_02_03_full_then_differential_updates_2_0_1(stack: Stack) -> None:
    """TC_D_01_CSMS (Full), TC_D_02_CSMS (Differential update), TC_D_03_CSMS (Differential remove): the
    first sync sends the whole list with status, group and expiry; a token change marks the list stale and
    the next sync sends only the change; a deleted token goes as an entry without idTokenInfo."""
    await stack.token("CARD-A", group_id="FLEET", expiry=LATER.isoformat())
    await stack.token("CARD-B", "Blocked")
    cp = await stack.charger("LL-201", "ocpp2.0.1")
    assert (await stack.state("LL-201"))["state"] == "never"

    first = await stack.sync("LL-201")
    assert first["state"] == "in_step" and first["update"] == "Full" and first["result"] == "Accepted"
    assert first["version"] == 1 and first["entries_sent"] == 2
    assert cp.local_list == {"CARD-A": "Accepted", "CARD-B": "Blocked"} and cp.local_list_version == 1
    full = sent_lists(cp)[-1]
    assert full["updateType"] == "Full" and full["versionNumber"] == 1
    a = next(e for e in full["localAuthorizationList"] if e["idToken"]["idToken"] == "CARD-A")
    assert a["idTokenInfo"]["groupIdToken"] == {"idToken": "FLEET", "type": "Central"}
    assert a["idTokenInfo"]["cacheExpiryDateTime"].startswith(LATER.strftime("%Y-%m-%dT%H:%M:%S"))
    view = await stack.state("LL-201")
    assert view["state"] == "in_step" and view["version"] == 1 and view["entries"] == 2
    assert view["supports"]["list_enabled"] is True and view["supports"]["items_per_message"] == 100

    assert (await stack.sync("LL-201"))["result"] == "InStep"  # nothing changed: nothing sent
    assert len(sent_lists(cp)) == 1

    await stack.token("CARD-C")
    assert (await stack.state("LL-201"))["state"] == "stale"
    second = await stack.sync("LL-201")
    assert second["update"] == "Differential" and second["version"] == 2 and second["entries_sent"] == 1
    diff = sent_lists(cp)[-1]
    assert diff["updateType"] == "Differential" and diff["versionNumber"] == 2
    assert [e["idToken"]["idToken"] for e in diff["localAuthorizationList"]] == ["CARD-C"]

    # a deleted (withdrawn) card is taken off at once, without waiting for an operator's sync
    assert (await stack.api.delete("/api/id-tokens/CARD-C")).status_code == 204
    await until(lambda: "CARD-C" not in cp.local_list, what="CARD-C off the list")
    removal = sent_lists(cp)[-1]
    assert removal["updateType"] == "Differential" and removal["versionNumber"] == 3
    assert removal["localAuthorizationList"] == [{"idToken": {"idToken": "CARD-C", "type": "ISO14443"}}]
    assert cp.local_list == {"CARD-A": "Accepted", "CARD-B": "Blocked"} and cp.local_list_version == 3
    await until(lambda: _state_is(stack, "LL-201", "in_step", 3), what="in step at version 3")


async def _state_is(stack: Stack, cp_id: str, state: str, version: int) -> bool:
    view = await stack.state(cp_id)
    return bool(view["state"] == state and view["version"] == version)


async def test_1_6_full_update_is_chunked_to_send_local_list_max_length(stack: Stack) -> None:
    """1.6: idTagInfo with parentIdTag and expiryDate; SendLocalListMaxLength 2 splits five tokens into a
    Full update and two Differential ones with rising versions (D01.FR.11's rule, also 1.6's limit)."""
    for n in range(5):
        await stack.token(f"TAG-{n}", group_id="GRP" if n == 0 else None, expiry=LATER.isoformat())
    cp = await stack.charger("LL-16", "ocpp1.6", SendLocalListMaxLength="2")
    result = await stack.sync("LL-16")
    assert result["state"] == "in_step" and result["messages"] == 3 and result["entries_sent"] == 5
    calls = sent_lists(cp)
    assert [(c["updateType"], c["listVersion"], len(c["localAuthorizationList"])) for c in calls] == [
        ("Full", 1, 2),
        ("Differential", 2, 2),
        ("Differential", 3, 1),
    ]
    first = calls[0]["localAuthorizationList"][0]
    assert first["idTag"] == "TAG-0" and first["idTagInfo"]["parentIdTag"] == "GRP"
    assert first["idTagInfo"]["expiryDate"].startswith(LATER.strftime("%Y-%m-%dT%H:%M:%S"))
    assert cp.local_list == {f"TAG-{n}": "Accepted" for n in range(5)} and cp.local_list_version == 3
    assert (await stack.state("LL-16"))["version"] == 3


async def test_tc_d_01_full_update_fits_bytes_per_message_2_0_1(stack: Stack) -> None:
    """2.0.1 LocalAuthListCtrlr.BytesPerMessage (read with the other list settings): every SendLocalList
    CALL frame fits it, so six tokens that would go in one message by ItemsPerMessage go in a Full update
    and Differential ones with rising versions, all on the list in the end. A station whose limit no
    entry fits gets none: the sync fails saying so."""
    for n in range(6):
        await stack.token(f"CARD-BYTES-{n:02d}", group_id="FLEET-WITH-A-LONG-NAME")
    cp = await stack.charger("LL-BYTES", "ocpp2.0.1", BytesPerMessage="450")
    result = await stack.sync("LL-BYTES")
    assert result["state"] == "in_step" and result["entries_sent"] == 6, result
    calls = sent_lists(cp)
    assert all(frame_bytes("SendLocalList", c) <= 450 for c in calls)
    assert len(calls) == result["messages"] > 1
    assert [c["updateType"] for c in calls] == ["Full"] + ["Differential"] * (len(calls) - 1)
    assert [c["versionNumber"] for c in calls] == list(range(1, len(calls) + 1))
    assert cp.local_list == {f"CARD-BYTES-{n:02d}": "Accepted" for n in range(6)}
    assert (await stack.state("LL-BYTES"))["version"] == len(calls) == cp.local_list_version

    tiny = await stack.charger("LL-TINY", "ocpp2.0.1", BytesPerMessage="150")
    refused = await stack.sync("LL-TINY")
    assert refused["state"] == "failed" and "TooLargeElement" in refused["detail"], refused
    assert refused["entries_sent"] == 0
    assert sent_lists(tiny) == []


async def test_a_charger_with_another_version_gets_a_full_update(stack: Stack) -> None:
    """The charger's list version is not the one we confirmed (a list installed by someone else, a reset):
    the next sync is Full, above both versions."""
    await stack.token("T1")
    cp = await stack.charger("LL-OTHER", "ocpp2.0.1")
    await stack.sync("LL-OTHER")
    cp.send_local_list(41, True, [("STRANGER", "Accepted")])
    result = await stack.sync("LL-OTHER")
    assert result["update"] == "Full" and result["version"] == 42
    assert cp.local_list == {"T1": "Accepted"}


async def test_version_mismatch_to_a_differential_update_sends_a_full_one(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """TC_043 (1.6) VersionMismatch: a charger that refuses the differential update gets the whole list."""
    await stack.token("V1")
    cp = await stack.charger("LL-VM", "ocpp1.6")
    await stack.sync("LL-VM")
    await stack.token("V2")
    real = SimulatedCharger.send_local_list

    def refuse_differential(self: SimulatedCharger, version: int, full: bool, entries: Any) -> str:
        return real(self, version, full, entries) if full else "VersionMismatch"

    monkeypatch.setattr(SimulatedCharger, "send_local_list", refuse_differential)
    result = await stack.sync("LL-VM")
    assert result["update"] == "Full" and result["result"] == "Accepted" and result["state"] == "in_step"
    assert [c["updateType"] for c in sent_lists(cp)] == ["Full", "Differential", "Full"]
    assert cp.local_list == {"V1": "Accepted", "V2": "Accepted"}
    assert result["version"] == cp.local_list_version == 3


async def test_unsupported_and_failed_lists_are_reported(stack: Stack) -> None:
    """TC_043_1 (1.6 NotSupported): a charger with its local list disabled is `unsupported`; a list longer
    than the charger holds is not sent and the sync is `failed` with the reason; a 2.0.1 station that
    answers Failed is `failed`."""
    await stack.token("U1")
    await stack.token("U2")
    await stack.charger("LL-OFF", "ocpp1.6", LocalAuthListEnabled="false")
    off = await stack.sync("LL-OFF")
    assert off["state"] == "unsupported" and off["result"] == "NotSupported"
    view = await stack.state("LL-OFF")
    assert view["state"] == "unsupported" and view["supports"]["list_enabled"] is False

    small = await stack.charger("LL-SMALL", "ocpp1.6", LocalAuthListMaxLength="1")
    too_long = await stack.sync("LL-SMALL")
    assert too_long["state"] == "failed" and too_long["result"] == "too_long" and sent_lists(small) == []
    assert "local_list_groups" in (await stack.state("LL-SMALL"))["last_sync"]["detail"]

    failing = await stack.charger("LL-FAIL", "ocpp2.0.1")
    assert (await stack.sync("LL-FAIL"))["state"] == "in_step"  # its settings read: list enabled
    failing.config.put("LocalAuthListEnabled", "false")  # switched off on site: the station now refuses
    await stack.token("U3")
    refused = await stack.sync("LL-FAIL")
    assert refused["state"] == "failed" and refused["result"] == "Failed" and "Disabled" in refused["detail"]
    view = await stack.state("LL-FAIL")
    assert view["state"] == "failed" and view["version"] == 1 and view["last_sync"]["result"] == "Failed"


async def test_blocked_token_clears_caches_and_updates_lists_at_once(stack: Stack) -> None:
    """TC_C_37-style ClearCache on the chargers a blocked card was used at (2.0.1 only with AuthCacheCtrlr
    enabled), and the lists holding it get the Blocked status at once, without an operator's sync."""
    await stack.token("STOLEN")
    await stack.token("OTHER")
    old = await stack.charger("LL-C16", "ocpp1.6")
    new = await stack.charger("LL-C201", "ocpp2.0.1")
    no_cache = await stack.charger("LL-NOCACHE", "ocpp2.0.1", AuthorizationCacheEnabled="false")
    unused = await stack.charger("LL-UNUSED", "ocpp1.6")
    for cp_id in ("LL-C16", "LL-C201", "LL-NOCACHE", "LL-UNUSED"):
        await stack.sync(cp_id)
    async with stack.runtime.sessions() as session, session.begin():
        for n, cp_id in enumerate(("LL-C16", "LL-C201", "LL-NOCACHE")):
            session.add(
                Transaction(charger_id=cp_id, transaction_id=f"TX{n}", id_token="STOLEN", active=False)
            )

    await stack.token("STOLEN", "Blocked")

    def cleared(cp: SimulatedCharger) -> bool:
        return any(action == "ClearCache" for action, _ in cp.received_calls)

    await until(lambda: cleared(old) and cleared(new), what="ClearCache on the chargers it was used at")
    for cp in (old, new, no_cache, unused):
        await until(lambda cp=cp: cp.local_list.get("STOLEN") == "Blocked", what=f"{cp.id}'s list")
    assert not cleared(no_cache) and not cleared(unused)
    assert (await stack.state("LL-UNUSED"))["state"] == "in_step"

    await stack.token("OTHER", "Accepted", group_id="G")  # still Accepted: stale, no urgent work
    assert (await stack.state("LL-C16"))["state"] == "stale"
    assert old.local_list.get("OTHER") == "Accepted"


async def test_fleet_sync_by_site_and_api_errors(stack: Stack) -> None:
    await stack.token("F1")
    a = await stack.charger("LL-S1", "ocpp1.6")
    b = await stack.charger("LL-S2", "ocpp2.0.1", site="depot-2")
    r = await stack.api.post("/api/local-list/sync", json={"site": SITE})
    assert r.status_code == 200, r.text
    body = r.json()
    assert [i["charger_id"] for i in body["items"]] == ["LL-S1"] and body["counts"] == {"in_step": 1}
    assert a.local_list == {"F1": "Accepted"} and b.local_list == {}
    r = await stack.api.post("/api/local-list/sync")
    assert {i["charger_id"] for i in r.json()["items"]} == {"LL-S1", "LL-S2"}
    assert b.local_list == {"F1": "Accepted"}

    assert (await stack.api.post("/api/chargers/NOPE/local-list/sync")).status_code == 404
    assert (await stack.api.get("/api/chargers/NOPE/local-list")).status_code == 404
    assert (await stack.api.post("/api/chargers", json={"id": "LL-OFFLINE"})).status_code == 201
    r = await stack.api.post("/api/chargers/LL-OFFLINE/local-list/sync")
    assert r.status_code == 409 and r.json()["error"] == "not_connected"
    assert (await stack.state("LL-OFFLINE"))["state"] == "never"  # nothing learned, nothing stored
    r = await stack.api.post("/api/local-list/sync", json={"site": SITE, "bogus": 1})
    assert r.status_code == 422 and "error" in r.json()


async def test_automatic_sync_keeps_lists_in_step(start_runtime: StartRuntime, pg_url: str) -> None:
    """With `local_list_sync_interval`, a connecting charger gets its list and a changed token reaches it
    without an operator; `local_list_groups` limits the list to a group's tokens."""
    runtime = await start_runtime(pg_url, local_list_sync_interval=0.3, local_list_groups="FLEET")
    async with httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{runtime.http_port}", headers=ADMIN, timeout=30
    ) as api:
        stack = Stack(runtime, api)
        await stack.token("FLEET")  # the group token itself
        await stack.token("MEMBER", group_id="FLEET")
        await stack.token("STRANGER")
        cp = await stack.charger("LL-AUTO", "ocpp2.0.1")
        try:
            await until(lambda: cp.local_list == {"FLEET": "Accepted", "MEMBER": "Accepted"}, what="list")
            await stack.token("NEWBIE", group_id="FLEET")
            await until(lambda: "NEWBIE" in cp.local_list, what="the new member on the list")
            assert "STRANGER" not in cp.local_list
            await until(lambda: _in_step(stack), what="in step again")
        finally:
            await cp.stop()


async def _in_step(stack: Stack) -> bool:
    return (await stack.state("LL-AUTO"))["state"] == "in_step"


async def test_tc_042_1_a_charger_refusing_get_local_list_version_is_unsupported(stack: Stack) -> None:
    """A real WebSocket client that has the list enabled but answers GetLocalListVersion with CALLERROR
    NotSupported: reported `unsupported`, nothing sent."""
    assert (await stack.api.post("/api/chargers", json={"id": "LL-RAW"})).status_code == 201
    port = stack.runtime.gateway.port  # type: ignore[union-attr]
    async with raw_charger(port, "LL-RAW") as cp:
        await cp.boot()
        syncing = asyncio.create_task(stack.api.post("/api/chargers/LL-RAW/local-list/sync"))
        ask = await cp.recv()
        assert ask[2] == "GetConfiguration" and "LocalAuthListEnabled" in ask[3]["key"]
        keys = [{"key": "LocalAuthListEnabled", "readonly": False, "value": "true"}]
        await cp.ws.send(json.dumps([3, ask[1], {"configurationKey": keys, "unknownKey": ["Other"]}]))
        version = await cp.recv()
        assert version[2] == "GetLocalListVersion"
        await cp.ws.send(json.dumps([4, version[1], "NotSupported", "no local list here", {}]))
        r = await syncing
    assert r.status_code == 200 and r.json()["state"] == "unsupported", r.text
    view = await stack.state("LL-RAW")
    assert view["supports"]["list_enabled"] is True and view["supports"]["max_length"] is None
    assert view["last_sync"]["result"] == "error" and "NotSupported" in view["last_sync"]["detail"]


@pytest.mark.parametrize("version", [V16, V201, V21])
def test_neutral_local_auth_commands_are_what_each_schema_says(version: OcppVersion) -> None:
    """The gateway's translations validate against the official schemas (an implementation independent of
    the gateway's); a removal in a full update and a version of 0 are refused before anything is sent."""
    protocol = version.subprotocol
    entries = [
        {
            "id_token": "A",
            "type": "ISO14443",
            "status": "Blocked",
            "expiry": LATER.isoformat(),
            "group_id": "G",
        },
        {"id_token": "B", "type": "Central"},
    ]
    for action, payload in (
        (SEND_LOCAL_LIST, {"version": 4, "full": False, "entries": entries}),
        (SEND_LOCAL_LIST, {"version": 5, "full": True, "entries": []}),
        (GET_LOCAL_AUTH_SETTINGS, {}),
        (GET_LOCAL_LIST_VERSION, {}),
        (CLEAR_AUTH_CACHE, {}),
    ):
        name, call = to_ocpp(version, action, payload)
        assert_strictly_valid(protocol, name, call, response=False)
    for bad in ({"version": 0, "full": True}, {"version": 3, "full": True, "entries": [{"id_token": "X"}]}):
        with pytest.raises(ValueError):
            to_ocpp(version, SEND_LOCAL_LIST, bad)
    answer = (
        {"configurationKey": [{"key": "SendLocalListMaxLength", "readonly": True, "value": "7"}]}
        if version is V16
        else {
            "getVariableResult": [
                {
                    "attributeStatus": "Accepted",
                    "component": {"name": "AuthCacheCtrlr"},
                    "variable": {"name": "Enabled"},
                    "attributeValue": "FALSE",
                },
                {
                    "attributeStatus": "UnknownComponent",
                    "component": {"name": "LocalAuthListCtrlr"},
                    "variable": {"name": "Enabled"},
                },
            ]
        }
    )
    settings = from_ocpp(GET_LOCAL_AUTH_SETTINGS, answer)
    if version is V16:
        assert settings["items_per_message"] == 7 and settings["list_enabled"] is None
    else:
        assert settings["cache_enabled"] is False and settings["list_enabled"] is None
