"""Block M through the operator API: CA certificates installed on, listed from and deleted from stations
(1.6 security extension and 2.0.1), every answer stored. Raw stations over wss://, test case ids in names."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx

from ops.runtime import Runtime
from tests.certificate_support import (
    ADMIN,
    answer,
    expect_call,
    start,
    station,
)
from tests.conftest import StartRuntime
from tests.ocpp_client import RawCharger

pytest_plugins = ("tests.certificate_support",)

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
    start_runtime: StartRuntime, ca_lab: Path, sqlite_url: str
) -> None:
    """TC_M_01-04: CSMSRoot, ManufacturerRoot, V2GRoot, MORoot installed (Accepted); TC_M_05: the station
    answers Failed, which is told and stored. A 1.6 station takes the first two by 1.6 names."""
    runtime = await start(start_runtime, ca_lab, sqlite_url, accept_unknown=True)
    root = (ca_lab / "ca" / "ca.pem").read_text()
    path = "/api/chargers/CP-M201/installed-certificates"
    async with station(runtime, ca_lab, "CP-M201") as cp:
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
    async with station(runtime, ca_lab, "CP-M16", "ocpp1.6") as cp:
        path16 = "/api/chargers/CP-M16/installed-certificates"
        body = {"certificate_type": "CSMSRootCertificate", "certificate": root}
        expected = {"certificateType": "CentralSystemRootCertificate", "certificate": root}
        r = await api_call(
            runtime, cp, "POST", path16, [("InstallCertificate", expected, {"status": "Accepted"})], json=body
        )
        assert r.json()["status"] == "Accepted"
        # A V2G root goes through the Plug & Charge DataTransfer (tests/test_plug_and_charge_16.py).


async def test_tc_m_12_to_21_retrieve_and_delete_certificates(
    start_runtime: StartRuntime, ca_lab: Path, pg_url: str
) -> None:
    """TC_M_12-18: GetInstalledCertificateIds of one, two or all types, the answer stored and listed;
    TC_M_19: NotFound; TC_M_20: DeleteCertificate with the listed hash data, Accepted, gone from the list;
    TC_M_21: Failed, kept. A 1.6 station is asked once per type (its ISO 15118 ones through the tunnel)."""
    runtime = await start(start_runtime, ca_lab, pg_url, accept_unknown=True)
    refresh = "/api/chargers/CP-M12/installed-certificates/refresh"
    chain = [
        {"certificateType": "CSMSRootCertificate", "certificateHashData": HASH},
        {
            "certificateType": "V2GCertificateChain",
            "certificateHashData": {**HASH, "serialNumber": "7F02"},
            "childCertificateHashData": [{**HASH, "serialNumber": "7F03"}],
        },
    ]
    async with station(runtime, ca_lab, "CP-M12") as cp:
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
    async with station(runtime, ca_lab, "CP-M16B", "ocpp1.6") as cp:
        r = await api_call(
            runtime, cp, "POST", "/api/chargers/CP-M16B/installed-certificates/refresh",
            [("GetInstalledCertificateIds", {"certificateType": "CentralSystemRootCertificate"},
              {"status": "Accepted", "certificateHashData": [HASH]}),
             ("GetInstalledCertificateIds", {"certificateType": "ManufacturerRootCertificate"},
              {"status": "NotFound"}),
             ("DataTransfer", None, {"status": "UnknownVendorId"})],  # no Plug & Charge: its 1.6 ones alone
        )  # fmt: skip
        assert r.json()["status"] == "Accepted"
        assert [(i["certificate_type"], i["serial_number"]) for i in r.json()["items"]] == [
            ("CSMSRootCertificate", "7F01")
        ]


async def test_tc_m_101_install_oem_root_certificate_on_2_1(
    start_runtime: StartRuntime, ca_lab: Path, sqlite_url: str
) -> None:
    """TC_M_101 (OCPP 2.1): an OEMRootCertificate goes to a 2.1 station as InstallCertificate of that
    type (Accepted, stored) and is listed by GetInstalledCertificateIds; a 2.0.1 station, whose schema has
    no such type, gets nothing: 422 saying 2.1 is needed."""
    runtime = await start(start_runtime, ca_lab, sqlite_url, accept_unknown=True)
    root = (ca_lab / "ca" / "ca.pem").read_text()
    oem = {"certificate_type": "OEMRootCertificate", "certificate": root}
    async with station(runtime, ca_lab, "CP-M101", "ocpp2.1") as cp:
        expected = {"certificateType": "OEMRootCertificate", "certificate": root}
        path = "/api/chargers/CP-M101/installed-certificates"
        r = await api_call(
            runtime, cp, "POST", path, [("InstallCertificate", expected, {"status": "Accepted"})], json=oem
        )
        assert r.status_code == 200 and r.json()["status"] == "Accepted", r.text
        listed = {"status": "Accepted", "certificateHashDataChain": [
            {"certificateType": "OEMRootCertificate", "certificateHashData": HASH}
        ]}  # fmt: skip
        r = await api_call(
            runtime, cp, "POST", f"{path}/refresh",
            [("GetInstalledCertificateIds", {"certificateType": ["OEMRootCertificate"]}, listed)],
            json={"certificate_types": ["OEMRootCertificate"]},
        )  # fmt: skip
        assert [(i["certificate_type"], i["serial_number"]) for i in r.json()["items"]] == [
            ("OEMRootCertificate", "7F01")
        ]
    async with station(runtime, ca_lab, "CP-M101B", "ocpp2.0.1") as cp:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{runtime.http_port}", headers=ADMIN) as api:
            refused = await api.post("/api/chargers/CP-M101B/installed-certificates", json=oem)
            assert refused.status_code == 422 and "2.1" in refused.json()["detail"], refused.text
            ops = (await api.get("/api/chargers/CP-M101B/certificate-operations")).json()["items"]
        assert ops and ops[0]["status"] != "Accepted"
