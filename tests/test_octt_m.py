"""Block M cases of an independent port of the OCTT's CSMS tests (issue 11, tzi-OCTT) that had never run
against chargeops, written from what the port's station expects (and OCPP 2.0.1 M03 / M04): a real 2.0.1
station over wss:// against a whole chargeops process (its built-in CA as client CA, on PostgreSQL), the
OCTT's manual actions done through the operator API's certificate routes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.certificate_support import start, station
from tests.conftest import StartRuntime
from tests.octt_support import api, operator

pytest_plugins = ("tests.certificate_support",)

REFRESH = "/api/chargers/{}/installed-certificates/refresh"
HEX_LENGTH = {"SHA256": 64, "SHA384": 96, "SHA512": 128}


def _hash(algorithm: str, serial: str, seed: str = "ab") -> dict[str, str]:
    length = HEX_LENGTH[algorithm]
    return {
        "hashAlgorithm": algorithm,
        "issuerNameHash": (seed * length)[:length],
        "issuerKeyHash": ("ef" * length)[:length],
        "serialNumber": serial,
    }


async def test_tc_m_13_manufacturer_root_certificates_are_retrieved(
    start_runtime: StartRuntime, ca_lab: Path, pg_url: str
) -> None:
    """GetInstalledCertificateIds with certificateType [ManufacturerRootCertificate]; the station's hash
    data is answered to the operator and kept as the station's list."""
    runtime = await start(start_runtime, ca_lab, pg_url, accept_unknown=True)
    chain = [
        {"certificateType": "ManufacturerRootCertificate", "certificateHashData": _hash("SHA256", "01020304")}
    ]
    async with station(runtime, ca_lab, "OCTT-M13") as cp:
        r, (sent,) = await operator(
            runtime, cp, "POST", REFRESH.format("OCTT-M13"),
            [("GetInstalledCertificateIds", {"status": "Accepted", "certificateHashDataChain": chain})],
            json={"certificate_types": ["ManufacturerRootCertificate"]},
        )  # fmt: skip
    assert sent == {"certificateType": ["ManufacturerRootCertificate"]}
    assert r.status_code == 200, r.text
    assert [(i["certificate_type"], i["serial_number"]) for i in r.json()["items"]] == [
        ("ManufacturerRootCertificate", "01020304")
    ]


async def test_tc_m_15_the_v2g_certificate_chain_is_retrieved_with_its_sub_cas(
    start_runtime: StartRuntime, ca_lab: Path, pg_url: str
) -> None:
    """certificateType [V2GCertificateChain]; the station's V2G certificate with its sub-CA as
    childCertificateHashData (M03.FR.05) is listed with the child."""
    runtime = await start(start_runtime, ca_lab, pg_url, accept_unknown=True)
    chain = [
        {
            "certificateType": "V2GCertificateChain",
            "certificateHashData": _hash("SHA256", "01020304"),
            "childCertificateHashData": [_hash("SHA256", "05060708", "11")],
        }
    ]
    async with station(runtime, ca_lab, "OCTT-M15") as cp:
        r, (sent,) = await operator(
            runtime, cp, "POST", REFRESH.format("OCTT-M15"),
            [("GetInstalledCertificateIds", {"status": "Accepted", "certificateHashDataChain": chain})],
            json={"certificate_types": ["V2GCertificateChain"]},
        )  # fmt: skip
    assert sent == {"certificateType": ["V2GCertificateChain"]}
    (item,) = r.json()["items"]
    assert item["serial_number"] == "01020304"
    assert [c["serial_number"] for c in item["children"]] == ["05060708"]


async def _install_list_delete(
    runtime: Any, cp: Any, ca_lab: Path, cid: str, hash_data: dict[str, str], deleted: str
) -> tuple[dict[str, Any], dict[str, Any]]:
    """CertificateInstalled (CSMSRootCertificate), then the manual action "delete it": the CSMS lists the
    station's CSMS roots and deletes the one listed. Returns the list request and the delete request."""
    root = (ca_lab / "ca" / "ca.pem").read_text()
    body = {"certificate_type": "CSMSRootCertificate", "certificate": root}
    r, _ = await operator(
        runtime, cp, "POST", f"/api/chargers/{cid}/installed-certificates",
        [("InstallCertificate", {"status": "Accepted"})], json=body,
    )  # fmt: skip
    assert r.json()["status"] == "Accepted", r.text
    chain = [{"certificateType": "CSMSRootCertificate", "certificateHashData": hash_data}]
    r, (listed,) = await operator(
        runtime, cp, "POST", REFRESH.format(cid),
        [("GetInstalledCertificateIds", {"status": "Accepted", "certificateHashDataChain": chain})],
        json={"certificate_types": ["CSMSRootCertificate"]},
    )  # fmt: skip
    assert r.status_code == 200, r.text
    path = f"/api/chargers/{cid}/installed-certificates/{hash_data['serialNumber']}"
    r, (delete,) = await operator(runtime, cp, "DELETE", path, [("DeleteCertificate", {"status": deleted})])
    assert r.status_code == 200 and r.json()["status"] == deleted, r.text
    return listed, delete


@pytest.mark.parametrize("algorithm", ["SHA256", "SHA384", "SHA512"])
async def test_tc_m_20_a_certificate_is_deleted_with_the_hash_data_the_station_gave(
    start_runtime: StartRuntime, ca_lab: Path, pg_url: str, algorithm: str
) -> None:
    """For each hash algorithm: the list asks for CSMSRootCertificate (M04), and the DeleteCertificate
    carries exactly the station's certificateHashData, same hashAlgorithm (M04.FR.07); Accepted: gone from
    the stored list."""
    runtime = await start(start_runtime, ca_lab, pg_url, accept_unknown=True)
    hash_data = _hash(algorithm, "01020304")
    async with station(runtime, ca_lab, "OCTT-M20") as cp:
        listed, delete = await _install_list_delete(runtime, cp, ca_lab, "OCTT-M20", hash_data, "Accepted")
    assert listed == {"certificateType": ["CSMSRootCertificate"]}
    assert delete == {"certificateHashData": hash_data}
    async with api(runtime) as client:
        items = (await client.get("/api/chargers/OCTT-M20/installed-certificates")).json()["items"]
    assert items == []


async def test_tc_m_21_a_failed_delete_is_told_and_the_certificate_kept(
    start_runtime: StartRuntime, ca_lab: Path, pg_url: str
) -> None:
    """The same with the station answering Failed: the operator is told, the certificate stays listed."""
    runtime = await start(start_runtime, ca_lab, pg_url, accept_unknown=True)
    hash_data = _hash("SHA256", "01020304")
    async with station(runtime, ca_lab, "OCTT-M21") as cp:
        _, delete = await _install_list_delete(runtime, cp, ca_lab, "OCTT-M21", hash_data, "Failed")
    assert delete == {"certificateHashData": hash_data}
    async with api(runtime) as client:
        items = (await client.get("/api/chargers/OCTT-M21/installed-certificates")).json()["items"]
    assert [(i["serial_number"], i["hash_algorithm"]) for i in items] == [("01020304", "SHA256")]
