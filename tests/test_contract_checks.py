"""Central contract certificate validation, issue 11's open points: the contract certificate's ISO 15118 key
and signature profile, its CN against the eMAID presented, the root store reloaded when its files change,
and CRLs for certificates that name no OCSP responder. ISO 15118 chains made in the test with
`cryptography`, a real OCSP responder and CRL distribution point on loopback ports, real WebSocket
chargers."""

from __future__ import annotations

import asyncio
import logging
import os
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes as Key

from chargeops.settings import Settings
from ocpp_gateway.contract_leaf import normalise_emaid
from ocpp_gateway.crl import MAX_CRL_BYTES
from ocpp_gateway.pki import Pki
from tests.conftest import StartRuntime
from tests.ocpp_client import raw_charger
from tests.pki_lab import CrlServer
from tests.test_contract_validation import (
    CHAIN_ERROR,
    EMAID,
    GOOD,
    REVOKED,
    Mo,
    _authorize,
    _runtime,
    lab,
    pem,
)
from tests.waiting import until

__all__ = ["lab"]  # the OCSP responder, MO PKI and root directory of test_contract_validation

REVOKED_STATUS = {"idTokenInfo": {"status": "Invalid"}, "certificateStatus": "CertificateRevoked"}


async def test_tc_c_52_contract_certificate_key_and_signature_profile(
    start_runtime: StartRuntime, lab: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """ISO 15118-2 contract certificates are ECDSA secp256r1 signed ecdsa-with-SHA256; ISO 15118-20 adds
    secp521r1 (SHA-512) and Ed448: those are Accepted. An RSA, secp384r1 or Ed25519 key → CertChainError;
    a certificate signed with SHA-384 → SignatureError; the log says why."""
    mo, responder, roots = lab
    runtime = await _runtime(start_runtime, roots)
    responder.good |= {GOOD + n for n in range(10)}

    def chain(serial: int, **kw: Any) -> str:
        return pem(mo.sub2.issue(serial, ocsp_url=mo.url, emaid=EMAID, **kw), mo.sub2.cert, mo.sub1.cert)

    caplog.set_level(logging.WARNING, "chargeops.gateway.pki")
    async with raw_charger(runtime.gateway.port, "PNC-KEY", "ocpp2.0.1") as cp:  # type: ignore[union-attr]
        await cp.boot()
        accepted: list[Key] = [ec.generate_private_key(ec.SECP521R1()), ed448.Ed448PrivateKey.generate()]
        for n, key in enumerate(accepted):
            answer = await _authorize(cp, chain(GOOD + n, key=key.public_key()))
            assert answer["certificateStatus"] == "Accepted", (key, answer)
        refused: list[Key] = [
            rsa.generate_private_key(public_exponent=65537, key_size=2048),
            ec.generate_private_key(ec.SECP384R1()),
            ed25519.Ed25519PrivateKey.generate(),
        ]
        for n, key in enumerate(refused, start=2):
            assert await _authorize(cp, chain(GOOD + n, key=key.public_key())) == CHAIN_ERROR, key
        why = [r.getMessage() for r in caplog.records if "contract certificate refused" in r.getMessage()]
        assert "RSA-2048 key" in why[0] and "secp384r1" in why[1] and "Ed25519" in why[2], why
        assert all("allowed: ECDSA secp256r1 with SHA-256" in w for w in why)

        sha384 = await _authorize(cp, chain(GOOD + 5, algorithm=hashes.SHA384()))
        assert sha384 == {"idTokenInfo": {"status": "Invalid"}, "certificateStatus": "SignatureError"}
        assert any("signed ecdsa-with-SHA384" in r.getMessage() for r in caplog.records)
    assert responder.requests == 2 + 2  # the accepted leaves and the sub-CAs (cached): refused ones not


async def test_tc_c_52_contract_certificate_must_be_of_the_emaid_presented(
    start_runtime: StartRuntime, lab: Any
) -> None:
    """The contract certificate's CN is the eMAID: compared without case and hyphens (ISO 15118-2 Annex H),
    so `DE-moc-123456789-0` is DEMOC1234567890. Another eMAID's certificate → CertChainError / Invalid,
    with or without a root store (a chain that cannot be verified can still be refused)."""
    mo, responder, roots = lab
    runtime = await _runtime(start_runtime, roots)
    responder.good |= {GOOD + 20, GOOD + 21}
    assert normalise_emaid("DE-8aa-1A2B3C4D5-6") == "DE8AA1A2B3C4D56"
    async with raw_charger(runtime.gateway.port, "PNC-EMAID", "ocpp2.0.1") as cp:  # type: ignore[union-attr]
        await cp.boot()
        written = await _authorize(cp, mo.chain(GOOD + 20, emaid="DE-moc-123456789-0"))
        assert written["certificateStatus"] == "Accepted" and written["idTokenInfo"]["status"] == "Accepted"
        other = mo.chain(GOOD + 21, emaid="DEMOC0000BLOCKD")
        assert await _authorize(cp, other) == CHAIN_ERROR  # a good chain, but of another contract
        assert await _authorize(cp, other, emaid="DEMOC0000BLOCKD") == {
            "idTokenInfo": {"status": "Blocked"},
            "certificateStatus": "ContractCancelled",
        }

    pki = Pki(Settings(database_url="sqlite+aiosqlite://", allow_private_urls=True))  # no roots: hash data
    leaf = mo.sub2.issue(GOOD + 20, ocsp_url=mo.url, emaid="DEMOC0000BLOCKD")
    data = [mo.sub2.hash_data(leaf, mo.url)]
    assert await pki.contract_verdict(data, pem(leaf), EMAID) == "CertChainError"
    assert await pki.contract_verdict(data, pem(leaf), "democ0000blockd") == "Accepted"
    await pki.close()


async def test_contract_roots_reload_when_their_files_change(
    start_runtime: StartRuntime, lab: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """The root store is looked at every --tls-reload-interval, as the TLS files are: a root added to the
    directory is trusted without a restart; a root file that stops loading logs one error however many
    looks, and the last good store stays; fixed, it loads again."""
    mo, responder, roots = lab
    interval = 0.05
    runtime = await _runtime(start_runtime, roots, tls_reload_interval=interval)
    assert runtime.gateway is not None
    store = runtime.gateway.ctx.pki.root_files
    other = Mo(mo.url)  # same names, another root
    responder.more += [other.root, other.sub1, other.sub2]
    responder.good |= {other.sub1.cert.serial_number, other.sub2.cert.serial_number, GOOD}

    def put(text: str) -> None:  # at once, as a deployment tool replaces a file
        (roots / "mo-root.new").write_text(text)
        os.replace(roots / "mo-root.new", roots / "mo-root.pem")

    async with raw_charger(runtime.gateway.port, "PNC-RELOAD", "ocpp2.0.1") as cp:
        await cp.boot()
        assert await _authorize(cp, other.chain(GOOD)) == CHAIN_ERROR
        put(other.root.pem())
        await until(lambda: len(store.current.roots) == 2, what="the added root loaded")
        assert (await _authorize(cp, other.chain(GOOD)))["certificateStatus"] == "Accepted"

        (roots / "mo-root.pem").write_text(
            "-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n"
        )
        await until(lambda: any("not reloaded" in r.getMessage() for r in caplog.records), what="the error")
        await asyncio.sleep(interval * 8)  # the watcher looks again and again
        for _ in range(8):
            assert await store.check() is False  # looked at again: no second line
        errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
        assert len(errors) == 1 and "contract roots not reloaded" in errors[0] and "mo-root.pem" in errors[0]
        assert (await _authorize(cp, other.chain(GOOD)))["certificateStatus"] == "Accepted"  # last good store

        (roots / "mo-root.pem").unlink()  # removed: that root is no longer trusted
        await until(lambda: len(store.current.roots) == 1, what="the store without the removed root")
        assert await _authorize(cp, other.chain(GOOD)) == CHAIN_ERROR
        assert (await _authorize(cp, mo.chain(GOOD)))["certificateStatus"] == "Accepted"


@pytest.fixture
async def crls() -> Any:
    server = await CrlServer().start()
    yield server
    await server.stop()


async def test_tc_c_52_contract_certificate_revocation_by_crl(
    start_runtime: StartRuntime, lab: Any, crls: CrlServer
) -> None:
    """A certificate of the chain that names a CRL distribution point and no OCSP responder is checked on
    the CRL (fetched once, cached until its nextUpdate): listed → CertificateRevoked, not listed →
    Accepted. A CRL not signed by the issuer's key, out of date, larger than the bound, or not there →
    CertChainError."""
    mo, responder, roots = lab
    runtime = await _runtime(start_runtime, roots)
    crls.files["sub2.crl"] = mo.sub2.crl({REVOKED})
    crls.files["forged.crl"] = mo.sub2.crl(set(), signer=other_ca(mo))
    crls.files["stale.crl"] = mo.sub2.crl(set(), next_update=-timedelta(minutes=10))
    crls.files["huge.crl"] = b"\0" * (MAX_CRL_BYTES + 1)

    def chain(serial: int, crl: str) -> str:
        leaf = mo.sub2.issue(serial, emaid=EMAID, crl_url=crls.url(crl))
        return pem(leaf, mo.sub2.cert, mo.sub1.cert)

    async with raw_charger(runtime.gateway.port, "PNC-CRL", "ocpp2.0.1") as cp:  # type: ignore[union-attr]
        await cp.boot()
        assert (await _authorize(cp, chain(GOOD + 30, "sub2.crl")))["certificateStatus"] == "Accepted"
        assert await _authorize(cp, chain(REVOKED, "sub2.crl")) == REVOKED_STATUS
        assert crls.requests["sub2.crl"] == 1  # cached until its nextUpdate
        assert responder.requests == 2  # the sub-CAs name OCSP: asked there (then cached)
        for name in ("forged.crl", "stale.crl", "huge.crl", "missing.crl"):
            assert await _authorize(cp, chain(GOOD + 31, name)) == CHAIN_ERROR, name


def other_ca(mo: Mo) -> Any:
    return Mo(mo.url).sub2  # another key under the same name


async def test_get_certificate_chain_status_by_crl(
    start_runtime: StartRuntime, lab: Any, crls: CrlServer
) -> None:
    """OCPP 2.1 GetCertificateChainStatus, source CRL: the CRLs at the URLs given, in turn until one holds
    up, when the certificate's issuer is a contract root (its key checks the CRL's signature): Good or
    Revoked with the CRL's nextUpdate; Failed (nextUpdate now) when none holds up or the issuer is unknown."""
    mo, _responder, roots = lab
    runtime = await _runtime(start_runtime, roots)
    crls.files["root.crl"] = mo.root.crl({REVOKED})

    def asked(ca: Any, serial: int, urls: list[str]) -> dict[str, Any]:
        return {"certificateHashData": ca.hash_data(ca.issue(serial)), "source": "CRL", "urls": urls}

    requests = [
        asked(mo.root, GOOD, [crls.url("missing.crl"), crls.url("root.crl")]),
        asked(mo.root, REVOKED, [crls.url("root.crl")]),
        asked(mo.sub2, GOOD, [crls.url("root.crl")]),  # a sub-CA's: its key is not known here
    ]
    async with raw_charger(runtime.gateway.port, "PNC-CRL21", "ocpp2.1") as cp:  # type: ignore[union-attr]
        await cp.boot()
        answer = await cp.result("GetCertificateChainStatus", {"certificateStatusRequests": requests})
    statuses = answer["certificateStatus"]
    assert [s["status"] for s in statuses] == ["Good", "Revoked", "Failed"]
    next_update = datetime.fromisoformat(statuses[0]["nextUpdate"]) - datetime.now(UTC)
    assert timedelta(minutes=50) < next_update < timedelta(minutes=70)
    assert datetime.fromisoformat(statuses[2]["nextUpdate"]) < datetime.now(UTC) + timedelta(minutes=1)
    assert crls.requests == {"missing.crl": 1, "root.crl": 1}
