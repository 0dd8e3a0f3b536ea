"""Central contract certificate validation (OCPP 2.x C07.FR.06, TC_C_52), delegated OCSP responders, and 2.1
GetCertificateChainStatus: ISO 15118 chains (V2G / MO root, MO sub-CAs, contract certificate) made in the
test, a real OCSP responder on a loopback port, real WebSocket chargers over wss://."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from chargeops.db.models import IdToken
from chargeops.pki.builtin_ca import BuiltinCA
from chargeops.settings import Settings
from ocpp_gateway.contract_chain import ChainProblem, ContractRootsError, load_roots
from ocpp_gateway.pki import trust_store
from ops.runtime import Runtime
from ops.startup import StartupError
from tests.conftest import StartRuntime, over_ws_and_wss
from tests.ocpp_client import RawCharger, raw_charger
from tests.pki_lab import OcspResponder, TestCa

GOOD, REVOKED, UNKNOWN = 0x2000, 0x3000, 0x4000
EMAID = "DEMOC1234567890"
CHAIN_ERROR = {"idTokenInfo": {"status": "Invalid"}, "certificateStatus": "CertChainError"}


@pytest.fixture
def start_runtime(start_runtime: StartRuntime, pki: Path) -> StartRuntime:
    """Over wss:// (RSA and ECDSA server certificates, client CA), as a certification lab runs it."""
    return over_ws_and_wss(start_runtime, "wss", pki)


def pem(*certs: x509.Certificate) -> str:
    return "".join(c.public_bytes(serialization.Encoding.PEM).decode() for c in certs)


class Mo:
    """An ISO 15118-2 contract PKI: V2G / MO root, MO Sub-CA 1 and 2 (each naming the responder for its
    status), and the responder answering for all three issuers."""

    def __init__(self, responder_url: str) -> None:
        self.root = TestCa("V2G Root", path_length=2)
        self.sub1 = TestCa("MO Sub-CA 1", parent=self.root, ocsp_url=responder_url, path_length=1)
        self.sub2 = TestCa("MO Sub-CA 2", parent=self.sub1, ocsp_url=responder_url, path_length=0)
        self.url = responder_url

    def chain(self, serial: int, **kw: Any) -> str:
        """A contract certificate's chain as a station sends it: leaf first, the root left out."""
        leaf = self.sub2.issue(serial, ocsp_url=self.url, **{"emaid": EMAID, **kw})
        return pem(leaf, self.sub2.cert, self.sub1.cert)


@pytest.fixture
async def lab(tmp_path: Path) -> Any:
    responder = await OcspResponder(TestCa("placeholder")).start()
    mo = Mo(responder.url)
    responder.ca, responder.more = mo.root, [mo.sub1, mo.sub2]
    responder.good |= {GOOD, mo.sub1.cert.serial_number, mo.sub2.cert.serial_number}
    responder.revoked.add(REVOKED)
    roots = tmp_path / "roots"
    roots.mkdir()
    (roots / "v2g-root.pem").write_text(mo.root.pem())
    (roots / "README.txt").write_text("not a certificate: skipped")
    yield mo, responder, roots
    await responder.stop()


async def _runtime(start_runtime: StartRuntime, roots: Path | None, **kw: Any) -> Runtime:
    runtime = await start_runtime(
        accept_unknown=True, allow_private_urls=True, pki_timeout=2, contract_roots=roots, **kw
    )
    async with runtime.sessions() as session, session.begin():
        session.add_all(
            [
                IdToken(id_token=EMAID, type="eMAID", status="Accepted", group_id="FLEET-1"),
                IdToken(id_token="DEMOC0000BLOCKD", type="eMAID", status="Blocked"),
            ]
        )
    return runtime


async def _authorize(
    cp: RawCharger, certificate: str | None, hash_data: Any = None, emaid: str = EMAID
) -> Any:
    payload: dict[str, Any] = {"idToken": {"idToken": emaid, "type": "eMAID"}}
    if certificate is not None:
        payload["certificate"] = certificate
    if hash_data is not None:
        payload["iso15118CertificateHashData"] = hash_data
    return await cp.result("Authorize", payload)


async def test_tc_c_52_central_contract_validation_of_a_good_chain(
    start_runtime: StartRuntime, lab: Any
) -> None:
    """C07.FR.06: the chain (contract certificate, MO Sub-CA 2, MO Sub-CA 1) is built up to the configured
    V2G root, and each of its three certificates is looked up at the OCSP URL it names: Accepted with the
    token's info. The chain's order does not matter; a Blocked eMAID with a good chain is
    ContractCancelled."""
    mo, responder, roots = lab
    runtime = await _runtime(start_runtime, roots)
    async with raw_charger(runtime.gateway.port, "PNC-52", "ocpp2.0.1") as cp:  # type: ignore[union-attr]
        await cp.boot()
        answer = await _authorize(cp, mo.chain(GOOD))
        assert answer["certificateStatus"] == "Accepted", answer
        assert answer["idTokenInfo"]["status"] == "Accepted"
        assert answer["idTokenInfo"]["groupIdToken"] == {"idToken": "FLEET-1", "type": "Central"}
        assert responder.requests == 3  # the contract certificate and both sub-CAs
        leaf = mo.sub2.issue(GOOD + 1, ocsp_url=mo.url, emaid=EMAID)
        responder.good.add(GOOD + 1)
        shuffled = pem(leaf, mo.sub1.cert, mo.sub2.cert)
        assert (await _authorize(cp, shuffled))["certificateStatus"] == "Accepted"
        assert responder.requests == 4  # the sub-CAs' answers came from the cache
        blocked = await _authorize(cp, mo.chain(GOOD, emaid="DEMOC0000BLOCKD"), emaid="DEMOC0000BLOCKD")
        assert blocked == {"idTokenInfo": {"status": "Blocked"}, "certificateStatus": "ContractCancelled"}


async def test_tc_c_52_central_contract_validation_refusals(start_runtime: StartRuntime, lab: Any) -> None:
    """C07.FR.15-17 on a centrally validated chain: a revoked contract certificate or sub-CA →
    CertificateRevoked; an expired one → CertificateExpired; a chain that does not reach a configured root,
    lacks a sub-CA, breaks a CA's path length, has a CA as leaf, names no OCSP URL or is unknown to the
    responder → CertChainError."""
    mo, responder, roots = lab
    runtime = await _runtime(start_runtime, roots)
    revoked = {"idTokenInfo": {"status": "Invalid"}, "certificateStatus": "CertificateRevoked"}
    async with raw_charger(runtime.gateway.port, "PNC-52R", "ocpp2.0.1") as cp:  # type: ignore[union-attr]
        await cp.boot()
        assert await _authorize(cp, mo.chain(REVOKED)) == revoked
        expired = await _authorize(cp, mo.chain(GOOD, expired=True))
        assert expired == {"idTokenInfo": {"status": "Expired"}, "certificateStatus": "CertificateExpired"}
        assert await _authorize(cp, mo.chain(UNKNOWN)) == CHAIN_ERROR

        other = Mo(mo.url)  # same names, other keys: chains to a root we do not trust
        responder.more += [other.sub1, other.sub2]
        assert await _authorize(cp, other.chain(GOOD)) == CHAIN_ERROR
        leaf = mo.sub2.issue(GOOD, ocsp_url=mo.url, emaid=EMAID)
        assert await _authorize(cp, pem(leaf, mo.sub2.cert)) == CHAIN_ERROR  # Sub-CA 1 missing
        assert (
            await _authorize(cp, pem(mo.sub2.issue(GOOD + 2, emaid=EMAID), mo.sub2.cert, mo.sub1.cert))
            == CHAIN_ERROR
        )
        assert await _authorize(cp, "-----BEGIN CERTIFICATE-----\nnot one\n") == CHAIN_ERROR

        sub_a = TestCa("MO Sub-CA A", parent=mo.root, ocsp_url=mo.url, path_length=0)
        sub_b = TestCa("MO Sub-CA B", parent=sub_a, ocsp_url=mo.url)  # a CA below one that allows none
        responder.more += [sub_a, sub_b]
        responder.good |= {sub_a.cert.serial_number, sub_b.cert.serial_number, GOOD + 3}
        deep = pem(sub_b.issue(GOOD + 3, ocsp_url=mo.url, emaid=EMAID), sub_b.cert, sub_a.cert)
        assert await _authorize(cp, deep) == CHAIN_ERROR
        assert await _authorize(cp, pem(sub_b.cert, sub_a.cert)) == CHAIN_ERROR  # a CA as contract cert

        revoked_sub = TestCa("MO Sub-CA 2", parent=mo.sub1, ocsp_url=mo.url, path_length=0)
        responder.more.append(revoked_sub)
        responder.revoked.add(revoked_sub.cert.serial_number)
        good_leaf = revoked_sub.issue(GOOD + 4, ocsp_url=mo.url, emaid=EMAID)
        responder.good.add(GOOD + 4)
        assert await _authorize(cp, pem(good_leaf, revoked_sub.cert, mo.sub1.cert)) == revoked


async def test_delegated_responder_is_checked_against_the_known_issuer(
    start_runtime: StartRuntime, lab: Any
) -> None:
    """An OCSP answer signed by a delegated responder counts when the issuer's key signed the responder's
    certificate; one that only borrows the issuer's name (another key) is refused when the issuer is known:
    from the chain (central validation) or from the root store (hash data about a certificate the root
    issued) → CertChainError."""
    mo, responder, roots = lab
    runtime = await _runtime(start_runtime, roots)
    async with raw_charger(runtime.gateway.port, "PNC-DEL", "ocpp2.0.1") as cp:  # type: ignore[union-attr]
        await cp.boot()
        responder.good |= {GOOD + 10, GOOD + 11, GOOD + 12, GOOD + 13}
        responder.delegate = mo.root.responder()
        direct = mo.root.issue(GOOD + 10, ocsp_url=mo.url, emaid=EMAID)  # issued by the root itself
        assert (await _authorize(cp, pem(direct)))["certificateStatus"] == "Accepted"
        hashed = mo.root.issue(GOOD + 11)
        data = [mo.root.hash_data(hashed, mo.url)]
        assert (await _authorize(cp, None, data))["certificateStatus"] == "Accepted"

        responder.delegate = mo.root.responder(forged=True)
        forged = mo.root.issue(GOOD + 12, ocsp_url=mo.url, emaid=EMAID)
        assert await _authorize(cp, pem(forged)) == CHAIN_ERROR
        data = [mo.root.hash_data(mo.root.issue(GOOD + 13), mo.url)]
        assert await _authorize(cp, None, data) == CHAIN_ERROR


async def test_contract_roots_load_from_a_file_a_directory_and_the_builtin_ca(tmp_path: Path) -> None:
    """--contract-roots takes a PEM file or a directory of them (other files skipped); a certificate in it
    that is not a self-signed CA stops the start; --contract-roots-ca adds the built-in CA's root, so a
    certificate it signed chains to a trusted root."""
    root, other = TestCa("V2G Root A"), TestCa("MO Root B")
    (tmp_path / "a.pem").write_text(root.pem())
    (tmp_path / "b.crt").write_text(other.pem())
    (tmp_path / "notes.txt").write_text("skipped")
    assert len(load_roots([tmp_path])) == 2 and len(load_roots([tmp_path / "a.pem"])) == 1

    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "leaf.pem").write_text(pem(root.issue(GOOD)))
    with pytest.raises(ContractRootsError, match="not a self-signed CA"):
        load_roots([bad])
    with pytest.raises(StartupError, match="contract-roots"):
        Runtime(Settings(database_url="sqlite+aiosqlite://", contract_roots=bad))

    settings = Settings(ca_dir=tmp_path / "ca", contract_roots=tmp_path / "a.pem", contract_roots_ca=True)
    store = trust_store(settings)
    assert len(store.roots) == 2
    issued, _key = BuiltinCA.of(settings).issue_client("CP-V2G")
    now = datetime.now(UTC)
    path = store.path(issued.chain_pem, now)
    assert path[-1] == x509.load_pem_x509_certificate(BuiltinCA.of(settings).root_pem().encode())
    with pytest.raises(ChainProblem) as expired:
        store.path(issued.chain_pem, now + timedelta(days=400))
    assert expired.value.verdict == "CertificateExpired"


async def test_get_certificate_chain_status_answers_each_certificate_by_ocsp(
    start_runtime: StartRuntime, lab: Any
) -> None:
    """OCPP 2.1 GetCertificateChainStatus: each certificate asked about at the URLs given, in turn until
    one answers: Good / Revoked / Unknown as the responder says with its nextUpdate; Failed when none
    answers, and for source CRL (not fetched), with nextUpdate now."""
    mo, _responder, _roots = lab
    runtime = await _runtime(start_runtime, None)
    sub2 = mo.sub2

    def asked(serial: int, urls: list[str], source: str = "OCSP") -> dict[str, Any]:
        data = sub2.hash_data(sub2.issue(serial))
        return {"certificateHashData": data, "source": source, "urls": urls}

    nobody = "http://127.0.0.1:9/nobody"
    async with raw_charger(runtime.gateway.port, "PNC-CCS", "ocpp2.1") as cp:  # type: ignore[union-attr]
        await cp.boot()
        requests = [
            asked(GOOD, [nobody, mo.url]),
            asked(REVOKED, [mo.url]),
            asked(UNKNOWN, [mo.url]),
            asked(GOOD, [mo.url], "CRL"),
        ]
        answer = await cp.result("GetCertificateChainStatus", {"certificateStatusRequests": requests})
        statuses = answer["certificateStatus"]
        assert [s["status"] for s in statuses] == ["Good", "Revoked", "Unknown", "Failed"]
        assert [s["source"] for s in statuses] == ["OCSP", "OCSP", "OCSP", "CRL"]
        assert [s["certificateHashData"] for s in statuses] == [r["certificateHashData"] for r in requests]
        next_update = datetime.fromisoformat(statuses[0]["nextUpdate"])
        assert timedelta(minutes=50) < next_update - datetime.now(UTC) < timedelta(minutes=70)
        assert datetime.fromisoformat(statuses[3]["nextUpdate"]) < datetime.now(UTC) + timedelta(minutes=1)

        failed = await cp.result(
            "GetCertificateChainStatus", {"certificateStatusRequests": [asked(GOOD, [nobody])]}
        )
        assert failed["certificateStatus"][0]["status"] == "Failed"
