"""Handshake: subprotocols, registration, Basic auth, rate limits before hashing, takeover, TLS profiles."""

from __future__ import annotations

import asyncio
import logging
import ssl
from pathlib import Path
from unittest.mock import patch

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from chargeops import audit
from ocpp_gateway.auth import Verifier
from ops.fleet import add_charger
from ops.runtime import Runtime
from tests.conftest import StartRuntime
from tests.ocpp_client import RawCharger, basic, raw_charger
from tests.test_gateway_errors import metric

PASSWORD = "correct-horse-battery-staple"


async def register(runtime: Runtime, charger_id: str, **kw) -> None:  # type: ignore[no-untyped-def]
    async with runtime.sessions() as session, session.begin():
        await add_charger(session, charger_id, **kw)


async def refused(port: int, charger_id: str, **kw) -> int:  # type: ignore[no-untyped-def]
    kw.setdefault("subprotocols", ["ocpp1.6"])
    with pytest.raises(InvalidStatus) as info:
        async with connect(f"ws://127.0.0.1:{port}/ocpp/{charger_id}", **kw):
            pass
    return info.value.response.status_code


async def test_handshake_without_an_ocpp_subprotocol_is_refused(start_runtime: StartRuntime) -> None:
    runtime = await start_runtime(accept_unknown=True)
    before = metric("chargeops_handshakes_refused_total", reason="subprotocol")
    assert await refused(runtime.gateway.port, "CP1", subprotocols=["ocpp1.5", "chat"]) == 400  # type: ignore[union-attr]
    assert await refused(runtime.gateway.port, "CP1", subprotocols=None) == 400  # type: ignore[union-attr]
    assert metric("chargeops_handshakes_refused_total", reason="subprotocol") == before + 2


async def test_charger_picks_its_preferred_subprotocol(start_runtime: StartRuntime) -> None:
    runtime = await start_runtime(accept_unknown=True)
    url = f"ws://127.0.0.1:{runtime.gateway.port}/ocpp/CP1"  # type: ignore[union-attr]
    async with connect(url, subprotocols=["ocpp2.0.1", "ocpp1.6"]) as ws:  # type: ignore[list-item]
        assert ws.subprotocol == "ocpp2.0.1"


async def test_unknown_chargers_are_refused_unless_accept_unknown(start_runtime: StartRuntime) -> None:
    runtime = await start_runtime()
    before = metric("chargeops_handshakes_refused_total", reason="unknown_charger")
    assert await refused(runtime.gateway.port, "NOBODY") == 404  # type: ignore[union-attr]
    assert await refused(runtime.gateway.port, "bad/../id") == 404  # type: ignore[union-attr]
    assert metric("chargeops_handshakes_refused_total", reason="unknown_charger") == before + 1


async def test_basic_auth_password_and_user_must_match(start_runtime: StartRuntime) -> None:
    runtime = await start_runtime()
    await register(runtime, "CP-AUTH", password=PASSWORD)
    port = runtime.gateway.port  # type: ignore[union-attr]
    assert await refused(port, "CP-AUTH") == 401
    assert await refused(port, "CP-AUTH", additional_headers=basic("CP-AUTH", "wrong-password")) == 401
    assert await refused(port, "CP-AUTH", additional_headers=basic("CP-OTHER", PASSWORD)) == 401
    async with raw_charger(port, "CP-AUTH", additional_headers=basic("CP-AUTH", PASSWORD)) as cp:
        assert (await cp.boot())["status"] == "Accepted"
    assert metric("chargeops_handshakes_refused_total", reason="bad_credentials") >= 1
    assert metric("chargeops_handshakes_refused_total", reason="user_mismatch") >= 1


async def test_refused_handshakes_are_audited_without_the_password(
    start_runtime: StartRuntime, caplog: pytest.LogCaptureFixture
) -> None:
    """Issue 12.10: every refused handshake is one `chargeops.audit` line (charger id, address, reason,
    status; never what was sent as a password), at most `audit.BURST` a minute per address."""
    runtime = await start_runtime()
    await register(runtime, "CP-AUDIT", password=PASSWORD)
    port = runtime.gateway.port  # type: ignore[union-attr]
    audit.reset()
    with caplog.at_level(logging.WARNING, logger="chargeops.audit"):
        assert await refused(port, "NOBODY-AUDIT") == 404
        for i in range(15):
            status = await refused(
                port, "CP-AUDIT", additional_headers=basic("CP-AUDIT", f"guess-{i:04d}-xyz")
            )
            assert status in (401, 429)
    lines = [rec for rec in caplog.records if rec.name == "chargeops.audit"]
    assert len(lines) == audit.BURST
    assert lines[0].getMessage() == "handshake 404 refused for NOBODY-AUDIT from 127.0.0.1: unknown_charger"
    second = lines[1].getMessage()
    assert second == "handshake 401 refused for CP-AUDIT from 127.0.0.1: bad_credentials", second
    assert lines[1].charge_point_id == "CP-AUDIT" and lines[1].status == 401  # type: ignore[attr-defined]
    assert not any("guess-" in rec.getMessage() for rec in lines)


async def test_failed_logins_are_rate_limited_before_any_hash(start_runtime: StartRuntime) -> None:
    runtime = await start_runtime(login_failures_allowed=10, login_backoff_seconds=60)
    await register(runtime, "CP-RL", password=PASSWORD)
    port = runtime.gateway.port  # type: ignore[union-attr]
    for _ in range(10):
        assert await refused(port, "CP-RL", additional_headers=basic("CP-RL", "guess")) == 401
    with patch.object(Verifier, "verify", side_effect=AssertionError("hashed while blocked")) as verify:
        assert await refused(port, "CP-RL", additional_headers=basic("CP-RL", PASSWORD)) == 429
        assert not verify.called
    assert metric("chargeops_handshakes_refused_total", reason="rate_limited") >= 1


async def test_takeover_only_by_an_authenticated_connection(start_runtime: StartRuntime) -> None:
    runtime = await start_runtime()
    await register(runtime, "CP-T", password=PASSWORD)
    port = runtime.gateway.port  # type: ignore[union-attr]
    before = metric("chargeops_connection_takeovers_total")
    async with raw_charger(port, "CP-T", additional_headers=basic("CP-T", PASSWORD)) as first:
        await first.boot()
        # an impostor without the password is refused and the live session is untouched
        assert await refused(port, "CP-T", additional_headers=basic("CP-T", "nope")) == 401
        assert (await first.call("Heartbeat", {}))[0] == 3
        async with raw_charger(port, "CP-T", additional_headers=basic("CP-T", PASSWORD)) as second:
            with pytest.raises(ConnectionClosed):
                await first.call("Heartbeat", {})
            assert (await second.call("Heartbeat", {}))[0] == 3  # registration carries over
            assert runtime.gateway.sessions["CP-T"].auth.id == "CP-T"  # type: ignore[union-attr]
    assert metric("chargeops_connection_takeovers_total") == before + 1


async def test_accepted_registration_survives_a_restart(start_runtime: StartRuntime, sqlite_url: str) -> None:
    first = await start_runtime(accept_unknown=True)
    async with raw_charger(first.gateway.port, "CP-R", "ocpp2.0.1") as cp:  # type: ignore[union-attr]
        await cp.boot()
    await first.stop()
    second = await start_runtime(accept_unknown=True)
    async with raw_charger(second.gateway.port, "CP-R", "ocpp2.0.1") as cp:  # type: ignore[union-attr]
        assert (await cp.call("Heartbeat", {}))[0] == 3  # served without a new BootNotification


async def test_pending_policy_admits_unknown_chargers_as_pending(start_runtime: StartRuntime) -> None:
    runtime = await start_runtime(registration_policy="pending", boot_retry_interval=7)
    async with raw_charger(runtime.gateway.port, "CP-P") as cp:  # type: ignore[union-attr]
        boot = await cp.boot()
        assert boot["status"] == "Pending" and boot["interval"] == 7
        assert (await cp.call("Heartbeat", {}))[2] == "SecurityError"


# -- TLS (security profiles 2 and 3) ---------------------------------------------------------------------


async def test_security_profiles_2_and_3_over_tls(start_runtime: StartRuntime, pki: Path) -> None:
    runtime = await start_runtime(
        tls_cert=pki / "server.pem", tls_key=pki / "server.key", tls_client_ca=pki / "ca.pem"
    )
    await register(runtime, "CP-TLS2", password=PASSWORD, security_profile=2)
    await register(runtime, "CP-TLS3", security_profile=3)
    port = runtime.gateway.port  # type: ignore[union-attr]
    plain = ssl.create_default_context(cafile=str(pki / "ca.pem"))
    with_cert = ssl.create_default_context(cafile=str(pki / "ca.pem"))
    with_cert.load_cert_chain(str(pki / "client.pem"), str(pki / "client.key"))

    async def session(charger_id: str, ctx: ssl.SSLContext, **kw) -> RawCharger:  # type: ignore[no-untyped-def]
        ws = await connect(
            f"wss://127.0.0.1:{port}/ocpp/{charger_id}", subprotocols=["ocpp1.6"], ssl=ctx, **kw
        )  # type: ignore[list-item]
        return RawCharger(ws, "ocpp1.6")

    cp2 = await session("CP-TLS2", plain, additional_headers=basic("CP-TLS2", PASSWORD))
    assert (await cp2.boot())["status"] == "Accepted"
    await cp2.ws.close()
    cp3 = await session("CP-TLS3", with_cert)
    assert (await cp3.boot())["status"] == "Accepted"
    await cp3.ws.close()
    with pytest.raises(InvalidStatus):  # profile 3 without a client certificate
        await session("CP-TLS3", plain)
    with pytest.raises(InvalidStatus):  # profile 2 needs its password even with some certificate
        await session("CP-TLS2", with_cert)


async def test_tls_profiles_are_refused_over_plain_websocket(start_runtime: StartRuntime) -> None:
    runtime = await start_runtime()
    await register(runtime, "CP-NEEDS-TLS", password=PASSWORD, security_profile=2)
    port = runtime.gateway.port  # type: ignore[union-attr]
    before = metric("chargeops_handshakes_refused_total", reason="tls_required")
    assert await refused(port, "CP-NEEDS-TLS", additional_headers=basic("CP-NEEDS-TLS", PASSWORD)) == 401
    assert metric("chargeops_handshakes_refused_total", reason="tls_required") == before + 1


async def test_handshakes_beyond_the_backlog_are_told_to_retry(start_runtime: StartRuntime) -> None:
    runtime = await start_runtime(accept_unknown=True, handshake_backlog=0)
    before = metric("chargeops_handshakes_refused_total", reason="busy")
    assert await refused(runtime.gateway.port, "CP-STORM") == 503  # type: ignore[union-attr]
    assert metric("chargeops_handshakes_refused_total", reason="busy") == before + 1


async def test_a_reconnect_storm_is_admitted_in_bounded_batches(start_runtime: StartRuntime) -> None:
    runtime = await start_runtime(accept_unknown=True, handshake_concurrency=4)
    port = runtime.gateway.port  # type: ignore[union-attr]

    async def one(n: int) -> str:
        async with raw_charger(port, f"STORM{n:03d}") as cp:
            return str((await cp.boot())["status"])

    assert set(await asyncio.gather(*(one(n) for n in range(60)))) == {"Accepted"}


async def test_a_crowd_of_guesses_is_hashed_at_most_the_limit_and_the_charger_still_gets_in(
    start_runtime: StartRuntime,
) -> None:
    """Issue 12: 60 wrong passwords at once for one id hash at most `login_failures_allowed` of them (an
    attempt is counted before it is hashed), and meanwhile the genuine charger, presenting the password it
    last connected with, is let in."""
    import asyncio

    runtime = await start_runtime(login_failures_allowed=10, login_backoff_seconds=60)
    await register(runtime, "CP-CROWD", password=PASSWORD)
    port = runtime.gateway.port  # type: ignore[union-attr]
    async with raw_charger(port, "CP-CROWD", additional_headers=basic("CP-CROWD", PASSWORD)) as cp:
        await cp.boot()  # the genuine charger has connected once
    hashed = 0
    real_verify = Verifier.verify

    def counting(self: Verifier, charger_id: str, stored_hash: str, password: str) -> bool:
        nonlocal hashed
        hashed += 1
        return real_verify(self, charger_id, stored_hash, password)

    with patch.object(Verifier, "verify", counting):
        guesses = [
            refused(port, "CP-CROWD", additional_headers=basic("CP-CROWD", f"guess{i}")) for i in range(60)
        ]
        codes = await asyncio.gather(*guesses)
        assert hashed <= 10 and codes.count(429) >= 50, (hashed, codes)
        async with raw_charger(port, "CP-CROWD", additional_headers=basic("CP-CROWD", PASSWORD)) as cp:
            assert (await cp.boot())["status"] == "Accepted"


async def test_a_silently_dead_link_is_noticed_within_ping_interval_and_timeout(
    start_runtime: StartRuntime,
) -> None:
    """Issue 12: a charger that stops answering (its side reads nothing, so no pong) is dropped after
    `ws_ping_interval` + `ws_ping_timeout`, not after minutes."""
    import time

    from tests.waiting import until

    runtime = await start_runtime(accept_unknown=True, ws_ping_interval=0.5, ws_ping_timeout=0.5)
    gateway = runtime.gateway
    assert gateway is not None
    async with raw_charger(gateway.port, "CP-DEAD") as cp:
        await cp.boot()
        assert "CP-DEAD" in gateway.sessions
        cp.ws.transport.pause_reading()  # the link goes silent: pings arrive, nothing answers
        started = time.monotonic()
        await until(lambda: "CP-DEAD" not in gateway.sessions, timeout=10, what="the dead link dropped")
        assert time.monotonic() - started < 5  # 0.5 s ping + 0.5 s timeout + 2 s for a close never answered
        cp.ws.transport.resume_reading()


async def test_a_reconnect_over_a_half_open_link_is_served_at_once(start_runtime: StartRuntime) -> None:
    """Issue 12: the charger reconnects while its old link is half-open (the old socket reads nothing): the
    new connection is served at once, the old one closed beside it."""
    import asyncio
    import json
    import time

    runtime = await start_runtime(accept_unknown=True)
    gateway = runtime.gateway
    assert gateway is not None
    async with raw_charger(gateway.port, "CP-HALF") as old:
        await old.boot()
        old.ws.transport.pause_reading()  # half-open: the close the server sends is never answered
        async with raw_charger(gateway.port, "CP-HALF") as new:
            started = time.monotonic()
            await new.boot()
            session = gateway.sessions["CP-HALF"]
            sent = asyncio.create_task(session.execute("Reset", {"type": "Soft"}, timeout=5))
            call = await new.recv()
            await new.ws.send(json.dumps([3, call[1], {"status": "Accepted"}]))
            assert (await sent).outcome == "result"
            assert time.monotonic() - started < 1.5
        old.ws.transport.resume_reading()


async def test_a_handshake_waiting_too_long_is_shed_with_retry_after(
    start_runtime: StartRuntime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 12: a handshake that cannot get a slot in time is answered 503 with Retry-After and counted
    (`overloaded`), before websockets' open timeout would drop it with a bare TCP reset."""
    import asyncio

    from ocpp_gateway import server
    from ocpp_gateway.store import GatewayStore

    monkeypatch.setattr(server, "HANDSHAKE_WAIT", 0.3)
    runtime = await start_runtime(accept_unknown=True, handshake_concurrency=1)
    port = runtime.gateway.port  # type: ignore[union-attr]
    real = GatewayStore.charger

    async def slow(self: GatewayStore, charger_id: str) -> object:
        if charger_id == "CP-SLOW":
            await asyncio.sleep(1.5)  # holds the only slot
        return await real(self, charger_id)

    monkeypatch.setattr(GatewayStore, "charger", slow)
    before = metric("chargeops_handshakes_refused_total", reason="overloaded")
    holder = asyncio.create_task(refused_or_ok(port, "CP-SLOW"))
    await asyncio.sleep(0.1)
    with pytest.raises(InvalidStatus) as info:
        async with connect(f"ws://127.0.0.1:{port}/ocpp/CP-WAITS", subprotocols=["ocpp1.6"]):  # type: ignore[list-item]
            pass
    response = info.value.response
    assert response.status_code == 503 and 5 <= int(response.headers["Retry-After"]) < 30
    assert metric("chargeops_handshakes_refused_total", reason="overloaded") == before + 1
    assert await holder == 101  # the slow one still got in


async def refused_or_ok(port: int, charger_id: str) -> int:
    try:
        async with connect(f"ws://127.0.0.1:{port}/ocpp/{charger_id}", subprotocols=["ocpp1.6"]):  # type: ignore[list-item]
            return 101
    except InvalidStatus as exc:
        return exc.response.status_code
