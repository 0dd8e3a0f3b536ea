"""ISO 15118 Plug & Charge behind the central system (issue 11 items 7 and 8): Authorize with contract
certificate OCSP data (C07), GetCertificateStatus (M06) and Get15118EVCertificate (M01/M02), against a real
OCSP responder and a real contract certificate service on loopback ports, by real WebSocket chargers."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.x509 import ocsp

from chargeops.db.models import IdToken
from tests.conftest import StartRuntime
from tests.ocpp_client import RawCharger, raw_charger
from tests.pki_lab import LoopbackPostServer, OcspResponder, TestCa

GOOD, REVOKED, UNKNOWN = 0x1001, 0x1002, 0x1003


@pytest.fixture
async def responder() -> AsyncIterator[OcspResponder]:
    ca = TestCa()
    server = await OcspResponder(ca, good={GOOD}, revoked={REVOKED}).start()
    yield server
    await server.stop()


async def _tokens(runtime: Any) -> None:
    async with runtime.sessions() as session, session.begin():
        session.add_all(
            [
                IdToken(id_token="DEMOC1234567890", type="eMAID", status="Accepted", group_id="FLEET-1"),
                IdToken(id_token="DEMOC0000BLOCKD", type="eMAID", status="Blocked"),
            ]
        )


async def _authorize(
    cp: RawCharger, emaid: str, hash_data: list[dict[str, Any]] | None, certificate: str | None = None
) -> dict[str, Any]:
    payload: dict[str, Any] = {"idToken": {"idToken": emaid, "type": "eMAID"}}
    if hash_data is not None:
        payload["iso15118CertificateHashData"] = hash_data
    if certificate is not None:
        payload["certificate"] = certificate
    return await cp.result("Authorize", payload)


async def test_tc_c_50_contract_certificate_good_by_ocsp_is_accepted_and_cached(
    start_runtime: StartRuntime, responder: OcspResponder
) -> None:
    """C07.FR.05 / C07.FR.14: the CSMS asks the responder the station names; a good chain and a known
    eMAID are Accepted / Accepted. The answer is cached until its nextUpdate: a second Authorize asks no
    one. Without the certificate data the same token is answered as before, with no certificateStatus."""
    runtime = await start_runtime(accept_unknown=True, allow_private_urls=True, pki_timeout=2)
    await _tokens(runtime)
    data = responder.ca.hash_data(responder.ca.issue(GOOD), responder.url)
    async with raw_charger(runtime.gateway.port, "PNC-1", "ocpp2.0.1") as cp:  # type: ignore[union-attr]
        await cp.boot()
        answer = await _authorize(cp, "DEMOC1234567890", [data])
        assert answer["certificateStatus"] == "Accepted"
        assert answer["idTokenInfo"]["status"] == "Accepted"
        assert answer["idTokenInfo"]["groupIdToken"] == {"idToken": "FLEET-1", "type": "Central"}
        assert responder.requests == 1
        assert (await _authorize(cp, "DEMOC1234567890", [data]))["certificateStatus"] == "Accepted"
        assert responder.requests == 1  # from the cache
        plain = await _authorize(cp, "DEMOC1234567890", None)
        assert "certificateStatus" not in plain and plain["idTokenInfo"]["status"] == "Accepted"


async def test_tc_c_51_revoked_contract_certificate_is_refused(
    start_runtime: StartRuntime, responder: OcspResponder
) -> None:
    """C07.FR.16: a revoked certificate in the chain: CertificateRevoked and idTokenInfo Invalid, whatever
    the eMAID's own status; a second certificate of the chain good does not save it."""
    runtime = await start_runtime(accept_unknown=True, allow_private_urls=True, pki_timeout=2)
    await _tokens(runtime)
    ca = responder.ca
    chain = [ca.hash_data(ca.issue(REVOKED), responder.url), ca.hash_data(ca.issue(GOOD), responder.url)]
    async with raw_charger(runtime.gateway.port, "PNC-2", "ocpp2.0.1") as cp:  # type: ignore[union-attr]
        await cp.boot()
        answer = await _authorize(cp, "DEMOC1234567890", chain)
    assert answer == {"idTokenInfo": {"status": "Invalid"}, "certificateStatus": "CertificateRevoked"}


async def test_tc_c_contract_certificate_unknown_unreachable_or_forged_is_a_chain_error(
    start_runtime: StartRuntime, responder: OcspResponder
) -> None:
    """C07.FR.17 (a chain that cannot be verified): the responder does not know the certificate, answers
    later than `pki_timeout` (the charger's call is answered within the bound, not held), an answer signed
    by someone else, a private responder without --allow-private-urls: CertChainError / Invalid."""
    runtime = await start_runtime(accept_unknown=True, allow_private_urls=True, pki_timeout=1.5)
    await _tokens(runtime)
    ca = responder.ca
    async with raw_charger(runtime.gateway.port, "PNC-3", "ocpp2.0.1") as cp:  # type: ignore[union-attr]
        await cp.boot()
        chain_error = {"idTokenInfo": {"status": "Invalid"}, "certificateStatus": "CertChainError"}
        unknown = [ca.hash_data(ca.issue(UNKNOWN), responder.url)]
        assert await _authorize(cp, "DEMOC1234567890", unknown) == chain_error

        responder.delay = 5.0
        started = time.monotonic()
        slow = [ca.hash_data(ca.issue(GOOD + 100), responder.url)]
        responder.good.add(GOOD + 100)
        assert await _authorize(cp, "DEMOC1234567890", slow) == chain_error
        assert time.monotonic() - started < 4.0
        responder.delay = 0.0

        responder.forger = TestCa("someone else")
        forged = [ca.hash_data(ca.issue(GOOD + 200), responder.url)]
        responder.good.add(GOOD + 200)
        assert await _authorize(cp, "DEMOC1234567890", forged) == chain_error

        bad_hex = dict(unknown[0], serialNumber="not-hex")
        assert await _authorize(cp, "DEMOC1234567890", [bad_hex]) == chain_error

    strict = await start_runtime(accept_unknown=True, pki_timeout=2)  # private URLs refused
    before = responder.requests
    async with raw_charger(strict.gateway.port, "PNC-4", "ocpp2.0.1") as cp:  # type: ignore[union-attr]
        await cp.boot()
        good = [ca.hash_data(ca.issue(GOOD), responder.url)]
        assert await _authorize(cp, "DEMOC1234567890", good) == chain_error
    assert responder.requests == before  # never asked


async def test_tc_c_good_chain_with_a_refused_emaid_is_contract_cancelled(
    start_runtime: StartRuntime, responder: OcspResponder
) -> None:
    """C07.FR.13: the chain is good but the eMAID is Blocked (or unknown: Invalid): ContractCancelled and
    the token's own status. The configured responder is asked instead of the one the station names."""
    runtime = await start_runtime(
        accept_unknown=True, allow_private_urls=True, pki_timeout=2, ocsp_responder_url=responder.url
    )
    await _tokens(runtime)
    data = responder.ca.hash_data(responder.ca.issue(GOOD), "http://127.0.0.1:9/nobody-listens")
    async with raw_charger(runtime.gateway.port, "PNC-5", "ocpp2.0.1") as cp:  # type: ignore[union-attr]
        await cp.boot()
        blocked = await _authorize(cp, "DEMOC0000BLOCKD", [data])
        assert blocked == {"idTokenInfo": {"status": "Blocked"}, "certificateStatus": "ContractCancelled"}
        nobody = await _authorize(cp, "DEMOC0000NOBODY", [data])
        assert nobody == {"idTokenInfo": {"status": "Invalid"}, "certificateStatus": "ContractCancelled"}


async def test_tc_c_expired_or_unverifiable_pem_contract_certificate(
    start_runtime: StartRuntime, responder: OcspResponder
) -> None:
    """C07.FR.15: a PEM contract certificate past its validity: CertificateExpired / Expired. A PEM chain
    alone (central contract validation, C07.FR.06) cannot be verified without a root store: CertChainError."""
    runtime = await start_runtime(accept_unknown=True, allow_private_urls=True, pki_timeout=2)
    await _tokens(runtime)
    ca = responder.ca

    def pem(serial: int, **kw: Any) -> str:
        return (
            ca.issue(serial, emaid="DEMOC1234567890", **kw).public_bytes(serialization.Encoding.PEM).decode()
        )

    async with raw_charger(runtime.gateway.port, "PNC-6", "ocpp2.0.1") as cp:  # type: ignore[union-attr]
        await cp.boot()
        data = [ca.hash_data(ca.issue(GOOD), responder.url)]
        expired = await _authorize(cp, "DEMOC1234567890", data, pem(GOOD, expired=True))
        assert expired == {"idTokenInfo": {"status": "Expired"}, "certificateStatus": "CertificateExpired"}
        alone = await _authorize(cp, "DEMOC1234567890", None, pem(GOOD))
        assert alone == {"idTokenInfo": {"status": "Invalid"}, "certificateStatus": "CertChainError"}
        both = await _authorize(cp, "DEMOC1234567890", data, pem(GOOD))
        assert both["certificateStatus"] == "Accepted"


async def test_tc_m_24_get_certificate_status_returns_the_responders_answer(
    start_runtime: StartRuntime, responder: OcspResponder
) -> None:
    """M06.FR.01/02/08/09: Accepted with the responder's OCSPResponse, DER in base64, whatever status it
    reports (the station decides); on 2.1 too. A responder that does not answer in time: Failed
    (M06.FR.04), within the bound."""
    runtime = await start_runtime(accept_unknown=True, allow_private_urls=True, pki_timeout=1.5)
    ca = responder.ca
    for protocol in ("ocpp2.0.1", "ocpp2.1"):
        async with raw_charger(runtime.gateway.port, f"PNC-M-{protocol[-1]}", protocol) as cp:  # type: ignore[union-attr]
            await cp.boot()
            for serial, expected in (
                (GOOD, ocsp.OCSPCertStatus.GOOD),
                (REVOKED, ocsp.OCSPCertStatus.REVOKED),
            ):
                data = ca.hash_data(ca.issue(serial), responder.url)
                answer = await cp.result("GetCertificateStatus", {"ocspRequestData": data})
                assert answer["status"] == "Accepted"
                parsed = ocsp.load_der_ocsp_response(base64.b64decode(answer["ocspResult"]))
                assert parsed.response_status is ocsp.OCSPResponseStatus.SUCCESSFUL
                assert parsed.certificate_status is expected and parsed.serial_number == serial

    responder.delay = 5.0
    responder.good.add(GOOD + 0x500)
    async with raw_charger(runtime.gateway.port, "PNC-M-slow", "ocpp2.0.1") as cp:  # type: ignore[union-attr]
        await cp.boot()
        started = time.monotonic()
        data = ca.hash_data(ca.issue(GOOD + 0x500), responder.url)
        answer = await cp.result("GetCertificateStatus", {"ocspRequestData": data})
        assert answer["status"] == "Failed" and "ocspResult" not in answer
        assert answer["statusInfo"]["reasonCode"] == "OcspUnavailable"
        assert time.monotonic() - started < 4.0


class ContractService(LoopbackPostServer):
    """A contract certificate service on a loopback port: answers each POST with `answer` after `delay`."""

    def __init__(self) -> None:
        self.answer: dict[str, Any] = {"status": "Accepted", "exiResponse": "RVhJLXJlc3BvbnNl"}
        self.delay = 0.0
        self.received: list[dict[str, Any]] = []

    async def respond(self, body: bytes) -> tuple[str, bytes]:
        self.received.append(json.loads(body))
        await asyncio.sleep(self.delay)
        return "application/json", json.dumps(self.answer).encode()


EV_REQUEST = {
    "iso15118SchemaVersion": "urn:iso:15118:2:2013:MsgDef",
    "action": "Install",
    "exiRequest": "RVhJ",
}


async def test_m01_get_15118_ev_certificate_is_forwarded_to_the_contract_service(
    start_runtime: StartRuntime,
) -> None:
    """The EXI request goes to the configured service with the station's id; its exiResponse comes back
    Accepted. A service that does not answer in time, or answers Failed: Failed with an empty
    exiResponse."""
    service = await ContractService().start()
    try:
        url = f"http://127.0.0.1:{service.port}/install"
        runtime = await start_runtime(
            accept_unknown=True, allow_private_urls=True, pki_timeout=1.5, contract_cert_service_url=url
        )
        async with raw_charger(runtime.gateway.port, "PNC-EV", "ocpp2.0.1") as cp:  # type: ignore[union-attr]
            await cp.boot()
            answer = await cp.result("Get15118EVCertificate", EV_REQUEST)
            assert answer == {"status": "Accepted", "exiResponse": "RVhJLXJlc3BvbnNl"}
            assert service.received == [{"chargingStationId": "PNC-EV", **EV_REQUEST}]

            service.answer = {"status": "Failed", "exiResponse": ""}
            failed = await cp.result("Get15118EVCertificate", EV_REQUEST)
            assert failed["status"] == "Failed" and failed["exiResponse"] == ""

            service.answer, service.delay = {"status": "Accepted", "exiResponse": "QQ=="}, 5.0
            started = time.monotonic()
            slow = await cp.result("Get15118EVCertificate", EV_REQUEST)
            assert slow["status"] == "Failed" and slow["statusInfo"]["reasonCode"] == "Timeout"
            assert time.monotonic() - started < 4.0
    finally:
        await service.stop()


async def test_m01_get_15118_ev_certificate_without_a_service_fails_or_uses_the_lab_pool(
    start_runtime: StartRuntime,
) -> None:
    """No service: Failed; with the lab test pool on, Accepted with a pool entry, the same one for the same
    request (a retry) on 2.0.1 and 2.1. A service URL on a private address without --allow-private-urls is
    refused before anything is sent."""
    from ocpp_gateway.pki import TEST_POOL

    plain = await start_runtime(accept_unknown=True)
    lab = await start_runtime(accept_unknown=True, contract_cert_test_pool=True)
    refused = await start_runtime(accept_unknown=True, contract_cert_service_url="http://127.0.0.1:9/never")
    async with raw_charger(plain.gateway.port, "PNC-NOSVC", "ocpp2.0.1") as cp:  # type: ignore[union-attr]
        await cp.boot()
        answer = await cp.result("Get15118EVCertificate", EV_REQUEST)
        assert answer["status"] == "Failed" and answer["statusInfo"]["reasonCode"] == "NoService"
    for protocol in ("ocpp2.0.1", "ocpp2.1"):
        async with raw_charger(lab.gateway.port, f"PNC-LAB{protocol[-1]}", protocol) as cp:  # type: ignore[union-attr]
            await cp.boot()
            first = await cp.result("Get15118EVCertificate", EV_REQUEST)
            assert first["status"] == "Accepted" and first["exiResponse"] in TEST_POOL
            assert await cp.result("Get15118EVCertificate", EV_REQUEST) == first
    async with raw_charger(refused.gateway.port, "PNC-PRIV", "ocpp2.0.1") as cp:  # type: ignore[union-attr]
        await cp.boot()
        answer = await cp.result("Get15118EVCertificate", EV_REQUEST)
        assert answer["status"] == "Failed" and "refused" in answer["statusInfo"]["additionalInfo"]
