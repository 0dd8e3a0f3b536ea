"""The OCA's A - Security test cases of a CSMS over wss:// (issue 11.9): real TLS clients built the way the
test tool's are (one TLS 1.2 suite at a time, RSA-only and ECDSA-only offers, client certificates of both
key types), against certificates made in the test (tests/pki.py)."""

from __future__ import annotations

import asyncio
import ssl
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidMessage, InvalidStatus

from ops.runtime import Runtime
from tests.conftest import StartRuntime, client_tls
from tests.ocpp_client import RawCharger, basic
from tests.test_gateway_errors import metric
from tests.test_gateway_handshake import PASSWORD, register

# A00.FR.318 in OpenSSL's names: ECDSA certificate for the first two, RSA for the others.
A00_FR_318 = {
    "ECDHE-ECDSA-AES128-GCM-SHA256": "server-ec",
    "ECDHE-ECDSA-AES256-GCM-SHA384": "server-ec",
    "AES128-GCM-SHA256": "server",
    "AES256-GCM-SHA384": "server",
}


async def _runtime(start_runtime: StartRuntime, pki: Path) -> Runtime:
    runtime = await start_runtime(
        tls_cert=pki / "server.pem",
        tls_key=pki / "server.key",
        tls_second_cert=pki / "server-ec.pem",
        tls_second_key=pki / "server-ec.key",
        tls_client_ca=pki / "ca.pem",
    )
    await register(runtime, "CP-SP2", password=PASSWORD, security_profile=2)
    await register(runtime, "CP-TLS3", security_profile=3)
    await register(runtime, "CP-TLS3-EC", security_profile=3)
    return runtime


@asynccontextmanager
async def wss(
    runtime: Runtime, charger_id: str, ctx: ssl.SSLContext, **kw: object
) -> AsyncIterator[RawCharger]:
    assert runtime.gateway is not None
    url = f"wss://127.0.0.1:{runtime.gateway.port}/ocpp/{charger_id}"
    async with connect(url, subprotocols=["ocpp2.0.1"], ssl=ctx, **kw) as ws:  # type: ignore[arg-type,list-item]
        yield RawCharger(ws, "ocpp2.0.1")


def tls12(pki: Path, suite: str, cert: str | None = None) -> ssl.SSLContext:
    ctx = client_tls(pki, cert)
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_ciphers(suite)
    return ctx


def der(pki: Path, name: str) -> bytes:
    return ssl.PEM_cert_to_DER_cert((pki / f"{name}.pem").read_text())


async def _boot_and_report(cp: RawCharger) -> None:
    """OCTT steps 7-10: BootNotification Accepted, then the connectors' state."""
    boot = await cp.boot()
    assert boot["status"] == "Accepted"
    at = "2026-01-01T00:00:00Z"
    await cp.result(
        "StatusNotification", {"timestamp": at, "connectorStatus": "Available", "evseId": 1, "connectorId": 1}
    )
    event = {
        "eventId": 1,
        "timestamp": at,
        "trigger": "Delta",
        "actualValue": "Available",
        "eventNotificationType": "HardWiredNotification",
        "component": {"name": "Connector", "evse": {"id": 1, "connectorId": 1}},
        "variable": {"name": "AvailabilityState"},
    }
    await cp.result("NotifyEvent", {"generatedAt": at, "seqNo": 0, "eventData": [event]})


async def test_tc_a_01_03_basic_auth_over_tls(start_runtime: StartRuntime, pki: Path) -> None:
    """A_01 the right password gets in; A_02 a user name that is not the station's id and A_03 a wrong
    password are refused with 401 at the upgrade."""
    runtime = await _runtime(start_runtime, pki)
    async with wss(runtime, "CP-SP2", client_tls(pki), additional_headers=basic("CP-SP2", PASSWORD)) as cp:
        await _boot_and_report(cp)
    for user, password in (("CP-OTHER", PASSWORD), ("CP-SP2", "not-the-password-at-all")):
        with pytest.raises(InvalidStatus) as refused:
            async with wss(runtime, "CP-SP2", client_tls(pki), additional_headers=basic(user, password)):
                pass
        assert refused.value.response.status_code == 401


async def test_tc_a_04_server_certificate_suites_and_version(start_runtime: StartRuntime, pki: Path) -> None:
    """Each A00.FR.318 suite alone over TLS 1.2 gets in, with the certificate of its key type; the
    certificate's CN is the endpoint, it has a serial number; no TLS compression (A00.FR.321)."""
    runtime = await _runtime(start_runtime, pki)
    for suite, cert in A00_FR_318.items():
        headers = basic("CP-SP2", PASSWORD)
        async with wss(runtime, "CP-SP2", tls12(pki, suite), additional_headers=headers) as cp:
            tls = cp.ws.transport.get_extra_info("ssl_object")
            assert tls.version() == "TLSv1.2" and tls.cipher()[0] == suite
            assert tls.getpeercert(binary_form=True) == der(pki, cert), suite
            peer = tls.getpeercert()
            assert dict(rdn[0] for rdn in peer["subject"])["commonName"] == "127.0.0.1"
            assert peer["serialNumber"]
            assert tls.compression() is None
            await _boot_and_report(cp)
    # The server's order decides: a client that lists static RSA first still gets forward secrecy.
    static_first = tls12(pki, "AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256")
    async with wss(runtime, "CP-SP2", static_first, additional_headers=basic("CP-SP2", PASSWORD)) as cp:
        assert cp.ws.transport.get_extra_info("ssl_object").cipher()[0] == "ECDHE-RSA-AES128-GCM-SHA256"
    # A client that lets TLS choose gets TLS 1.3.
    async with wss(runtime, "CP-SP2", client_tls(pki), additional_headers=basic("CP-SP2", PASSWORD)) as cp:
        assert cp.ws.transport.get_extra_info("ssl_object").version() == "TLSv1.3"


def _s_client(port: int, pki: Path, *args: str) -> str:
    """A real `openssl s_client` handshake: its report (stderr with -brief), `FAILED` first if it failed."""
    done = subprocess.run(
        ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-CAfile", str(pki / "ca.pem"), "-brief",
         *args],
        capture_output=True, text=True, input="", timeout=30,
    )  # fmt: skip
    return ("FAILED " if done.returncode else "") + done.stdout + done.stderr


async def test_tc_a_04_with_openssl_s_client(start_runtime: StartRuntime, pki: Path) -> None:
    """The static RSA suites that OpenSSL's defaults may leave out, and TLS 1.3 picking the certificate by
    the client's signature algorithms, seen by a client that is not Python's."""
    runtime = await _runtime(start_runtime, pki)
    port = runtime.gateway.port  # type: ignore[union-attr]

    async def run(*args: str) -> str:
        return await asyncio.to_thread(_s_client, port, pki, *args)

    for suite in A00_FR_318:
        report = await run("-tls1_2", "-cipher", suite)
        assert f"Ciphersuite: {suite}" in report and "Verification: OK" in report, report
    rsa = await run("-tls1_3", "-sigalgs", "rsa_pss_rsae_sha256")
    ec = await run("-tls1_3", "-sigalgs", "ECDSA+SHA256")
    assert "Signature type: RSA-PSS" in rsa and "Verification: OK" in rsa, rsa  # the RSA certificate signed
    assert "Signature type: ECDSA" in ec and "Verification: OK" in ec, ec


async def test_tc_a_06_tls_versions_below_1_2_are_refused(start_runtime: StartRuntime, pki: Path) -> None:
    runtime = await _runtime(start_runtime, pki)
    port = runtime.gateway.port  # type: ignore[union-attr]
    for version in ("-tls1_1", "-tls1"):
        report = await asyncio.to_thread(_s_client, port, pki, version, "-cipher", "DEFAULT:@SECLEVEL=0")
        # The client did offer it (it did not refuse locally), and no connection came of it.
        assert report.startswith("FAILED") and "CONNECTION ESTABLISHED" not in report, report
        assert "no protocols available" not in report, report


async def test_tc_a_07_client_certificates_of_both_key_types(start_runtime: StartRuntime, pki: Path) -> None:
    runtime = await _runtime(start_runtime, pki)
    for charger_id, cert in (("CP-TLS3", "client"), ("CP-TLS3-EC", "client-ec")):
        async with wss(runtime, charger_id, client_tls(pki, cert)) as cp:
            tls = cp.ws.transport.get_extra_info("ssl_object")
            assert tls.version() in ("TLSv1.2", "TLSv1.3")
            await _boot_and_report(cp)
        for suite in ("ECDHE-ECDSA-AES128-GCM-SHA256", "AES256-GCM-SHA384"):
            async with wss(runtime, charger_id, tls12(pki, suite, cert)) as cp:
                assert (await cp.boot())["status"] == "Accepted"


async def test_tc_a_08_an_invalid_client_certificate_is_refused(
    start_runtime: StartRuntime, pki: Path
) -> None:
    """A certificate from a CA we do not trust ends the TLS handshake; a valid one whose CN is another
    station's id is refused at the upgrade (A00.FR.405)."""
    runtime = await _runtime(start_runtime, pki)
    with pytest.raises((ssl.SSLError, ConnectionError, InvalidMessage)):  # TLS 1.3: seen at the first read
        async with wss(runtime, "CP-TLS3", client_tls(pki, "client-rogue")) as cp:
            await cp.boot()
    before = metric("chargeops_handshakes_refused_total", reason="client_certificate")
    with pytest.raises(InvalidStatus) as refused:
        async with wss(runtime, "CP-TLS3", client_tls(pki, "client-ec")):
            pass
    assert refused.value.response.status_code == 401
    assert metric("chargeops_handshakes_refused_total", reason="client_certificate") == before + 1
