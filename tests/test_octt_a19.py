"""TC_A_19 (Upgrade Charging Station Security Profile - Accepted, A05) of an independent port of the OCTT's
CSMS tests (issue 11, tzi-OCTT), written from what the port's station sends and expects: a real 2.0.1
station against a whole chargeops process, the manual actions (new NetworkConnectionProfile one profile
higher, NetworkConfigurationPriority, reboot) done through the operator API's OCPP relay.

chargeops failed it: after the upgrade the station's old profile was still let in (step 11), and a
profile-2 station coming back with its new client certificate and no password was refused (step 8) unless
the operator had changed its profile first. Now the profile the station accepted in SetNetworkProfile is
kept as pending; its first connection proving it makes it the charger's profile (`ocpp_gateway.
network_profiles`)."""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from chargeops.db.models import Charger
from ops.runtime import Runtime
from tests.certificate_support import key_pem, make_csr, start
from tests.conftest import StartRuntime
from tests.ocpp_client import RawCharger, basic
from tests.octt_support import api, connector, operator

pytest_plugins = ("tests.certificate_support",)

PASSWORD = "octt-a19-password-0001"
HTTPS = {"X-Forwarded-Proto": "https"}  # as a TLS-terminating balancer (trusted) sets it


def _relay(cid: str, action: str) -> str:
    return f"/api/chargers/{cid}/ocpp/{action}"


def _network_profile(url: str, profile: int) -> dict[str, Any]:
    """SetNetworkProfile for configuration slot 1 as TC_A_19 checks it."""
    connection = {
        "ocppVersion": "OCPP20",
        "ocppTransport": "JSON",
        "ocppCsmsUrl": url,
        "messageTimeout": 30,
        "securityProfile": profile,
        "ocppInterface": "Wired0",
    }
    return {"configurationSlot": 1, "connectionData": connection}


async def _register(runtime: Runtime, cid: str, profile: int) -> None:
    async with api(runtime) as client:
        r = await client.post(
            "/api/chargers", json={"id": cid, "password": PASSWORD, "security_profile": profile}
        )
    assert r.status_code == 201, r.text


async def _profile_of(runtime: Runtime, cid: str) -> int:
    async with api(runtime) as client:
        return int((await client.get(f"/api/chargers/{cid}")).json()["security_profile"])


async def _pending_of(runtime: Runtime, cid: str) -> int | None:
    async with api(runtime) as client:
        return (await client.get(f"/api/chargers/{cid}")).json()["pending_security_profile"]


def _connect(
    url: str,
    *,
    password: bool = True,
    tls: ssl.SSLContext | None = None,
    headers: dict[str, str] | None = None,
) -> Any:
    extra = {**(basic(url.rsplit("/", 1)[1], PASSWORD) if password else {}), **(headers or {})}
    return connect(url, subprotocols=["ocpp2.0.1"], additional_headers=extra, ssl=tls)  # type: ignore[list-item]


async def _booted(ws: Any) -> RawCharger:
    """Reusable state Booted: BootNotification Accepted, the connector Available (StatusNotification and
    NotifyEvent)."""
    cp = RawCharger(ws, "ocpp2.0.1")
    assert (await cp.boot())["status"] == "Accepted"
    await connector(cp, "Available")
    return cp


async def _upgrade(runtime: Runtime, cp: RawCharger, cid: str, url: str, profile: int) -> None:
    """Steps 1–6: SetNetworkProfile with the new profile in configuration slot 1, SetVariables
    OCPPCommCtrlr.NetworkConfigurationPriority "1,0", Reset; each as the port's tool checks it."""
    answers = [("SetNetworkProfile", {"status": "Accepted"})]
    body = _network_profile(url, profile)
    r, (sent,) = await operator(runtime, cp, "POST", _relay(cid, "SetNetworkProfile"), answers, json=body)
    assert r.json()["response"] == {"status": "Accepted"}, r.text
    assert (
        sent["connectionData"]["securityProfile"] == profile
        and sent["connectionData"]["ocppVersion"] == "OCPP20"
    )
    priority = {
        "component": {"name": "OCPPCommCtrlr"},
        "variable": {"name": "NetworkConfigurationPriority"},
        "attributeValue": "1,0",
    }
    result = {
        "attributeStatus": "Accepted",
        "component": priority["component"],
        "variable": priority["variable"],
    }
    r, (sent,) = await operator(
        runtime, cp, "POST", _relay(cid, "SetVariables"),
        [("SetVariables", {"setVariableResult": [result]})], json={"setVariableData": [priority]},
    )  # fmt: skip
    assert r.status_code == 200, r.text
    assert sent["setVariableData"][0]["attributeValue"].split(",")[0] == "1"
    r, _ = await operator(
        runtime,
        cp,
        "POST",
        _relay(cid, "Reset"),
        [("Reset", {"status": "Accepted"})],
        json={"type": "Immediate"},
    )
    assert r.json()["response"] == {"status": "Accepted"}, r.text


async def test_tc_a_19_upgrade_from_security_profile_2_to_3(
    start_runtime: StartRuntime, ca_lab: Path, pg_url: str
) -> None:
    """Memory state RenewChargingStationCertificate over profile 2 (TriggerMessage, SignCertificate,
    CertificateSigned); steps 1–6; the station comes back with its client certificate and no password
    (accepted, Booted); with its old profile 2 (Basic auth over TLS): refused; with profile 3 again:
    accepted. Before it proved profile 3 its profile 2 still worked (a station falling back, A05)."""
    runtime = await start(start_runtime, ca_lab, pg_url)
    cid = "OCTT-A19-P2"
    await _register(runtime, cid, 2)
    url = f"wss://127.0.0.1:{runtime.gateway.port}/ocpp/{cid}"  # type: ignore[union-attr]
    server_only = ssl.create_default_context(cafile=str(ca_lab / "server.pem"))
    async with _connect(url, tls=server_only) as ws:
        cp = await _booted(ws)
        trigger = {"requestedMessage": "SignChargingStationCertificate"}
        r, _ = await operator(
            runtime, cp, "POST", _relay(cid, "TriggerMessage"), [("TriggerMessage", {"status": "Accepted"})],
            json=trigger,
        )  # fmt: skip
        assert r.json()["response"] == {"status": "Accepted"}, r.text
        csr, key = make_csr(cid)
        request = {"csr": csr, "certificateType": "ChargingStationCertificate"}
        assert (await cp.call("SignCertificate", request))[2] == {"status": "Accepted"}
        signed = await cp.recv()
        assert signed[2] == "CertificateSigned", signed
        await ws.send(f'[3, "{signed[1]}", {{"status": "Accepted"}}]')
        (ca_lab / "a19.pem").write_text(signed[3]["certificateChain"])
        (ca_lab / "a19.key").write_bytes(key_pem(key))
        await _upgrade(runtime, cp, cid, url, 3)
    assert (await _profile_of(runtime, cid), await _pending_of(runtime, cid)) == (2, 3)
    async with _connect(url, tls=server_only) as ws:  # not moved yet: the old profile still works
        await _booted(ws)
    with_certificate = ssl.create_default_context(cafile=str(ca_lab / "server.pem"))
    with_certificate.load_cert_chain(str(ca_lab / "a19.pem"), str(ca_lab / "a19.key"))
    async with _connect(url, password=False, tls=with_certificate) as ws:  # steps 7–9
        await _booted(ws)
    assert (await _profile_of(runtime, cid), await _pending_of(runtime, cid)) == (3, None)
    with pytest.raises(InvalidStatus) as refused:  # steps 10–11
        async with _connect(url, tls=server_only):
            pass
    assert refused.value.response.status_code == 401
    async with _connect(url, password=False, tls=with_certificate) as ws:  # steps 12–13
        assert (await RawCharger(ws, "ocpp2.0.1").call("Heartbeat", {}))[0] == 3


async def test_tc_a_19_upgrade_from_security_profile_1_to_2(start_runtime: StartRuntime) -> None:
    """From profile 1 (Basic auth, no TLS) to 2 (Basic auth over TLS), here TLS ended at a trusted balancer
    (`--trusted-proxies`, X-Forwarded-Proto https). Steps 1–6 over profile 1; back over TLS: accepted,
    Booted; over plain ws:// again: refused; over TLS again: accepted."""
    runtime = await start_runtime(trusted_proxies="127.0.0.1/32")
    cid = "OCTT-A19-P1"
    await _register(runtime, cid, 1)
    url = f"ws://127.0.0.1:{runtime.gateway.port}/ocpp/{cid}"  # type: ignore[union-attr]
    async with _connect(url) as ws:
        await _upgrade(runtime, await _booted(ws), cid, url.replace("ws://", "wss://"), 2)
    async with _connect(url, headers=HTTPS) as ws:
        await _booted(ws)
    assert await _profile_of(runtime, cid) == 2
    with pytest.raises(InvalidStatus) as refused:
        async with _connect(url):
            pass
    assert refused.value.response.status_code == 401
    async with _connect(url, headers=HTTPS) as ws:
        assert (await RawCharger(ws, "ocpp2.0.1").call("Heartbeat", {}))[0] == 3


async def test_a_rejected_or_lower_network_profile_changes_nothing(start_runtime: StartRuntime) -> None:
    """A SetNetworkProfile the station rejects, or one with a lower profile, sets no pending upgrade: the
    profile-2 charger over TLS keeps connecting as before (no downgrade but by the operator). An operator
    setting the profile (PATCH) ends an upgrade under way."""
    runtime = await start_runtime(trusted_proxies="127.0.0.1/32")
    cid = "OCTT-A19-NO"
    await _register(runtime, cid, 2)
    url = f"ws://127.0.0.1:{runtime.gateway.port}/ocpp/{cid}"  # type: ignore[union-attr]
    async with _connect(url, headers=HTTPS) as ws:
        cp = await _booted(ws)
        for profile, status in ((3, "Rejected"), (1, "Accepted")):
            answers = [("SetNetworkProfile", {"status": status})]
            body = _network_profile(url, profile)
            r, _ = await operator(runtime, cp, "POST", _relay(cid, "SetNetworkProfile"), answers, json=body)
            assert r.json()["response"] == {"status": status}, r.text
    async with runtime.sessions() as s:
        row = await s.get(Charger, cid)
        assert row is not None and row.security_profile == 2 and row.pending_security_profile is None
    async with _connect(url, headers=HTTPS) as ws:  # an upgrade agreed to, then the operator decides
        cp = await _booted(ws)
        answers = [("SetNetworkProfile", {"status": "Accepted"})]
        body = _network_profile(url, 3)
        await operator(runtime, cp, "POST", _relay(cid, "SetNetworkProfile"), answers, json=body)
    assert await _pending_of(runtime, cid) == 3
    async with api(runtime) as client:
        assert (await client.patch(f"/api/chargers/{cid}", json={"security_profile": 2})).status_code == 200
    assert await _pending_of(runtime, cid) is None
    with pytest.raises(InvalidStatus):  # still profile 2: plain ws:// refused
        async with _connect(url):
            pass
    async with _connect(url, headers=HTTPS) as ws:
        assert (await RawCharger(ws, "ocpp2.0.1").call("Heartbeat", {}))[0] == 3


async def test_tc_083_a_1_6_station_moved_by_change_configuration_security_profile(
    start_runtime: StartRuntime,
) -> None:
    """The 1.6 security whitepaper's way (the OCTT's 1.6 TC_083_CSMS): ChangeConfiguration SecurityProfile
    "2" Accepted, Reset; back over TLS (at the trusted balancer): accepted and now profile 2; over plain
    ws:// again: refused."""
    runtime = await start_runtime(trusted_proxies="127.0.0.1/32")
    cid = "OCTT-083"
    await _register(runtime, cid, 1)
    url = f"ws://127.0.0.1:{runtime.gateway.port}/ocpp/{cid}"  # type: ignore[union-attr]
    auth = basic(cid, PASSWORD)
    async with connect(url, subprotocols=["ocpp1.6"], additional_headers=auth) as ws:  # type: ignore[list-item]
        cp = RawCharger(ws, "ocpp1.6")
        assert (await cp.boot())["status"] == "Accepted"
        answers = [("ChangeConfiguration", {"status": "Accepted"})]
        body = {"key": "SecurityProfile", "value": "2"}
        r, _ = await operator(runtime, cp, "POST", _relay(cid, "ChangeConfiguration"), answers, json=body)
        assert r.json()["response"] == {"status": "Accepted"}, r.text
    assert await _profile_of(runtime, cid) == 1
    over_tls = {**auth, **HTTPS}
    async with connect(url, subprotocols=["ocpp1.6"], additional_headers=over_tls) as ws:  # type: ignore[list-item]
        assert (await RawCharger(ws, "ocpp1.6").boot())["status"] == "Accepted"
    assert await _profile_of(runtime, cid) == 2
    with pytest.raises(InvalidStatus) as refused:
        async with connect(url, subprotocols=["ocpp1.6"], additional_headers=auth):  # type: ignore[list-item]
            pass
    assert refused.value.response.status_code == 401


async def test_a_charger_without_a_password_is_only_moved_to_profile_3(start_runtime: StartRuntime) -> None:
    """Profile 0 (no password): a SetNetworkProfile to 2 it accepts sets no pending profile (it has no
    password to prove 2 with); one to 3 does (its client certificate will prove it)."""
    runtime = await start_runtime(accept_unknown=True)
    cid = "OCTT-A19-P0"
    url = f"ws://127.0.0.1:{runtime.gateway.port}/ocpp/{cid}"  # type: ignore[union-attr]
    async with _connect(url, password=False) as ws:
        cp = await _booted(ws)
        for profile, pending in ((2, None), (3, 3)):
            answers = [("SetNetworkProfile", {"status": "Accepted"})]
            body = _network_profile(url, profile)
            await operator(runtime, cp, "POST", _relay(cid, "SetNetworkProfile"), answers, json=body)
            assert (await _profile_of(runtime, cid), await _pending_of(runtime, cid)) == (0, pending)
