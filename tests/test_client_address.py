"""Behind a TLS-terminating load balancer (`--trusted-proxies`): the failed-login limit keys by the charger's
own address, so one attacker behind the balancer cannot lock every charger out; forged hops are ignored."""

from __future__ import annotations

import pytest
from websockets.asyncio.client import connect

from chargeops.settings import Settings, parse_networks
from ocpp_gateway.client_address import client_address, forwarded_proto
from tests.conftest import StartRuntime
from tests.ocpp_client import basic
from tests.test_gateway_handshake import PASSWORD, refused, register

LB = parse_networks("10.0.0.0/8, 127.0.0.1")


def test_a_trusted_proxy_names_the_client_and_nobody_else_does() -> None:
    xff = [("X-Forwarded-For", "198.51.100.7")]
    assert client_address("10.1.2.3", xff, LB) == "198.51.100.7"
    assert client_address("203.0.113.9", xff, LB) == "203.0.113.9"  # not a proxy of ours: header ignored
    assert client_address("10.1.2.3", xff, ()) == "10.1.2.3"  # trust none (the default)
    # What the client wrote left of the last untrusted hop is not believed; inner proxies are skipped.
    forged = [("X-Forwarded-For", "6.6.6.6, 198.51.100.7, 10.9.9.9")]
    assert client_address("10.1.2.3", forged, LB) == "198.51.100.7"
    # RFC 7239, IPv6 with a port; several header lines in order.
    assert client_address("10.1.2.3", [("Forwarded", 'for="[2001:db8::1]:4711";proto=https')], LB) == (
        "2001:db8::1"
    )
    two = [("X-Forwarded-For", "198.51.100.7"), ("X-Forwarded-For", "192.0.2.4")]
    assert client_address("10.1.2.3", two, LB) == "192.0.2.4"
    # A garbled header from the proxy: keep the proxy's address rather than guess.
    assert client_address("10.1.2.3", [("X-Forwarded-For", "unknown")], LB) == "10.1.2.3"
    assert client_address("10.1.2.3", [], LB) == "10.1.2.3"


def test_tls_at_the_balancer_is_believed_from_a_trusted_proxy_only() -> None:
    """Security profile 2 behind a TLS-terminating balancer: `https` only as the nearest trusted proxy says it
    (tests/test_tls_balancer.py runs it behind a real HAProxy)."""
    https = [("X-Forwarded-Proto", "https")]
    assert forwarded_proto("10.1.2.3", https, LB) == "https"
    assert forwarded_proto("203.0.113.9", https, LB) is None  # an untrusted peer's word
    assert forwarded_proto("10.1.2.3", https, ()) is None  # trust none (the default)
    assert forwarded_proto("10.1.2.3", [], LB) is None
    # A proxy that appends: the client's own "https" is left of the proxy's "http".
    assert forwarded_proto("10.1.2.3", [("X-Forwarded-Proto", "https, http")], LB) == "http"
    # RFC 7239: the element of the rightmost hop that is not a trusted proxy, through inner proxies.
    chain = [
        ("Forwarded", 'for=6.6.6.6;proto=http, for="[2001:db8::1]:4711";proto=https, for=10.9.9.9;proto=http')
    ]
    assert forwarded_proto("10.1.2.3", chain, LB) == "https"
    forged = [("Forwarded", "for=198.51.100.7;proto=https"), ("Forwarded", "for=198.51.100.7;proto=http")]
    assert forwarded_proto("10.1.2.3", forged, LB) == "http"
    # Headers that disagree, or an element without proto: not believed.
    assert forwarded_proto("10.1.2.3", [*https, ("Forwarded", "for=198.51.100.7;proto=http")], LB) is None
    assert forwarded_proto("10.1.2.3", [("Forwarded", "for=198.51.100.7")], LB) is None


def test_a_bad_trusted_proxy_entry_is_refused_naming_it() -> None:
    with pytest.raises(ValueError, match=r"10\.0\.0\.300"):
        Settings(trusted_proxies="10.0.0.0/8, 10.0.0.300")


async def test_one_guesser_behind_the_balancer_does_not_lock_the_others_out(
    start_runtime: StartRuntime,
) -> None:
    # The test's connections all come from 127.0.0.1: the "load balancer".
    runtime = await start_runtime(
        login_failures_allowed=3, login_backoff_seconds=60, trusted_proxies="127.0.0.1/32"
    )
    await register(runtime, "CP-LB", password=PASSWORD)
    port = runtime.gateway.port  # type: ignore[union-attr]
    attacker = {"X-Forwarded-For": "203.0.113.66"}
    for n in range(3):  # guesses at other ids, so only the address limit can stop them
        headers = {**basic(f"NOBODY{n}", "guess"), **attacker}
        assert await refused(port, f"NOBODY{n}", additional_headers=headers) in (401, 404)
    assert await refused(port, "NOBODY9", additional_headers={**basic("NOBODY9", "x"), **attacker}) == 429
    # The genuine charger behind the same balancer, from its own address, gets in.
    honest = {**basic("CP-LB", PASSWORD), "X-Forwarded-For": "198.51.100.20"}
    url = f"ws://127.0.0.1:{port}/ocpp/CP-LB"
    async with connect(url, subprotocols=["ocpp1.6"], additional_headers=honest) as ws:  # type: ignore[list-item]
        assert ws.subprotocol == "ocpp1.6"


async def test_without_trusted_proxies_the_forwarded_header_is_ignored(start_runtime: StartRuntime) -> None:
    runtime = await start_runtime(login_failures_allowed=3, login_backoff_seconds=60)
    port = runtime.gateway.port  # type: ignore[union-attr]
    for n in range(3):
        headers = {**basic(f"NOBODY{n}", "guess"), "X-Forwarded-For": f"203.0.113.{n}"}
        assert await refused(port, f"NOBODY{n}", additional_headers=headers) in (401, 404)
    # A new forged address does not buy another round: the peer's own address is what is limited.
    fresh = {**basic("NOBODY9", "x"), "X-Forwarded-For": "192.0.2.99"}
    assert await refused(port, "NOBODY9", additional_headers=fresh) == 429
