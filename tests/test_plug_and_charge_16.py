"""ISO 15118 Plug & Charge with OCPP 1.6 (OCA application note "Using ISO 15118 Plug & Charge with OCPP 1.6"):
the 2.0.1 messages tunnelled in DataTransfer (vendorId org.openchargealliance.iso15118pnc), both ways, named
after the note's use cases and the 2.0.1 use cases they refer to. Raw 1.6 stations over wss://, the built-in
CA, a real OCSP responder on a loopback port; every tunnelled answer is checked against the official 2.0.1
schema by `jsonschema` (not the gateway's validators)."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.x509 import ocsp

from chargeops.db.certificate_models import CertificateOperation, InstalledCertificate
from chargeops.db.models import IdToken
from firmware_stubs import SimEnvironment, SimulatedCharger
from firmware_stubs.dialects import pnc16 as sim_pnc
from ops.runtime import Runtime
from tests.certificate_support import (
    ADMIN,
    answer,
    chains_to_the_ca,
    expect_call,
    leaf,
    make_csr,
    rows,
    settled,
    start,
    station,
)
from tests.conftest import StartRuntime
from tests.ocpp_client import RawCharger, assert_strictly_valid
from tests.pki_lab import OcspResponder, TestCa
from tests.waiting import until

pytest_plugins = ("tests.certificate_support",)

PNC = "org.openchargealliance.iso15118pnc"
GOOD, REVOKED = 0x2001, 0x2002
HASH = {
    "hashAlgorithm": "SHA256",
    "issuerNameHash": "a" * 64,
    "issuerKeyHash": "b" * 64,
    "serialNumber": "5A01",
}


@pytest.fixture
async def responder() -> AsyncIterator[OcspResponder]:
    server = await OcspResponder(TestCa(), good={GOOD}, revoked={REVOKED}).start()
    yield server
    await server.stop()


async def pnc(cp: RawCharger, message_id: str, payload: dict[str, Any] | str) -> tuple[str, Any]:
    """A tunnelled 2.0.1 request from the station: the DataTransfer status and the 2.0.1 answer (checked
    against its schema), None when there is no data."""
    data = payload if isinstance(payload, str) else json.dumps(payload)
    result = await cp.result("DataTransfer", {"vendorId": PNC, "messageId": message_id, "data": data})
    if "data" not in result:
        return result["status"], None
    inner = json.loads(result["data"])
    assert_strictly_valid("ocpp2.0.1", message_id, inner, response=True)
    return result["status"], inner


async def tunnelled_call(cp: RawCharger, message_id: str) -> tuple[list[Any], dict[str, Any]]:
    """The CSMS's next call: a DataTransfer carrying `message_id`; the frame and the 2.0.1 request (checked
    against its schema)."""
    call = await expect_call(cp, "DataTransfer")
    assert call[3]["vendorId"] == PNC and call[3]["messageId"] == message_id, call
    inner = json.loads(call[3]["data"])
    assert_strictly_valid("ocpp2.0.1", message_id, inner, response=False)
    return call, inner


async def answer_tunnelled(cp: RawCharger, call: list[Any], inner: dict[str, Any]) -> None:
    await answer(cp, call, {"status": "Accepted", "data": json.dumps(inner)})


async def api(runtime: Runtime, method: str, path: str, **kw: Any) -> asyncio.Task[httpx.Response]:
    """An API request running while the test answers the station's side."""

    async def go() -> httpx.Response:
        base = f"http://127.0.0.1:{runtime.http_port}"
        async with httpx.AsyncClient(base_url=base, headers=ADMIN, timeout=30) as client:
            return await client.request(method, path, **kw)

    return asyncio.create_task(go())


async def _tokens(runtime: Runtime) -> None:
    async with runtime.sessions() as session, session.begin():
        session.add_all(
            [
                IdToken(id_token="DEMOC16ACCEPTED", type="eMAID", status="Accepted", group_id="FLEET-16"),
                IdToken(id_token="DEMOC16BLOCKED0", type="eMAID", status="Blocked"),
            ]
        )


# -- station → CSMS -------------------------------------------------------------------------------------


async def test_authorization_using_contract_certificates_c07(
    start_runtime: StartRuntime, ca_lab: Path, sqlite_url: str, responder: OcspResponder
) -> None:
    """The note's Plug & Charge authorization (2.0.1 C07) over DataTransfer: the contract chain looked up by
    OCSP and the eMAID by the token store, answered as on 2.0.1 — good and known: Accepted / Accepted with
    the group; revoked: CertificateRevoked / Invalid; good but the eMAID blocked: ContractCancelled. An
    Authorize with the eMAID only (the station validated the contract itself) gets no certificateStatus."""
    runtime = await start(
        start_runtime, ca_lab, sqlite_url, accept_unknown=True, allow_private_urls=True, pki_timeout=2
    )
    await _tokens(runtime)
    ca = responder.ca
    good, revoked = (
        ca.hash_data(ca.issue(GOOD), responder.url),
        ca.hash_data(ca.issue(REVOKED), responder.url),
    )
    async with station(runtime, ca_lab, "PNC16-C07", "ocpp1.6") as cp:

        async def authorize(emaid: str, hash_data: list[dict[str, Any]] | None) -> tuple[str, Any]:
            request: dict[str, Any] = {"idToken": {"idToken": emaid, "type": "eMAID"}}
            if hash_data is not None:
                request["iso15118CertificateHashData"] = hash_data
            return await pnc(cp, "Authorize", request)

        status, accepted = await authorize("DEMOC16ACCEPTED", [good])
        assert status == "Accepted"
        assert accepted == {
            "idTokenInfo": {"status": "Accepted", "groupIdToken": {"idToken": "FLEET-16", "type": "Central"}},
            "certificateStatus": "Accepted",
        }
        assert (await authorize("DEMOC16ACCEPTED", [revoked]))[1] == {
            "idTokenInfo": {"status": "Invalid"},
            "certificateStatus": "CertificateRevoked",
        }
        assert (await authorize("DEMOC16BLOCKED0", [good]))[1] == {
            "idTokenInfo": {"status": "Blocked"},
            "certificateStatus": "ContractCancelled",
        }
        plain = (await authorize("DEMOC16ACCEPTED", None))[1]
        assert plain == {
            "idTokenInfo": {"status": "Accepted", "groupIdToken": {"idToken": "FLEET-16", "type": "Central"}}
        }


async def test_get_charge_point_certificate_status_m06(
    start_runtime: StartRuntime, ca_lab: Path, sqlite_url: str, responder: OcspResponder
) -> None:
    """The note's certificate status (2.0.1 M06): the responder's OCSPResponse, base64 DER, Accepted."""
    runtime = await start(
        start_runtime, ca_lab, sqlite_url, accept_unknown=True, allow_private_urls=True, pki_timeout=2
    )
    ca = responder.ca
    async with station(runtime, ca_lab, "PNC16-M06", "ocpp1.6") as cp:
        data = ca.hash_data(ca.issue(REVOKED), responder.url)
        status, inner = await pnc(cp, "GetCertificateStatus", {"ocspRequestData": data})
    assert status == "Accepted" and inner["status"] == "Accepted"
    parsed = ocsp.load_der_ocsp_response(base64.b64decode(inner["ocspResult"]))
    assert parsed.certificate_status is ocsp.OCSPCertStatus.REVOKED and parsed.serial_number == REVOKED


async def test_install_or_update_ev_contract_certificate_m01_m02(
    start_runtime: StartRuntime, ca_lab: Path, sqlite_url: str
) -> None:
    """The note's EV certificate installation / update (2.0.1 M01/M02): Get15118EVCertificate answered as on
    2.0.1, here from the lab test pool, the same entry for a retried request."""
    from ocpp_gateway.pki import TEST_POOL

    runtime = await start(
        start_runtime, ca_lab, sqlite_url, accept_unknown=True, contract_cert_test_pool=True
    )
    request = {
        "iso15118SchemaVersion": "urn:iso:15118:2:2013:MsgDef",
        "action": "Install",
        "exiRequest": "RVhJ",
    }
    async with station(runtime, ca_lab, "PNC16-M01", "ocpp1.6") as cp:
        status, first = await pnc(cp, "Get15118EVCertificate", request)
        assert status == "Accepted" and first["status"] == "Accepted" and first["exiResponse"] in TEST_POOL
        assert (await pnc(cp, "Get15118EVCertificate", {**request, "action": "Update"}))[0] == "Accepted"
        assert (await pnc(cp, "Get15118EVCertificate", request))[1] == first


async def test_update_charge_point_certificate_initiated_by_charge_point_a03(
    start_runtime: StartRuntime, ca_lab: Path, sqlite_url: str
) -> None:
    """The note's V2G (SECC) certificate update started by the station (2.0.1 A03): its tunnelled
    SignCertificate (certificateType absent: the V2G certificate) is checked, Accepted, signed by the CA and
    sent back as a tunnelled CertificateSigned with certificateType V2GCertificate; the station's answer is
    stored with the issued certificate. Its own charging station certificate is not asked for this way."""
    runtime = await start(start_runtime, ca_lab, sqlite_url, accept_unknown=True)
    async with station(runtime, ca_lab, "PNC16-A03", "ocpp1.6") as cp:
        csr, _ = make_csr("PNC16-A03")
        assert await pnc(cp, "SignCertificate", {"csr": csr}) == ("Accepted", {"status": "Accepted"})
        call, signed = await tunnelled_call(cp, "CertificateSigned")
        assert signed["certificateType"] == "V2GCertificate"
        assert chains_to_the_ca(leaf(signed["certificateChain"]), ca_lab)
        await answer_tunnelled(cp, call, {"status": "Accepted"})
        stored = await settled(runtime, "PNC16-A03")
        assert stored.delivery == "Accepted" and stored.certificate_type == "V2GCertificate"

        own = await pnc(cp, "SignCertificate", {"csr": csr, "certificateType": "ChargingStationCertificate"})
        assert own[0] == "Accepted" and own[1]["status"] == "Rejected"
        bad, _ = make_csr("SOMEONE-ELSE")
        refused = await pnc(cp, "SignCertificate", {"csr": bad})
        assert refused[1]["status"] == "Rejected" and refused[1]["statusInfo"]["reasonCode"] == "InvalidCSR"
    actions = [(o.action, o.status) for o in await rows(runtime, CertificateOperation, "PNC16-A03")]
    assert actions == [
        ("SignCertificate", "Accepted"),
        ("CertificateSigned", "Accepted"),
        ("SignCertificate", "Rejected"),
    ]


async def test_data_transfer_that_is_not_a_valid_pnc_message(
    start_runtime: StartRuntime, ca_lab: Path, sqlite_url: str
) -> None:
    """A tunnelled payload that breaks its 2.0.1 schema (a required field missing, a wrong enum) or is not a
    JSON object: status Rejected, no data (the DataTransfer itself is valid: no CALLERROR). A messageId the
    note does not have the station send: UnknownMessageId; another vendor: UnknownVendorId. A battery swap
    DataTransfer still becomes a swap."""
    runtime = await start(start_runtime, ca_lab, sqlite_url, accept_unknown=True)
    async with station(runtime, ca_lab, "PNC16-BAD", "ocpp1.6") as cp:
        assert await pnc(cp, "Authorize", {"idToken": {"idToken": "X"}}) == ("Rejected", None)
        assert await pnc(cp, "Authorize", {"idToken": {"idToken": "X", "type": "Card"}}) == ("Rejected", None)
        assert await pnc(cp, "GetCertificateStatus", "not json") == ("Rejected", None)
        assert await pnc(cp, "GetCertificateStatus", "[1, 2]") == ("Rejected", None)
        assert await pnc(cp, "CertificateSigned", {"certificateChain": "x"}) == ("UnknownMessageId", None)
        assert await pnc(cp, "Heartbeat", {}) == ("UnknownMessageId", None)
        other = await cp.result("DataTransfer", {"vendorId": "com.example", "messageId": "Authorize"})
        assert other == {"status": "UnknownVendorId"}
        swap = {
            "eventType": "BatteryIn",
            "requestId": 7,
            "idToken": {"idToken": "SWAP-1", "type": "ISO14443"},
            "batteryData": [{"evseId": 1, "serialNumber": "B-1", "soC": 40.0, "soH": 95.0}],
        }
        swapped = await cp.result(
            "DataTransfer",
            {"vendorId": "org.chargeops.swap", "messageId": "BatterySwap", "data": json.dumps(swap)},
        )
        assert swapped == {"status": "Accepted"}


# -- CSMS → station -------------------------------------------------------------------------------------


async def test_update_charge_point_certificate_by_request_of_cpms_a02(
    start_runtime: StartRuntime, ca_lab: Path, pg_url: str
) -> None:
    """The note's V2G certificate update asked by the central system (2.0.1 A02): the V2G certificate the
    station took expires within the renewal window, so the renewal job sends a tunnelled TriggerMessage
    SignV2GCertificate; the station's CSR follows through the tunnel."""
    runtime = await start(start_runtime, ca_lab, pg_url, accept_unknown=True, certificate_renewal_days=400)
    renewal = runtime.certificate_renewal
    assert renewal is not None
    async with station(runtime, ca_lab, "PNC16-A02", "ocpp1.6") as cp:
        csr, _ = make_csr("PNC16-A02")
        assert (await pnc(cp, "SignCertificate", {"csr": csr}))[1] == {"status": "Accepted"}
        call, _ = await tunnelled_call(cp, "CertificateSigned")
        await answer_tunnelled(cp, call, {"status": "Accepted"})
        await settled(runtime, "PNC16-A02")
        asked = asyncio.create_task(renewal.run_once())
        call, trigger = await tunnelled_call(cp, "TriggerMessage")
        assert trigger == {"requestedMessage": "SignV2GCertificate"}
        await answer_tunnelled(cp, call, {"status": "Accepted"})
        assert await asked == ["PNC16-A02"]
        assert (await pnc(cp, "SignCertificate", {"csr": make_csr("PNC16-A02")[0]}))[1] == {
            "status": "Accepted"
        }
        call, signed = await tunnelled_call(cp, "CertificateSigned")
        assert signed["certificateType"] == "V2GCertificate"
        await answer_tunnelled(cp, call, {"status": "Accepted"})
    renewals = [
        o for o in await rows(runtime, CertificateOperation, "PNC16-A02") if o.action == "RenewCertificate"
    ]
    assert [(o.request, o.status) for o in renewals] == [({"certificate_type": "V2GCertificate"}, "Accepted")]


async def test_install_retrieve_and_delete_iso15118_ca_certificates_m05_m03_m04(
    start_runtime: StartRuntime, ca_lab: Path, pg_url: str
) -> None:
    """The note's CA certificate management of a 1.6 station through the API (2.0.1 M05 install, M03
    retrieve, M04 delete): V2G and MO roots go in a tunnelled InstallCertificate, the CSMS root by the
    security extension's own message; the list of all types asks the 1.6 types one by one and the ISO 15118
    ones through the tunnel, stored; a listed V2G root is deleted through the tunnel; each outcome stored."""
    runtime = await start(start_runtime, ca_lab, pg_url, accept_unknown=True)
    root = (ca_lab / "ca" / "ca.pem").read_text()
    base = "/api/chargers/PNC16-M/installed-certificates"
    async with station(runtime, ca_lab, "PNC16-M", "ocpp1.6") as cp:
        for kind, status in (("V2GRootCertificate", "Accepted"), ("MORootCertificate", "Failed")):
            sent = await api(runtime, "POST", base, json={"certificate_type": kind, "certificate": root})
            call, install = await tunnelled_call(cp, "InstallCertificate")
            assert install == {"certificateType": kind, "certificate": root}
            await answer_tunnelled(cp, call, {"status": status})
            response = await sent
            assert response.status_code == 200 and response.json()["status"] == status, response.text
        sent = await api(
            runtime, "POST", base, json={"certificate_type": "CSMSRootCertificate", "certificate": root}
        )
        call = await expect_call(cp, "InstallCertificate")
        assert call[3]["certificateType"] == "CentralSystemRootCertificate"
        await answer(cp, call, {"status": "Accepted"})
        assert (await sent).json()["status"] == "Accepted"

        sent = await api(runtime, "POST", f"{base}/refresh")
        for kind, reply in (
            ("CentralSystemRootCertificate", {"status": "Accepted", "certificateHashData": [HASH]}),
            ("ManufacturerRootCertificate", {"status": "NotFound"}),
        ):
            call = await expect_call(cp, "GetInstalledCertificateIds")
            assert call[3] == {"certificateType": kind}
            await answer(cp, call, reply)
        call, ask = await tunnelled_call(cp, "GetInstalledCertificateIds")
        assert ask == {"certificateType": ["V2GRootCertificate", "MORootCertificate", "V2GCertificateChain"]}
        chain = [
            {"certificateType": "V2GRootCertificate", "certificateHashData": {**HASH, "serialNumber": "5A02"}}
        ]
        await answer_tunnelled(cp, call, {"status": "Accepted", "certificateHashDataChain": chain})
        listed = (await sent).json()
        assert [(i["certificate_type"], i["serial_number"]) for i in listed["items"]] == [
            ("CSMSRootCertificate", "5A01"),
            ("V2GRootCertificate", "5A02"),
        ]

        sent = await api(runtime, "DELETE", f"{base}/5A02")
        call, delete = await tunnelled_call(cp, "DeleteCertificate")
        assert delete == {"certificateHashData": {**HASH, "serialNumber": "5A02"}}
        await answer_tunnelled(cp, call, {"status": "Accepted"})
        assert (await sent).json()["status"] == "Accepted"
        sent = await api(runtime, "DELETE", f"{base}/5A01")
        call = await expect_call(cp, "DeleteCertificate")  # the CSMS root: the security extension's message
        await answer(cp, call, {"status": "Accepted"})
        assert (await sent).json()["status"] == "Accepted"
    assert await rows(runtime, InstalledCertificate, "PNC16-M") == []
    actions = [(o.action, o.status) for o in await rows(runtime, CertificateOperation, "PNC16-M")]
    assert actions == [
        ("InstallCertificate", "Accepted"),
        ("InstallCertificate", "Failed"),
        ("InstallCertificate", "Accepted"),
        ("GetInstalledCertificateIds", "Accepted"),
        ("DeleteCertificate", "Accepted"),
        ("DeleteCertificate", "Accepted"),
    ]


async def test_station_without_plug_and_charge(
    start_runtime: StartRuntime, ca_lab: Path, sqlite_url: str
) -> None:
    """A 1.6 station that does not do the note answers the tunnel UnknownVendorId: installing a V2G root is
    a charger error NotSupported (502); listing all its certificates gives the 1.6 ones alone; an answer
    whose data breaks the 2.0.1 schema is an invalid charger response."""
    runtime = await start(start_runtime, ca_lab, sqlite_url, accept_unknown=True)
    root = (ca_lab / "ca" / "ca.pem").read_text()
    base = "/api/chargers/PNC16-NO/installed-certificates"
    async with station(runtime, ca_lab, "PNC16-NO", "ocpp1.6") as cp:
        sent = await api(
            runtime, "POST", base, json={"certificate_type": "V2GRootCertificate", "certificate": root}
        )
        call, _ = await tunnelled_call(cp, "InstallCertificate")
        await answer(cp, call, {"status": "UnknownVendorId"})
        refused = await sent
        assert refused.status_code == 502 and refused.json()["ocpp_error"] == "NotSupported", refused.text

        sent = await api(runtime, "POST", f"{base}/refresh")
        for _ in range(2):
            await answer(cp, await expect_call(cp, "GetInstalledCertificateIds"), {"status": "NotFound"})
        call, _ = await tunnelled_call(cp, "GetInstalledCertificateIds")
        await answer(cp, call, {"status": "UnknownVendorId"})
        assert (await sent).json() == {"charger_id": "PNC16-NO", "status": "NotFound", "items": []}

        sent = await api(
            runtime, "POST", base, json={"certificate_type": "MORootCertificate", "certificate": root}
        )
        call, _ = await tunnelled_call(cp, "InstallCertificate")
        await answer_tunnelled(cp, call, {"status": "Maybe"})
        broken = await sent
        assert broken.status_code == 502 and broken.json()["error"] == "invalid_charger_response", broken.text


# -- the simulator's 1.6 Plug & Charge --------------------------------------------------------------------


async def test_simulated_1_6_charger_does_plug_and_charge(
    start_runtime: StartRuntime, tmp_path: Path
) -> None:
    """A simulated 1.6 charger with ISO15118PnCEnabled gets a V2G root installed and listed, its V2G
    certificate signed on the CSMS's TriggerMessage SignV2GCertificate, and an EV certificate from the lab
    pool, all through the tunnel; with the key off it answers UnknownVendorId: the API says NotSupported."""
    runtime = await start_runtime(
        accept_unknown=True, ca_dir=tmp_path / "ca", ca_organization="chargeops", contract_cert_test_pool=True
    )
    root = TestCa("V2G root").cert.public_bytes(serialization.Encoding.PEM).decode()
    env = SimEnvironment(strict=True, backoff_base=0.2, backoff_cap=1.0)
    url = f"ws://127.0.0.1:{runtime.gateway.port}/ocpp"  # type: ignore[union-attr]
    chargers = []
    for cid, enabled in (("SIM-PNC16", "true"), ("SIM-NOPNC", "false")):
        cp = SimulatedCharger(cid, url, protocol="ocpp1.6", env=env)
        cp.config.put(sim_pnc.ENABLED_KEY, enabled)
        await cp.start()
        await cp.wait_until_accepted(10)
        chargers.append(cp)
    sim = chargers[0]
    try:
        base = "/api/chargers/SIM-PNC16/installed-certificates"
        body = {"certificate_type": "V2GRootCertificate", "certificate": root}
        assert (await (await api(runtime, "POST", base, json=body))).json()["status"] == "Accepted"
        listed = (await (await api(runtime, "POST", f"{base}/refresh"))).json()
        assert [i["certificate_type"] for i in listed["items"]] == ["V2GRootCertificate"]

        trigger = json.dumps({"requestedMessage": "SignV2GCertificate"})
        relay = {"vendorId": PNC, "messageId": "TriggerMessage", "data": trigger}  # the raw relay
        renewal = await api(runtime, "POST", "/api/chargers/SIM-PNC16/ocpp/DataTransfer", json=relay)
        assert json.loads((await renewal).json()["response"]["data"]) == {"status": "Accepted"}
        issued = await settled(runtime, "SIM-PNC16")
        assert issued.certificate_type == "V2GCertificate" and issued.delivery == "Accepted"
        assert [k for k, _ in sim.certificates(["V2GCertificateChain"])] == ["V2GCertificateChain"]

        answers: list[Any] = []
        request = {
            "iso15118SchemaVersion": "urn:iso:15118:2:2013:MsgDef",
            "action": "Install",
            "exiRequest": "RVhJ",
        }
        sim_pnc.send(sim, "Get15118EVCertificate", request, answers.append)
        await until(lambda: bool(answers), what="the EV certificate answer")
        assert answers[0]["status"] == "Accepted"

        refused = await (
            await api(runtime, "POST", "/api/chargers/SIM-NOPNC/installed-certificates", json=body)
        )
        assert refused.status_code == 502 and refused.json()["ocpp_error"] == "NotSupported", refused.text
    finally:
        for cp in chargers:
            await cp.stop()
