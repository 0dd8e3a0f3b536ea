"""Behind a real TLS-terminating HAProxy running docker/haproxy/haproxy.cfg (issue 13): a security-profile-2
charger gets in over wss:// to the balancer and ws:// from it; a guesser behind the balancer is limited by its
own address; the balancer's headers are believed from it only, never from another peer."""

from __future__ import annotations

import logging
import os
import shutil
import socket
import subprocess
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from tests.conftest import StartRuntime, client_tls
from tests.ocpp_client import RawCharger, basic
from tests.test_gateway_errors import metric
from tests.test_gateway_handshake import PASSWORD, register
from tests.waiting import until

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "docker" / "haproxy" / "haproxy.cfg"
StartBalancer = Callable[[int], Awaitable[int]]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def _spawn(binary: str, env: dict[str, str]) -> subprocess.Popen[bytes]:
    """HAProxy in the foreground on the shipped config, after its own check of it."""
    check = subprocess.run([binary, "-c", "-f", str(CONFIG)], env=env, capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    return subprocess.Popen([binary, "-db", "-f", str(CONFIG)], env=env, stdout=subprocess.DEVNULL)


@pytest.fixture
def balancer(pki: Path, tmp_path: Path) -> Iterator[StartBalancer]:
    """Starts HAProxy (Debian package `haproxy`; .ci/run installs it) in front of a gateway port; returns the
    balancer's TLS port. Missing HAProxy is a failure, not a skip."""
    binary = shutil.which("haproxy") or "/usr/sbin/haproxy"
    assert Path(binary).exists(), "haproxy is not installed: apt-get install haproxy"
    cert = tmp_path / "lb.pem"
    cert.write_text((pki / "server.pem").read_text() + (pki / "server.key").read_text())
    procs: list[subprocess.Popen[bytes]] = []

    async def start(gateway_port: int) -> int:
        port = _free_port()
        env = {
            **os.environ,
            "LB_BIND": f"127.0.0.1:{port}",
            "LB_CERT": str(cert),
            "LB_GATEWAY": f"127.0.0.1:{gateway_port}",
        }
        procs.append(_spawn(binary, env))
        await until(lambda: _accepts(port), what="HAProxy listening")
        return port

    yield start
    for proc in procs:
        proc.terminate()
        proc.wait(timeout=10)


async def _boot_via(lb_port: int, charger_id: str, source: str, pki: Path, headers: dict[str, str]) -> str:
    """Connect through the balancer from `source` (a loopback address of its own), boot; the boot status."""
    url = f"wss://127.0.0.1:{lb_port}/ocpp/{charger_id}"
    async with connect(
        url, subprotocols=["ocpp1.6"], ssl=client_tls(pki), additional_headers=headers,  # type: ignore[list-item]
        local_addr=(source, 0),
    ) as ws:  # fmt: skip
        return str((await RawCharger(ws, "ocpp1.6").boot())["status"])


async def _refused_via(lb_port: int, charger_id: str, source: str, pki: Path, headers: dict[str, str]) -> int:
    with pytest.raises(InvalidStatus) as info:
        await _boot_via(lb_port, charger_id, source, pki, headers)
    return info.value.response.status_code


async def _refused_direct(port: int, charger_id: str, source: str, headers: dict[str, str]) -> int:
    with pytest.raises(InvalidStatus) as info:
        async with connect(
            f"ws://127.0.0.1:{port}/ocpp/{charger_id}", subprotocols=["ocpp1.6"],  # type: ignore[list-item]
            additional_headers=headers, local_addr=(source, 0),
        ):  # fmt: skip
            pass
    return info.value.response.status_code


async def test_profile_2_behind_a_tls_terminating_balancer(
    start_runtime: StartRuntime, balancer: StartBalancer, pki: Path, caplog: pytest.LogCaptureFixture
) -> None:
    runtime = await start_runtime(trusted_proxies="127.0.0.1/32")  # HAProxy connects from 127.0.0.1
    await register(runtime, "CP-LB2", password=PASSWORD, security_profile=2)
    port = runtime.gateway.port  # type: ignore[union-attr]
    lb = await balancer(port)
    caplog.set_level(logging.INFO, "chargeops.gateway")
    assert await _boot_via(lb, "CP-LB2", "127.0.0.4", pki, basic("CP-LB2", PASSWORD)) == "Accepted"
    # The gateway saw the charger's own address, as the balancer wrote it.
    assert any("CP-LB2" in r.getMessage() and "from 127.0.0.4" in r.getMessage() for r in caplog.records)
    # The password still counts behind the balancer.
    assert await _refused_via(lb, "CP-LB2", "127.0.0.4", pki, basic("CP-LB2", "wrong-password-guess")) == 401

    # Straight to the gateway's plain port: the same header is not believed from an untrusted peer, and a
    # trusted peer that does not say https is not TLS either.
    before = metric("chargeops_handshakes_refused_total", reason="tls_required")
    forged = {**basic("CP-LB2", PASSWORD), "X-Forwarded-Proto": "https", "Forwarded": "proto=https"}
    assert await _refused_direct(port, "CP-LB2", "127.0.0.5", forged) == 401
    assert await _refused_direct(port, "CP-LB2", "127.0.0.1", basic("CP-LB2", PASSWORD)) == 401
    assert metric("chargeops_handshakes_refused_total", reason="tls_required") == before + 2


async def test_a_guesser_behind_the_balancer_does_not_lock_the_others_out(
    start_runtime: StartRuntime, balancer: StartBalancer, pki: Path
) -> None:
    runtime = await start_runtime(
        trusted_proxies="127.0.0.1/32", login_failures_allowed=3, login_backoff_seconds=60
    )
    await register(runtime, "CP-LB2", password=PASSWORD, security_profile=2)
    lb = await balancer(runtime.gateway.port)  # type: ignore[union-attr]
    for n in range(3):  # other ids each time: only the per-address limit can stop these
        assert await _refused_via(lb, f"NOBODY{n}", "127.0.0.3", pki, basic(f"NOBODY{n}", "guess")) in (
            401,
            404,
        )
    # What the client writes in X-Forwarded-For does not buy it a fresh address: HAProxy appends the real one.
    forged = {**basic("NOBODY9", "guess"), "X-Forwarded-For": "198.51.100.99"}
    assert await _refused_via(lb, "NOBODY9", "127.0.0.3", pki, forged) == 429
    # The genuine charger, from its own address behind the same balancer, gets in.
    assert await _boot_via(lb, "CP-LB2", "127.0.0.4", pki, basic("CP-LB2", PASSWORD)) == "Accepted"
