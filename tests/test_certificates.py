"""Certificate management (issue 11 item 6): the built-in CA signs stations' CSRs (1.6 security extension,
2.0.1 A02/A03), refuses bad ones, renews certificates about to expire, issues profile-3 client certificates,
and the API installs, lists and deletes stations' CA certificates (block M), every outcome stored.

Real stations' side: raw OCPP-J clients over wss:// (a server certificate made here), CSRs with real keys,
Postgres; test names carry the OCTT test case ids."""

from __future__ import annotations

import asyncio
import base64
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID
from typer.testing import CliRunner

from chargeops import clock
from chargeops.db.certificate_models import CertificateOperation, IssuedCertificate
from chargeops.db.models import Charger
from ops.cli import app
from ops.fleet import add_charger
from tests.certificate_support import (
    ADMIN,
    ORG,
    answer,
    chains_to_the_ca,
    expect_call,
    key_pem,
    leaf,
    make_csr,
    rows,
    settled,
    start,
    station,
)
from tests.conftest import StartRuntime
from tests.waiting import until

pytest_plugins = ("tests.certificate_support",)

# -- A02/A03: SignCertificate → CertificateSigned ------------------------------------------------------


async def test_tc_a_11_renewal_by_request_of_csms_then_reconnect_with_the_new_certificate(
    start_runtime: StartRuntime, ca_lab: Path, pg_url: str
) -> None:
    """`chargeops ca issue` gives CP-A11 its first profile-3 certificate; it connects with it (admitted as
    profile 3); the certificate expires within the renewal window, so the renewal job sends TriggerMessage
    SignChargingStationCertificate (once a day); the station's CSR is signed and sent back as
    CertificateSigned(ChargingStationCertificate); it reconnects with the new certificate and key."""
    runtime = await start(start_runtime, ca_lab, pg_url, certificate_renewal_days=400)
    async with runtime.sessions() as s, s.begin():
        await add_charger(s, "CP-A11", security_profile=3)
    out = ca_lab / "issued"
    args = ["ca", "issue", "CP-A11", "--out", str(out), "--ca-dir", str(ca_lab / "ca")]
    args += ["--ca-organization", ORG]
    result = await asyncio.to_thread(CliRunner().invoke, app, [*args, "--database-url", pg_url])
    assert result.exit_code == 0, result.output
    assert (out / "CP-A11.key").stat().st_mode & 0o777 == 0o600
    first = (out / "CP-A11.pem", out / "CP-A11.key")
    renewal = runtime.certificate_renewal
    assert renewal is not None
    async with station(runtime, ca_lab, "CP-A11", cert=first) as cp:
        asked = asyncio.create_task(renewal.run_once())
        trigger = await expect_call(cp, "TriggerMessage")
        assert trigger[3] == {"requestedMessage": "SignChargingStationCertificate"}
        await answer(cp, trigger, {"status": "Accepted"})
        assert await asked == ["CP-A11"]
        assert await renewal.run_once() == []  # once a day
        csr, key = make_csr("CP-A11")
        signed = await cp.result(
            "SignCertificate", {"csr": csr, "certificateType": "ChargingStationCertificate"}
        )
        assert signed == {"status": "Accepted"}
        call = await expect_call(cp, "CertificateSigned")
        assert call[3]["certificateType"] == "ChargingStationCertificate"
        new = leaf(call[3]["certificateChain"])
        assert chains_to_the_ca(new, ca_lab)
        assert new.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "CP-A11"
        await answer(cp, call, {"status": "Accepted"})
        stored = await settled(runtime, "CP-A11")
    assert stored.delivery == "Accepted" and stored.serial == format(new.serial_number, "X")
    assert stored.source == "csr" and stored.not_after == new.not_valid_after_utc
    (ca_lab / "new.pem").write_text(call[3]["certificateChain"])
    (ca_lab / "new.key").write_bytes(key_pem(key))
    next_day = clock.ManualClock(datetime.now(UTC) + timedelta(days=1, hours=1))
    async with station(runtime, ca_lab, "CP-A11", cert=(ca_lab / "new.pem", ca_lab / "new.key")) as cp:
        assert (await cp.call("Heartbeat", {}))[0] == 3
        with clock.use(next_day):  # the new one expires within the (long) window too: asked a day later
            assert await renewal.due() == [("CP-A11", "ChargingStationCertificate")]

    async def offline() -> bool:
        async with runtime.sessions() as s:
            return not (await s.get(Charger, "CP-A11")).connected  # type: ignore[union-attr]

    await until(offline, what="CP-A11 offline")
    with clock.use(next_day):
        assert await renewal.due() == []  # not connected: asked once it is back
    actions = [(o.action, o.status) for o in await rows(runtime, CertificateOperation, "CP-A11")]
    assert actions == [
        ("RenewCertificate", "Accepted"),
        ("SignCertificate", "Accepted"),
        ("CertificateSigned", "Accepted"),
    ]


async def test_tc_a_12_v2g_certificate_is_signed_and_sent_with_its_type(
    start_runtime: StartRuntime, ca_lab: Path, sqlite_url: str
) -> None:
    runtime = await start(start_runtime, ca_lab, sqlite_url, accept_unknown=True)
    async with station(runtime, ca_lab, "CP-A12") as cp:
        csr, _ = make_csr("CP-A12", key=rsa.generate_private_key(65537, 2048))
        assert (await cp.result("SignCertificate", {"csr": csr, "certificateType": "V2GCertificate"}))[
            "status"
        ] == "Accepted"
        call = await expect_call(cp, "CertificateSigned")
        assert call[3]["certificateType"] == "V2GCertificate"
        cert = leaf(call[3]["certificateChain"])
        assert chains_to_the_ca(cert, ca_lab)
        usage = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        assert x509.oid.ExtendedKeyUsageOID.SERVER_AUTH in usage  # the SECC is the TLS server of ISO 15118
        await answer(cp, call, {"status": "Accepted"})
        assert (await settled(runtime, "CP-A12")).certificate_type == "V2GCertificate"


async def test_tc_a_14_station_rejects_the_signed_certificate(
    start_runtime: StartRuntime, ca_lab: Path, pg_url: str
) -> None:
    """The station answers CertificateSigned Rejected and reports InvalidChargingStationCertificate: the
    answer is stored on the issued certificate, and the security event is taken."""
    runtime = await start(start_runtime, ca_lab, pg_url, accept_unknown=True)
    async with station(runtime, ca_lab, "CP-A14") as cp:
        csr, _ = make_csr("CP-A14")
        assert (await cp.result("SignCertificate", {"csr": csr}))["status"] == "Accepted"
        call = await expect_call(cp, "CertificateSigned")
        await answer(cp, call, {"status": "Rejected"})
        event = {"type": "InvalidChargingStationCertificate", "timestamp": "2026-11-25T10:00:00Z"}
        assert await cp.result("SecurityEventNotification", event) == {}
        assert (await settled(runtime, "CP-A14")).delivery == "Rejected"


async def test_1_6_sign_certificate_by_extended_trigger_message(
    start_runtime: StartRuntime, ca_lab: Path, sqlite_url: str
) -> None:
    """1.6 security extension: ExtendedTriggerMessage SignChargePointCertificate, SignCertificate, and a
    CertificateSigned carrying the chain only (1.6 has no certificateType)."""
    runtime = await start(start_runtime, ca_lab, sqlite_url, accept_unknown=True)
    async with station(runtime, ca_lab, "CP-16", "ocpp1.6") as cp:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{runtime.http_port}", headers=ADMIN) as api:
            sent = asyncio.create_task(
                api.post(
                    "/api/chargers/CP-16/ocpp/ExtendedTriggerMessage",
                    json={"requestedMessage": "SignChargePointCertificate"},
                )
            )
            trigger = await expect_call(cp, "ExtendedTriggerMessage")
            await answer(cp, trigger, {"status": "Accepted"})
            assert (await sent).status_code == 200
        csr, _ = make_csr("CP-16", key=rsa.generate_private_key(65537, 3072))
        assert await cp.result("SignCertificate", {"csr": csr}) == {"status": "Accepted"}
        call = await expect_call(cp, "CertificateSigned")
        assert set(call[3]) == {"certificateChain"}
        assert chains_to_the_ca(leaf(call[3]["certificateChain"]), ca_lab)
        await answer(cp, call, {"status": "Accepted"})
        assert (await settled(runtime, "CP-16")).delivery == "Accepted"


def _tampered() -> str:
    """A CSR whose signature does not match its key: another key's CSR with this subject's signature."""
    good, _ = make_csr("CP-BAD", key=rsa.generate_private_key(65537, 2048))
    other, _ = make_csr("CP-BAD", key=rsa.generate_private_key(65537, 2048))  # same signature length
    a, b = x509.load_pem_x509_csr(good.encode()), x509.load_pem_x509_csr(other.encode())
    der = a.public_bytes(serialization.Encoding.DER)
    forged = der.replace(a.signature, b.signature)
    body = base64.encodebytes(forged).decode()
    return f"-----BEGIN CERTIFICATE REQUEST-----\n{body}-----END CERTIFICATE REQUEST-----\n"


@pytest.mark.parametrize("protocol", ["ocpp1.6", "ocpp2.0.1"])
async def test_bad_csrs_are_rejected_and_nothing_is_signed(
    start_runtime: StartRuntime, ca_lab: Path, sqlite_url: str, protocol: str
) -> None:
    runtime = await start(start_runtime, ca_lab, sqlite_url, accept_unknown=True)
    bad = {
        "wrong CN": make_csr("SOMEONE-ELSE")[0],
        "wrong O": make_csr("CP-BAD", org="Evil Corp")[0],
        "1024-bit RSA": make_csr("CP-BAD", key=rsa.generate_private_key(65537, 1024))[0],
        "224-bit EC": make_csr("CP-BAD", key=ec.generate_private_key(ec.SECP224R1()))[0],
        "garbage": "-----BEGIN CERTIFICATE REQUEST-----\nbm90IGEgQ1NS\n-----END CERTIFICATE REQUEST-----\n",
        "bad signature": _tampered(),
    }
    async with station(runtime, ca_lab, "CP-BAD", protocol) as cp:
        for what, csr in bad.items():
            answer_ = await cp.result("SignCertificate", {"csr": csr})
            assert answer_["status"] == "Rejected", what
            if protocol != "ocpp1.6":
                assert answer_["statusInfo"]["reasonCode"] == "InvalidCSR", what
        with pytest.raises(TimeoutError):  # no CertificateSigned follows a refusal
            await asyncio.wait_for(cp.recv(), 0.5)
    assert await rows(runtime, IssuedCertificate, "CP-BAD") == []
    refused = await rows(runtime, CertificateOperation, "CP-BAD")
    reasons = [o.response["reason"] for o in refused]
    assert [o.status for o in refused] == ["Rejected"] * len(bad)
    assert "not the charge point id" in reasons[0] and "organization" in reasons[1]
    assert "1024 bits" in reasons[2] and "224 bits" in reasons[3]
    assert "not a PEM" in reasons[4] and "signature" in reasons[5]
