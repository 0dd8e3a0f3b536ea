"""The gateway's certificates (issue 11.9, 13): reloaded for new handshakes when their files change while open
connections keep theirs; a broken new file is one error line and the old certificates stay; settings that
cannot serve are one start-up line."""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import ssl
from pathlib import Path

import pytest

from chargeops.settings import Settings
from ops.runtime import Runtime
from ops.startup import StartupError
from tests.conftest import StartRuntime, client_tls
from tests.ocpp_client import raw_charger, serve_wss
from tests.pki import issue
from tests.test_startup_errors import one_line, serve
from tests.waiting import until

RELOAD = 0.05  # seconds between looks at the files in these tests


def der(path: Path) -> bytes:
    return ssl.PEM_cert_to_DER_cert(path.read_text())


def put(src: Path, dst: Path) -> None:
    """Replace `dst` at once, as a deployment tool (or a Kubernetes secret's symlink swap) does."""
    tmp = dst.with_suffix(".new")
    shutil.copyfile(src, tmp)
    os.replace(tmp, dst)


async def served_certificate(port: int, pki: Path) -> bytes:
    """The certificate a new TLS handshake gets (a bare handshake: no WebSocket, no charger session)."""
    _, writer = await asyncio.open_connection("127.0.0.1", port, ssl=client_tls(pki))
    try:
        return writer.get_extra_info("ssl_object").getpeercert(binary_form=True)  # type: ignore[no-any-return]
    finally:
        writer.close()
        await writer.wait_closed()


async def test_changed_certificates_serve_new_handshakes_and_open_connections_stay(
    start_runtime: StartRuntime, pki: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    live_cert, live_key = tmp_path / "live.pem", tmp_path / "live.key"
    put(pki / "server.pem", live_cert)
    put(pki / "server.key", live_key)
    runtime = await start_runtime(
        accept_unknown=True, tls_cert=live_cert, tls_key=live_key, tls_reload_interval=RELOAD
    )
    gateway = runtime.gateway
    assert gateway is not None and gateway.tls is not None
    serve_wss(gateway.port, client_tls(pki))
    renewed = issue(pki, "server-renewed", "127.0.0.1", "rsa", server=True)
    async with raw_charger(gateway.port, "CP-OPEN") as open_cp:
        await open_cp.boot()
        assert await served_certificate(gateway.port, pki) == der(pki / "server.pem")

        put(pki / "server-renewed.key", live_key)  # key first: the half-written state may be looked at
        put(renewed, live_cert)

        async def renewed_is_served() -> bool:
            return await served_certificate(gateway.port, pki) == der(renewed)

        await until(renewed_is_served, what="the renewed certificate on a new handshake")
        # The connection opened before keeps its TLS session and is served as before.
        assert open_cp.ws.transport.get_extra_info("ssl_object").getpeercert(True) == der(pki / "server.pem")
        assert (await open_cp.call("Heartbeat", {}))[0] == 3

        # A broken file: one error line however many looks, and the renewed certificate stays.
        caplog.set_level(logging.ERROR, "chargeops.gateway")
        caplog.clear()
        reloads = gateway.tls.reloads
        (tmp_path / "broken.pem").write_text("-----BEGIN CERTIFICATE-----\nnot base64 at all\n")
        put(tmp_path / "broken.pem", live_cert)
        await until(lambda: any("not reloaded" in r.getMessage() for r in caplog.records), what="the error")
        await asyncio.sleep(RELOAD * 8)
        errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
        assert len(errors) == 1 and str(live_cert) in errors[0] and "stay" in errors[0], errors
        assert await served_certificate(gateway.port, pki) == der(renewed)
        assert gateway.tls.reloads == reloads

        # Fixed: loaded again, ECDSA this time (the key type may change too).
        put(pki / "server-ec.key", live_key)
        put(pki / "server-ec.pem", live_cert)

        async def ecdsa_is_served() -> bool:
            return await served_certificate(gateway.port, pki) == der(pki / "server-ec.pem")

        await until(ecdsa_is_served, what="the ECDSA certificate after the fix")
        assert gateway.tls.kinds == ("ECDSA",)
        assert (await open_cp.call("Heartbeat", {}))[0] == 3


async def test_a_changed_client_ca_is_used_for_new_handshakes(
    start_runtime: StartRuntime, pki: Path, tmp_path: Path
) -> None:
    """Profile 3: a CA that does not vouch for the station's certificate, then the one that does."""
    from tests.test_gateway_handshake import register

    live_ca = tmp_path / "clients-ca.pem"
    put(pki / "other-ca.pem", live_ca)
    runtime = await start_runtime(
        tls_cert=pki / "server.pem",
        tls_key=pki / "server.key",
        tls_client_ca=live_ca,
        tls_reload_interval=RELOAD,
    )
    await register(runtime, "CP-TLS3", security_profile=3)
    port = runtime.gateway.port  # type: ignore[union-attr]
    serve_wss(port, client_tls(pki, "client"))

    async def admitted() -> bool:
        try:
            async with raw_charger(port, "CP-TLS3") as cp:
                return (await cp.boot())["status"] == "Accepted"
        except Exception:
            return False

    assert not await admitted()
    put(pki / "ca.pem", live_ca)
    await until(admitted, what="the station's certificate accepted under the new CA")


async def test_no_reload_when_the_interval_is_zero(
    start_runtime: StartRuntime, pki: Path, tmp_path: Path
) -> None:
    live_cert, live_key = tmp_path / "live.pem", tmp_path / "live.key"
    put(pki / "server.pem", live_cert)
    put(pki / "server.key", live_key)
    runtime = await start_runtime(tls_cert=live_cert, tls_key=live_key, tls_reload_interval=0)
    put(pki / "server-ec.pem", live_cert)
    put(pki / "server-ec.key", live_key)
    await asyncio.sleep(0.3)
    assert runtime.gateway is not None and runtime.gateway.tls is not None
    assert runtime.gateway.tls.reloads == 0 and runtime.gateway.tls.kinds == ("RSA",)


@pytest.mark.parametrize(
    ("settings", "says"),
    [
        ({"tls_cert": "nope.pem", "tls_key": "nope.key"}, "nope.pem"),
        ({"tls_key": "server.key"}, "CHARGEOPS_TLS_KEY is set but CHARGEOPS_TLS_CERT is not"),
        ({"tls_cert": "server.pem", "tls_key": "server-ec.key"}, "server.pem / "),  # key of another cert
        (
            {
                "tls_cert": "server.pem",
                "tls_key": "server.key",
                "tls_second_cert": "client.pem",
                "tls_second_key": "client.key",
            },
            "both hold RSA keys",
        ),
        ({"tls_cert": "server.pem", "tls_key": "server.key", "tls_client_ca": "nope-ca.pem"}, "nope-ca.pem"),
    ],
)
def test_tls_settings_that_cannot_serve_stop_the_start(
    pki: Path, settings: dict[str, str], says: str
) -> None:
    given = {k: pki / v for k, v in settings.items()}
    with pytest.raises(StartupError, match="cannot serve wss://") as info:
        Runtime(Settings(**given))  # type: ignore[arg-type]
    assert says in str(info.value)


def test_a_missing_certificate_is_one_line_at_start(pki: Path, tmp_path: Path) -> None:
    db = tmp_path / "never.db"
    line = one_line(
        serve("--tls-cert", str(pki / "missing.pem"), "--database-url", f"sqlite+aiosqlite:///{db}")
    )
    assert "cannot serve wss://" in line and "missing.pem" in line
    assert not db.exists()  # refused before any role started
