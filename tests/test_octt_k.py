"""Block K cases an independent port of the OCTT's CSMS tests (issue 11) failed, written from OCPP 2.0.1
K15–K17: real WebSocket stations against a whole chargeops process.

TC_K_53 / TC_K_57: the OCTT's ISO15118SmartCharging state sends NotifyEVChargingNeeds with
`requestedEnergyTransfer` only (no AC or DC parameters); the CSMS still owes the session a TxProfile, so it
is planned at what the station can give (its model's rated power, else `--meter-max-power-kw`), within the
site's limit. TC_K_58: a session whose end was lost must not be renegotiated once a newer session runs on
its EVSE; the CSMS-initiated renegotiation goes to the session the station has. TC_K_59: the operator
starts the renegotiation on demand (`POST /api/chargers/{id}/evses/{evse}/renegotiate`); the most recent
SetChargingProfile must be the transaction's TxProfile.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from chargeops.db.models import EvOperatorCap
from chargeops.db.ops_models import Site
from ops.runtime import Runtime
from tests.conftest import StartRuntime
from tests.ocpp_client import raw_charger
from tests.test_ev_smart_charging import AC_NEEDS, Station, _started, site_with_charger
from tests.waiting import until

BARE_NEEDS = {"evseId": 1, "chargingNeeds": {"requestedEnergyTransfer": "AC_three_phase"}}


def _limits(profile: dict[str, Any]) -> list[dict[str, Any]]:
    return profile["chargingProfile"]["chargingSchedule"][0]["chargingSchedulePeriod"]  # type: ignore[no-any-return]


async def test_tc_k_53_needs_without_ev_parameters_get_a_tx_profile_at_the_station_rating(
    start_runtime: StartRuntime,
) -> None:
    """No AC/DC parameters: Accepted (was Rejected `NoSchedule`), and a TxProfile of the transaction at the
    station's ceiling (22 kW here); at a site with an 11 kW grid connection the site's limit (10,400 W).
    K57: the same bare needs again renegotiate (same profile id). Without a transaction still Rejected."""
    runtime = await start_runtime(accept_unknown=True, meter_max_power_kw=22)
    await site_with_charger(runtime, "depot-k53", "K53-SITE")
    async with raw_charger(runtime.gateway.port, "K53-BARE", "ocpp2.0.1") as raw:  # type: ignore[union-attr]
        await raw.boot()
        cp = Station(raw)
        assert (await cp.result("NotifyEVChargingNeeds", BARE_NEEDS))[
            "status"
        ] == "Rejected"  # no transaction
        await cp.result("TransactionEvent", _started("TX-K53"))
        assert await cp.result("NotifyEVChargingNeeds", BARE_NEEDS) == {"status": "Accepted"}
        first = await cp.next_profile(0)
        assert first["chargingProfile"]["transactionId"] == "TX-K53"
        assert _limits(first) == [{"startPeriod": 0, "limit": 22_000.0}]
        assert await cp.result("NotifyEVChargingNeeds", BARE_NEEDS) == {"status": "Accepted"}
        again = await cp.next_profile(1)
        assert again["chargingProfile"]["id"] == first["chargingProfile"]["id"]
    async with raw_charger(runtime.gateway.port, "K53-SITE", "ocpp2.0.1") as raw:  # type: ignore[union-attr]
        await raw.boot()
        cp = Station(raw)
        await cp.result("TransactionEvent", _started("TX-K53-SITE"))
        assert await cp.result("NotifyEVChargingNeeds", BARE_NEEDS) == {"status": "Accepted"}
        assert _limits(await cp.next_profile(0)) == [{"startPeriod": 0, "limit": 10_400.0}]


async def test_tc_k_58_only_the_session_running_on_the_evse_is_renegotiated(
    start_runtime: StartRuntime,
) -> None:
    """TX-OLD's end never arrived; TX-NEW starts on the same EVSE and gets its schedule. When the site's
    limit drops (11 → 7 kW) the CSMS renegotiates TX-NEW alone, within the new limit: no TxProfile for TX-OLD,
    which the station no longer has."""
    runtime = await start_runtime(accept_unknown=True, site_plan_interval=0.3)
    await site_with_charger(runtime, "depot-k58", "K58-SITE")
    async with raw_charger(runtime.gateway.port, "K58-SITE", "ocpp2.0.1") as raw:  # type: ignore[union-attr]
        await raw.boot()
        cp = Station(raw)
        for n, tx in enumerate(("TX-OLD", "TX-NEW")):
            await cp.result("TransactionEvent", _started(tx))
            assert (await cp.result("NotifyEVChargingNeeds", AC_NEEDS))["status"] == "Accepted"
            assert (await cp.next_profile(n))["chargingProfile"]["transactionId"] == tx
        async with runtime.sessions() as s, s.begin():
            (await s.get(Site, "depot-k58")).grid_limit_kw = 7  # type: ignore[union-attr]
        renegotiated = await asyncio.wait_for(cp.next_profile(2), 15)
        assert renegotiated["chargingProfile"]["transactionId"] == "TX-NEW"
        assert _limits(renegotiated)[0]["limit"] <= 6_600.0  # within 7 kW less 5 % (the planner shares it)
        with pytest.raises(TimeoutError):  # the planner may move the limit again: still TX-NEW's alone
            while True:
                later = await asyncio.wait_for(cp.next_profile(len(cp.tx_profiles)), 2)
                assert later["chargingProfile"]["transactionId"] == "TX-NEW"


class OrderedStation(Station):
    """A Station that also notes the purpose of every SetChargingProfile, in the order they came."""

    def __init__(self, cp: Any) -> None:
        super().__init__(cp)
        self.purposes: list[str] = []

    async def _take(self, frame: list[Any]) -> None:
        self.purposes.append(frame[3]["chargingProfile"]["chargingProfilePurpose"])
        await super()._take(frame)


async def test_tc_k_58_the_renegotiated_tx_profile_comes_before_the_default_profile(
    start_runtime: StartRuntime,
) -> None:
    """The site's limit drops while an ISO 15118 session runs: the session's new TxProfile (what holds the
    EV) reaches the station before the site planner's new TxDefaultProfile, as TC_K_58 expects the first
    SetChargingProfile after the CSMS's trigger to be the TxProfile of the transaction."""
    runtime = await start_runtime(accept_unknown=True, site_plan_interval=0.3)
    await site_with_charger(runtime, "depot-k58o", "K58-ORDER")
    async with raw_charger(runtime.gateway.port, "K58-ORDER", "ocpp2.0.1") as raw:  # type: ignore[union-attr]
        await raw.boot()
        cp = OrderedStation(raw)
        await cp.result("TransactionEvent", _started("TX-K58O"))
        assert (await cp.result("NotifyEVChargingNeeds", AC_NEEDS))["status"] == "Accepted"
        await cp.next_profile(0)
        while "TxDefaultProfile" not in cp.purposes:  # the planner has given the charger its limit
            await cp._take(await asyncio.wait_for(cp.cp.recv(), 15))
        seen = len(cp.purposes)
        async with runtime.sessions() as s, s.begin():
            (await s.get(Site, "depot-k58o")).grid_limit_kw = 7  # type: ignore[union-attr]
        while "TxDefaultProfile" not in cp.purposes[seen:]:
            await cp._take(await asyncio.wait_for(cp.cp.recv(), 15))
        after = cp.purposes[seen:]
        assert after[0] == "TxProfile", after
        assert cp.tx_profiles[-1]["chargingProfile"]["transactionId"] == "TX-K58O"


def _updated(tx: str, seq: int, power_w: float) -> dict[str, Any]:
    """A TransactionEvent Updated with the session's power drawn now."""
    now = datetime.now(UTC).isoformat()
    return {
        "eventType": "Updated",
        "timestamp": now,
        "triggerReason": "MeterValuePeriodic",
        "seqNo": seq,
        "transactionInfo": {"transactionId": tx, "chargingState": "Charging"},
        "evse": {"id": 1, "connectorId": 1},
        "meterValue": [
            {"timestamp": now, "sampledValue": [{"value": power_w, "measurand": "Power.Active.Import"}]}
        ],
    }


async def _renegotiate(
    api: httpx.AsyncClient, cp: Station, url: str, body: dict[str, Any] | None
) -> tuple[httpx.Response, dict[str, Any]]:
    """POST the operator's renegotiation while the station answers what the CSMS sends; the answer and the
    TxProfile the station received for it."""
    seen = len(cp.tx_profiles)
    call = asyncio.create_task(api.post(url, json=body))
    # Answer until the API has its answer: the site planner may send a TxProfile of its own meanwhile, and a
    # station that stopped reading after the first one would leave the operator's call unanswered.
    async with asyncio.timeout(15):
        while not call.done() or len(cp.tx_profiles) <= seen:
            try:
                await cp._take(await asyncio.wait_for(cp.cp.recv(), 0.2))
            except TimeoutError:
                continue
    # The planners may follow with a profile of their own (same id): the one carrying the API's figure is
    # the operator's.
    r = call.result()
    got = cp.tx_profiles[seen:]
    mine = [p for p in got if r.status_code == 200 and _limits(p)[0]["limit"] == r.json()["limit_w"]]
    return r, (mine or got)[0]


async def test_tc_k_59_the_operator_renegotiates_a_session_within_a_cap_of_their_own(
    start_runtime: StartRuntime, db_url: str
) -> None:
    """K16 on demand: an ISO 15118 session runs under the site's 10,400 W; the operator asks for a
    renegotiation capped at 5 kW: the station gets the transaction's TxProfile (same id) at 5,000 W, the API
    answers with it, and it stays the last SetChargingProfile although the EV then draws at the cap (the
    site did not change: no TxDefaultProfile follows). The EV's own renegotiation (K17) stays within the
    cap, after a restart of chargeops too; the cap goes with the transaction. 404 / 409 / 422 for bad asks.
    On SQLite and Postgres."""
    runtime = await start_runtime(db_url, accept_unknown=True, site_plan_interval=0.3)
    await site_with_charger(runtime, "depot-k59", "K59-SITE")
    url = "/api/chargers/K59-SITE/evses/1/renegotiate"

    def client(rt: Runtime) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{rt.http_port}", headers={"Authorization": "Bearer test-admin-token"}
        )

    async with raw_charger(runtime.gateway.port, "K59-SITE", "ocpp2.0.1") as raw, client(runtime) as api:  # type: ignore[union-attr]
        await raw.boot()
        cp = OrderedStation(raw)
        await cp.result("TransactionEvent", _started("TX-K59"))
        r = await api.post(url, json={"limit_kw": 5})
        assert (r.status_code, r.json()["error"]) == (409, "no_ev_session")  # no needs, nothing planned
        assert (await cp.result("NotifyEVChargingNeeds", AC_NEEDS))["status"] == "Accepted"
        first = await cp.next_profile(0)
        while "TxDefaultProfile" not in cp.purposes:  # the site planner has given the charger its limit
            await cp._take(await asyncio.wait_for(cp.cp.recv(), 15))
        assert _limits(cp.tx_profiles[-1]) == [{"startPeriod": 0, "limit": 10_400.0}]

        r, profile = await _renegotiate(api, cp, url, {"limit_kw": 5})
        assert r.status_code == 200, r.text
        assert profile["chargingProfile"]["chargingProfilePurpose"] == "TxProfile"
        assert profile["chargingProfile"]["transactionId"] == "TX-K59"
        assert profile["chargingProfile"]["id"] == first["chargingProfile"]["id"]
        assert _limits(profile) == [{"startPeriod": 0, "limit": 5_000.0}]
        body = r.json()
        assert (body["transaction_id"], body["profile_id"], body["limit_w"], body["status"]) == (
            "TX-K59",
            first["chargingProfile"]["id"],
            5_000.0,
            "Accepted",
        )
        assert (body["site_cap_w"], body["operator_cap_w"]) == (10_400.0, 5_000.0)
        # The EV draws what it may now: the site planner must not take that for an EV holding back.
        await cp.result("TransactionEvent", _updated("TX-K59", 1, 5_000))
        await cp.result("TransactionEvent", _updated("TX-K59", 2, 4_990))
        seen = len(cp.purposes)
        with pytest.raises(TimeoutError):
            while True:
                await cp._take(await asyncio.wait_for(cp.cp.recv(), 3))
        assert cp.purposes[seen - 1] == "TxProfile" and len(cp.purposes) == seen, cp.purposes

        # K17: the EV asks again; the operator's cap holds.
        assert (await cp.result("NotifyEVChargingNeeds", AC_NEEDS))["status"] == "Accepted"
        assert _limits(await cp.next_profile(len(cp.tx_profiles))) == [{"startPeriod": 0, "limit": 5_000.0}]

        for bad in ({"limit_kw": -1}, {"limit_kw": "lots"}, {"limit_kw": 1e9}, {"limit": 5}):
            r = await api.post(url, json=bad)
            assert (r.status_code, r.json()["error"]) == (422, "invalid_request"), bad
        r = await api.post("/api/chargers/K59-SITE/evses/0/renegotiate", json={})
        assert r.status_code == 422
        r = await api.post("/api/chargers/NOPE/evses/1/renegotiate", json={"limit_kw": 5})
        assert (r.status_code, r.json()["error"]) == (404, "not_found")
        r = await api.post("/api/chargers/K59-SITE/evses/2/renegotiate", json={"limit_kw": 5})
        assert (r.status_code, r.json()["error"]) == (409, "no_ev_session")
    await runtime.stop()

    # A restart keeps the cap: the EV's renegotiation after it stays within it.
    runtime = await start_runtime(db_url, accept_unknown=True, site_plan_interval=0.3)
    async with raw_charger(runtime.gateway.port, "K59-SITE", "ocpp2.0.1") as raw, client(runtime) as api:  # type: ignore[union-attr]
        cp = OrderedStation(raw)
        assert (await cp.result("NotifyEVChargingNeeds", AC_NEEDS))["status"] == "Accepted"
        assert _limits(await cp.next_profile(0)) == [{"startPeriod": 0, "limit": 5_000.0}]
        # Without a body the cap stays; null clears it: the site's limit again.
        r, profile = await _renegotiate(api, cp, url, None)
        assert (r.json()["operator_cap_w"], _limits(profile)[0]["limit"]) == (5_000.0, 5_000.0)
        r, profile = await _renegotiate(api, cp, url, {"limit_kw": None})
        assert (r.json()["operator_cap_w"], _limits(profile)[0]["limit"]) == (None, 10_400.0)
        r, _ = await _renegotiate(api, cp, url, {"limit_kw": 3.5})
        assert r.json()["limit_w"] == 3_500.0
        ended = {
            **_started("TX-K59"),
            "eventType": "Ended",
            "triggerReason": "EVCommunicationLost",
            "seqNo": 9,
        }
        await cp.result("TransactionEvent", ended)

        async def cap_gone() -> bool:
            async with runtime.sessions() as s:
                return (await s.scalar(select(func.count()).select_from(EvOperatorCap))) == 0

        await until(cap_gone, 10, "the operator's cap deleted with its transaction")
        r = await api.post(url, json={"limit_kw": 5})
        assert (r.status_code, r.json()["error"]) == (409, "no_ev_session")
