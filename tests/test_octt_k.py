"""Block K cases an independent port of the OCTT's CSMS tests (issue 11) failed, written from OCPP 2.0.1
K15–K17: real WebSocket stations against a whole chargeops process.

TC_K_53 / TC_K_57: the OCTT's ISO15118SmartCharging state sends NotifyEVChargingNeeds with
`requestedEnergyTransfer` only (no AC or DC parameters); the CSMS still owes the session a TxProfile, so it
is planned at what the station can give (its model's rated power, else `--meter-max-power-kw`), within the
site's limit. TC_K_58: a session whose end was lost must not be renegotiated once a newer session runs on
its EVSE; the CSMS-initiated renegotiation goes to the session the station has.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from chargeops.db.models import Charger
from chargeops.db.ops_models import Site
from tests.conftest import StartRuntime
from tests.ocpp_client import raw_charger
from tests.test_ev_smart_charging import AC_22KW, Station, _started

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
    async with runtime.sessions() as s, s.begin():
        s.add(Site(id="depot-k53", name="K53", grid_limit_kw=11))
        s.add(Charger(id="K53-SITE", site="depot-k53", admission="accepted"))
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
    async with runtime.sessions() as s, s.begin():
        s.add(Site(id="depot-k58", name="K58", grid_limit_kw=11))
        s.add(Charger(id="K58-SITE", site="depot-k58", admission="accepted"))
    needs = {
        "evseId": 1,
        "chargingNeeds": {"requestedEnergyTransfer": "AC_three_phase", "acChargingParameters": AC_22KW},
    }
    async with raw_charger(runtime.gateway.port, "K58-SITE", "ocpp2.0.1") as raw:  # type: ignore[union-attr]
        await raw.boot()
        cp = Station(raw)
        for n, tx in enumerate(("TX-OLD", "TX-NEW")):
            await cp.result("TransactionEvent", _started(tx))
            assert (await cp.result("NotifyEVChargingNeeds", needs))["status"] == "Accepted"
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
    async with runtime.sessions() as s, s.begin():
        s.add(Site(id="depot-k58o", name="K58", grid_limit_kw=11))
        s.add(Charger(id="K58-ORDER", site="depot-k58o", admission="accepted"))
    needs = {
        "evseId": 1,
        "chargingNeeds": {"requestedEnergyTransfer": "AC_three_phase", "acChargingParameters": AC_22KW},
    }
    async with raw_charger(runtime.gateway.port, "K58-ORDER", "ocpp2.0.1") as raw:  # type: ignore[union-attr]
        await raw.boot()
        cp = OrderedStation(raw)
        await cp.result("TransactionEvent", _started("TX-K58O"))
        assert (await cp.result("NotifyEVChargingNeeds", needs))["status"] == "Accepted"
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
