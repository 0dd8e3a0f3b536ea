"""Certificate management (issue 11 item 6): the built-in CA signs stations' CSRs (1.6 security extension,
2.0.1 A02/A03), refuses bad ones, renews certificates about to expire, issues profile-3 client certificates,
and the API installs, lists and deletes stations' CA certificates (block M), every outcome stored.

Real stations' side: raw OCPP-J clients over wss:// (a server certificate made here), CSRs with real keys,
Postgres; test names carry the OCTT test case ids."""

from __future__ import annotations

import asyncio
import base64
import json
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID
from sqlalchemy import select
from typer.testing import CliRunner
from websockets.asyncio.client import connect

from chargeops import clock
from chargeops.db.certificate_models import CertificateOperation, IssuedCertificate
from chargeops.db.models import Charger
from ops.cli import app
from ops.fleet import add_charger
from ops.runtime import Runtime
from tests.conftest import StartRuntime
from tests.ocpp_client import RawCharger
from tests.waiting import until

ORG = "Acme Charging"
ADMIN = {"Authorization": "Bearer test-admin-token"}
Key = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey


def make_csr(cn: str, org: str = ORG, key: Key | None = None) -> tuple[str, Key]:
    key = key or ec.generate_private_key(ec.SECP256R1())
    names = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, org), x509.NameAttribute(NameOID.COMMON_NAME, cn)]
    csr = x509.CertificateSigningRequestBuilder().subject_name(x509.Name(names)).sign(key, hashes.SHA256())
    return csr.public_bytes(serialization.Encoding.PEM).decode(), key


def key_pem(key: Key) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


@pytest.fixture
def pki(tmp_path: Path) -> Path:
    """A server certificate for 127.0.0.1 (self-signed) and a CA directory for the built-in CA."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=2))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(__import__("ipaddress").ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    (tmp_path / "server.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "server.key").write_bytes(key_pem(key))
    return tmp_path


async def start(start_runtime: StartRuntime, pki: Path, db: str, **kw: Any) -> Runtime:
    """chargeops over wss:// whose client CA is its own built-in CA (made before the server loads it)."""
    ca_dir = pki / "ca"
    runner = CliRunner()
    result = await asyncio.to_thread(
        runner.invoke, app, ["ca", "root", "--ca-dir", str(ca_dir), "--ca-organization", ORG]
    )
    assert result.exit_code == 0 and "BEGIN CERTIFICATE" in result.output, result.output
    return await start_runtime(
        db,
        tls_cert=pki / "server.pem",
        tls_key=pki / "server.key",
        tls_client_ca=ca_dir / "ca.pem",
        ca_dir=ca_dir,
        ca_organization=ORG,
        **kw,
    )


@asynccontextmanager
async def station(
    runtime: Runtime, pki: Path, cid: str, protocol: str = "ocpp2.0.1", cert: tuple[Path, Path] | None = None
) -> AsyncIterator[RawCharger]:
    ctx = ssl.create_default_context(cafile=str(pki / "server.pem"))
    if cert is not None:
        ctx.load_cert_chain(str(cert[0]), str(cert[1]))
    port = runtime.gateway.port  # type: ignore[union-attr]
    async with connect(f"wss://127.0.0.1:{port}/ocpp/{cid}", subprotocols=[protocol], ssl=ctx) as ws:  # type: ignore[list-item]
        cp = RawCharger(ws, protocol)
        assert (await cp.boot())["status"] == "Accepted"
        yield cp


async def expect_call(cp: RawCharger, action: str) -> list[Any]:
    call = await asyncio.wait_for(cp.recv(), 10)
    assert call[0] == 2 and call[2] == action, call
    return call


async def answer(cp: RawCharger, call: list[Any], payload: dict[str, Any]) -> None:
    await cp.ws.send(json.dumps([3, call[1], payload]))


async def rows(runtime: Runtime, entity: Any, cid: str) -> list[Any]:
    async with runtime.sessions() as s:
        return list(
            (await s.scalars(select(entity).where(entity.charger_id == cid).order_by(entity.id))).all()
        )


async def settled(runtime: Runtime, cid: str) -> IssuedCertificate:
    """The newest certificate issued to `cid`, once the station's CertificateSigned answer is stored."""
    for _ in range(100):
        issued = await rows(runtime, IssuedCertificate, cid)
        if issued and issued[-1].delivery is not None:
            return issued[-1]
        await asyncio.sleep(0.05)
    raise AssertionError(f"no delivered certificate for {cid}")


def leaf(chain: str) -> x509.Certificate:
    return x509.load_pem_x509_certificates(chain.encode())[0]


def chains_to_the_ca(cert: x509.Certificate, pki: Path) -> bool:
    root = x509.load_pem_x509_certificate((pki / "ca" / "ca.pem").read_bytes())
    cert.verify_directly_issued_by(root)
    return True


# -- A02/A03: SignCertificate → CertificateSigned ------------------------------------------------------


async def test_tc_a_11_renewal_by_request_of_csms_then_reconnect_with_the_new_certificate(
    start_runtime: StartRuntime, pki: Path, pg_url: str
) -> None:
    """`chargeops ca issue` gives CP-A11 its first profile-3 certificate; it connects with it (admitted as
    profile 3); the certificate expires within the renewal window, so the renewal job sends TriggerMessage
    SignChargingStationCertificate (once a day); the station's CSR is signed and sent back as
    CertificateSigned(ChargingStationCertificate); it reconnects with the new certificate and key."""
    runtime = await start(start_runtime, pki, pg_url, certificate_renewal_days=400)
    async with runtime.sessions() as s, s.begin():
        await add_charger(s, "CP-A11", security_profile=3)
    out = pki / "issued"
    args = ["ca", "issue", "CP-A11", "--out", str(out), "--ca-dir", str(pki / "ca"), "--ca-organization", ORG]
    result = await asyncio.to_thread(CliRunner().invoke, app, [*args, "--database-url", pg_url])
    assert result.exit_code == 0, result.output
    assert (out / "CP-A11.key").stat().st_mode & 0o777 == 0o600
    first = (out / "CP-A11.pem", out / "CP-A11.key")
    renewal = runtime.certificate_renewal
    assert renewal is not None
    async with station(runtime, pki, "CP-A11", cert=first) as cp:
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
        assert chains_to_the_ca(new, pki)
        assert new.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "CP-A11"
        await answer(cp, call, {"status": "Accepted"})
        stored = await settled(runtime, "CP-A11")
    assert stored.delivery == "Accepted" and stored.serial == format(new.serial_number, "X")
    assert stored.source == "csr" and stored.not_after == new.not_valid_after_utc
    (pki / "new.pem").write_text(call[3]["certificateChain"])
    (pki / "new.key").write_bytes(key_pem(key))
    next_day = clock.ManualClock(datetime.now(UTC) + timedelta(days=1, hours=1))
    async with station(runtime, pki, "CP-A11", cert=(pki / "new.pem", pki / "new.key")) as cp:
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
    start_runtime: StartRuntime, pki: Path, sqlite_url: str
) -> None:
    runtime = await start(start_runtime, pki, sqlite_url, accept_unknown=True)
    async with station(runtime, pki, "CP-A12") as cp:
        csr, _ = make_csr("CP-A12", key=rsa.generate_private_key(65537, 2048))
        assert (await cp.result("SignCertificate", {"csr": csr, "certificateType": "V2GCertificate"}))[
            "status"
        ] == "Accepted"
        call = await expect_call(cp, "CertificateSigned")
        assert call[3]["certificateType"] == "V2GCertificate"
        cert = leaf(call[3]["certificateChain"])
        assert chains_to_the_ca(cert, pki)
        usage = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        assert x509.oid.ExtendedKeyUsageOID.SERVER_AUTH in usage  # the SECC is the TLS server of ISO 15118
        await answer(cp, call, {"status": "Accepted"})
        assert (await settled(runtime, "CP-A12")).certificate_type == "V2GCertificate"


async def test_tc_a_14_station_rejects_the_signed_certificate(
    start_runtime: StartRuntime, pki: Path, pg_url: str
) -> None:
    """The station answers CertificateSigned Rejected and reports InvalidChargingStationCertificate: the
    answer is stored on the issued certificate, and the security event is taken."""
    runtime = await start(start_runtime, pki, pg_url, accept_unknown=True)
    async with station(runtime, pki, "CP-A14") as cp:
        csr, _ = make_csr("CP-A14")
        assert (await cp.result("SignCertificate", {"csr": csr}))["status"] == "Accepted"
        call = await expect_call(cp, "CertificateSigned")
        await answer(cp, call, {"status": "Rejected"})
        event = {"type": "InvalidChargingStationCertificate", "timestamp": "2026-11-25T10:00:00Z"}
        assert await cp.result("SecurityEventNotification", event) == {}
        assert (await settled(runtime, "CP-A14")).delivery == "Rejected"


async def test_1_6_sign_certificate_by_extended_trigger_message(
    start_runtime: StartRuntime, pki: Path, sqlite_url: str
) -> None:
    """1.6 security extension: ExtendedTriggerMessage SignChargePointCertificate, SignCertificate, and a
    CertificateSigned carrying the chain only (1.6 has no certificateType)."""
    runtime = await start(start_runtime, pki, sqlite_url, accept_unknown=True)
    async with station(runtime, pki, "CP-16", "ocpp1.6") as cp:
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
        assert chains_to_the_ca(leaf(call[3]["certificateChain"]), pki)
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
    start_runtime: StartRuntime, pki: Path, sqlite_url: str, protocol: str
) -> None:
    runtime = await start(start_runtime, pki, sqlite_url, accept_unknown=True)
    bad = {
        "wrong CN": make_csr("SOMEONE-ELSE")[0],
        "wrong O": make_csr("CP-BAD", org="Evil Corp")[0],
        "1024-bit RSA": make_csr("CP-BAD", key=rsa.generate_private_key(65537, 1024))[0],
        "224-bit EC": make_csr("CP-BAD", key=ec.generate_private_key(ec.SECP224R1()))[0],
        "garbage": "-----BEGIN CERTIFICATE REQUEST-----\nbm90IGEgQ1NS\n-----END CERTIFICATE REQUEST-----\n",
        "bad signature": _tampered(),
    }
    async with station(runtime, pki, "CP-BAD", protocol) as cp:
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


# -- M: CA certificates on the station, through the API ----------------------------------------------

HASH = {
    "hashAlgorithm": "SHA256",
    "issuerNameHash": "a" * 64,
    "issuerKeyHash": "b" * 64,
    "serialNumber": "7F01",
}


async def api_call(
    runtime: Runtime, cp: RawCharger, method: str, path: str, replies: list[Any], **kw: Any
) -> httpx.Response:
    """An API request the station answers: each OCPP call it gets is checked and answered from `replies`
    ((action, payload expected or None, answer) in order)."""
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{runtime.http_port}", headers=ADMIN) as api:
        sent = asyncio.create_task(api.request(method, path, **kw))
        for action, expected, reply in replies:
            call = await expect_call(cp, action)
            if expected is not None:
                assert call[3] == expected, call
            await answer(cp, call, reply)
        return await sent


async def test_tc_m_01_to_05_install_ca_certificates(
    start_runtime: StartRuntime, pki: Path, sqlite_url: str
) -> None:
    """TC_M_01-04: CSMSRoot, ManufacturerRoot, V2GRoot, MORoot installed (Accepted); TC_M_05: the station
    answers Failed, which is told and stored. A 1.6 station takes only the first two (1.6 names)."""
    runtime = await start(start_runtime, pki, sqlite_url, accept_unknown=True)
    root = (pki / "ca" / "ca.pem").read_text()
    path = "/api/chargers/CP-M201/installed-certificates"
    async with station(runtime, pki, "CP-M201") as cp:
        for kind in (
            "CSMSRootCertificate",
            "ManufacturerRootCertificate",
            "V2GRootCertificate",
            "MORootCertificate",
        ):
            body = {"certificate_type": kind, "certificate": root}
            expected = {"certificateType": kind, "certificate": root}
            r = await api_call(
                runtime,
                cp,
                "POST",
                path,
                [("InstallCertificate", expected, {"status": "Accepted"})],
                json=body,
            )
            assert r.status_code == 200 and r.json()["status"] == "Accepted", r.text
        body = {"certificate_type": "CSMSRootCertificate", "certificate": root}
        r = await api_call(
            runtime, cp, "POST", path, [("InstallCertificate", None, {"status": "Failed"})], json=body
        )
        assert r.json()["status"] == "Failed"
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{runtime.http_port}", headers=ADMIN) as api:
            bad = await api.post(
                path, json={"certificate_type": "ChargingStationCertificate", "certificate": root}
            )
            assert bad.status_code == 422 and bad.json()["error"] == "invalid_request"
            ops = (await api.get("/api/chargers/CP-M201/certificate-operations")).json()["items"]
        assert [o["status"] for o in ops] == ["Failed", "Accepted", "Accepted", "Accepted", "Accepted"]
        assert ops[0]["request"] == {"certificate_type": "CSMSRootCertificate"}
    async with station(runtime, pki, "CP-M16", "ocpp1.6") as cp:
        path16 = "/api/chargers/CP-M16/installed-certificates"
        body = {"certificate_type": "CSMSRootCertificate", "certificate": root}
        expected = {"certificateType": "CentralSystemRootCertificate", "certificate": root}
        r = await api_call(
            runtime, cp, "POST", path16, [("InstallCertificate", expected, {"status": "Accepted"})], json=body
        )
        assert r.json()["status"] == "Accepted"
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{runtime.http_port}", headers=ADMIN) as api:
            v2g = await api.post(path16, json={"certificate_type": "V2GRootCertificate", "certificate": root})
        assert v2g.status_code == 422 and "1.6" in v2g.json()["detail"]


async def test_tc_m_12_to_21_retrieve_and_delete_certificates(
    start_runtime: StartRuntime, pki: Path, pg_url: str
) -> None:
    """TC_M_12-18: GetInstalledCertificateIds of one, two or all types, the answer stored and listed;
    TC_M_19: NotFound; TC_M_20: DeleteCertificate with the listed hash data, Accepted, gone from the list;
    TC_M_21: Failed, kept. A 1.6 station is asked once per type."""
    runtime = await start(start_runtime, pki, pg_url, accept_unknown=True)
    refresh = "/api/chargers/CP-M12/installed-certificates/refresh"
    chain = [
        {"certificateType": "CSMSRootCertificate", "certificateHashData": HASH},
        {
            "certificateType": "V2GCertificateChain",
            "certificateHashData": {**HASH, "serialNumber": "7F02"},
            "childCertificateHashData": [{**HASH, "serialNumber": "7F03"}],
        },
    ]
    async with station(runtime, pki, "CP-M12") as cp:
        one = {"certificate_types": ["CSMSRootCertificate"]}
        r = await api_call(
            runtime, cp, "POST", refresh,
            [("GetInstalledCertificateIds", {"certificateType": ["CSMSRootCertificate"]},
              {"status": "Accepted", "certificateHashDataChain": chain[:1]})],
            json=one,
        )  # fmt: skip
        assert r.status_code == 200 and [i["serial_number"] for i in r.json()["items"]] == ["7F01"], r.text
        r = await api_call(
            runtime, cp, "POST", refresh,
            [("GetInstalledCertificateIds", {}, {"status": "Accepted", "certificateHashDataChain": chain})],
        )  # fmt: skip
        assert r.json()["items"][1]["children"][0]["serial_number"] == "7F03"
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{runtime.http_port}", headers=ADMIN) as api:
            listed = (await api.get("/api/chargers/CP-M12/installed-certificates")).json()["items"]
            assert [(i["certificate_type"], i["serial_number"]) for i in listed] == [
                ("CSMSRootCertificate", "7F01"),
                ("V2GCertificateChain", "7F02"),
            ]
            unknown = await api.delete("/api/chargers/CP-M12/installed-certificates/NOPE")
            assert unknown.status_code == 404 and unknown.json()["error"] == "not_found"
        mo = {"certificate_types": ["MORootCertificate"]}
        r = await api_call(
            runtime,
            cp,
            "POST",
            refresh,
            [("GetInstalledCertificateIds", None, {"status": "NotFound"})],
            json=mo,
        )
        assert r.json() == {"charger_id": "CP-M12", "status": "NotFound", "items": []}
        delete = "/api/chargers/CP-M12/installed-certificates/7F02"
        hash_ = {"certificateHashData": {**HASH, "serialNumber": "7F02"}}
        r = await api_call(
            runtime, cp, "DELETE", delete, [("DeleteCertificate", hash_, {"status": "Failed"})]
        )
        assert r.json()["status"] == "Failed"
        r = await api_call(
            runtime, cp, "DELETE", delete, [("DeleteCertificate", hash_, {"status": "Accepted"})]
        )
        assert r.json()["status"] == "Accepted"
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{runtime.http_port}", headers=ADMIN) as api:
            listed = (await api.get("/api/chargers/CP-M12/installed-certificates")).json()["items"]
        assert [i["serial_number"] for i in listed] == ["7F01"]
    async with station(runtime, pki, "CP-M16B", "ocpp1.6") as cp:
        r = await api_call(
            runtime, cp, "POST", "/api/chargers/CP-M16B/installed-certificates/refresh",
            [("GetInstalledCertificateIds", {"certificateType": "CentralSystemRootCertificate"},
              {"status": "Accepted", "certificateHashData": [HASH]}),
             ("GetInstalledCertificateIds", {"certificateType": "ManufacturerRootCertificate"},
              {"status": "NotFound"})],
        )  # fmt: skip
        assert r.json()["status"] == "Accepted"
        assert [(i["certificate_type"], i["serial_number"]) for i in r.json()["items"]] == [
            ("CSMSRootCertificate", "7F01")
        ]
