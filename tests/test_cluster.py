"""Several gateways, one fleet (issue 14.4): three `serve --roles gateway` processes, each on its own host (a
network namespace the test makes), behind HAProxy running docker/haproxy/cluster.cfg; two ingest processes
on the shared subscription, one ops and one API process, a private Mosquitto and Postgres
(tests/cluster_lab.py). A few hundred simulated chargers with open transactions go through the balancer
(tests/cluster_fleet.py).

Shown here: commands from the API reach chargers on every gateway; `kill -9` of a gateway moves its chargers
to the others within 30 s and commands follow them; a gateway started later takes the new connections; each
gateway's /metrics counts its own chargers and names itself; a password guesser behind the balancer is
limited by its own address, not the balancer's; every transaction finishes and everything the chargers were
acknowledged is in the database."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus
from websockets.typing import Subprotocol

from tests.cluster_fleet import SimCharger, own_address, run_fleet, until_stored
from tests.cluster_lab import CLUSTER_CFG, HAPROXY, OCPP_PORT, PASSWORD, Gateway, Lab, metric_sum
from tests.ocpp_client import basic
from tests.waiting import until

CHARGERS, LATE = 180, 20
GONE = [f"CL-GONE{n}" for n in range(3)]  # on the gateway that is killed, and never back
pytestmark = pytest.mark.timeout(420)


@pytest.fixture
async def lab() -> AsyncIterator[Lab]:
    ids = [f"CL{i:05d}" for i in range(CHARGERS + LATE)] + ["CL-GENUINE", *GONE]
    env = {"CHARGEOPS_LOGIN_FAILURES_ALLOWED": "3", "CHARGEOPS_LOGIN_BACKOFF_SECONDS": "60"}
    built = await Lab.open(hosts=4, serving=3, chargers=ids, gateway_env=env)
    try:
        yield built
    finally:
        await asyncio.to_thread(built.close)


async def connected_on(lab: Lab, gws: list[Gateway]) -> dict[str, float]:
    return {g.name: metric_sum(await lab.metrics(g), "chargeops_chargers_connected") for g in gws}


async def command_reaches(lab: Lab, charger: SimCharger) -> None:
    before = len(charger.record.commands)
    async with lab.api() as api:
        r = await api.post(f"/api/chargers/{charger.id}/ocpp/ClearCache", json={})
    assert r.status_code == 200, r.text
    assert r.json() == {"response": {"status": "Accepted"}}, r.text
    assert charger.record.commands[before:] == ["ClearCache"]


async def handshake_status(lab: Lab, charger_id: str, password: str, source: str) -> int:
    """101 (accepted, then closed) or the HTTP status a handshake through the balancer was refused with."""
    try:
        async with connect(
            f"{lab.url}/{charger_id}", subprotocols=[Subprotocol("ocpp1.6")],
            additional_headers=basic(charger_id, password), local_addr=(source, 0),
        ):  # fmt: skip
            return 101
    except InvalidStatus as exc:
        return exc.response.status_code


def phase(what: str, _t0: list[float] = []) -> None:  # noqa: B006 (the clock of the run)
    _t0 += [] if _t0 else [time.monotonic()]
    print(f"{time.monotonic() - _t0[0]:6.1f} s  {what}")  # shown when the test fails: where time went


def test_the_shipped_cluster_balancer_config_is_valid(tmp_path: Path) -> None:
    """docker/haproxy/cluster.cfg as compose runs it (DNS template, TLS and plain binds): `haproxy -c`."""
    cert = tmp_path / "lb.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=lb",
         "-keyout", str(cert), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    env = {
        **os.environ,
        "LB_BIND": ":8443",
        "LB_PLAIN_BIND": ":8080",
        "LB_CERT": str(cert),
        "LB_GATEWAY": "gateway:9000",
        "LB_GATEWAY_SLOTS": "16",
        "LB_MAXCONN": "1000",
    }
    check = subprocess.run([HAPROXY, "-c", "-f", str(CLUSTER_CFG)], env=env, capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr


@pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root (CI runs as root)")
async def test_one_fleet_on_several_gateways(lab: Lab) -> None:
    phase("lab built")
    first, spare = lab.gateways[:3], lab.gateways[3]
    await lab.until_up({g.name for g in first})
    phase("gateways up")
    fleet = [SimCharger(f"CL{i:05d}", lab.url, 2.0, own_address(i)) for i in range(CHARGERS)]
    stop = asyncio.Event()
    running = asyncio.ensure_future(run_fleet(fleet, stop))
    await until(lambda: all(c.record.started for c in fleet), timeout=90, what="every transaction started")

    phase("fleet connected, transactions started")
    # Each gateway's /metrics: its own chargers (leastconn spreads them) and its name.
    counts = await connected_on(lab, first)
    assert sum(counts.values()) == CHARGERS and min(counts.values()) >= CHARGERS // 6, counts
    for g in first:
        assert metric_sum(await lab.metrics(g), "chargeops_gateway_info", gateway_id=g.name) == 1

    # A command from the API reaches a charger on every gateway (through its command topic).
    await until(lambda: _all_placed(lab, fleet), timeout=30, what="presence stored")
    where = await lab.placement()
    by_id = {c.id: c for c in fleet}
    for g in first:
        await command_reaches(lab, by_id[next(cid for cid, gw in where.items() if gw == g.name)])

    phase("commands reached every gateway")
    # kill -9 one gateway: its chargers are back on the others within 30 s, and commands follow them.
    victim, survivors = first[0], first[1:]
    moved = [c for c in fleet if where[c.id] == victim.name]
    assert moved
    assert victim.proc is not None
    gone = contextlib.AsyncExitStack()  # chargers straight on the victim, that do not come back after it
    for charger_id in GONE:
        url = f"ws://{victim.address}:{OCPP_PORT}/ocpp/{charger_id}"
        headers = basic(charger_id, PASSWORD)
        await gone.enter_async_context(
            connect(url, subprotocols=[Subprotocol("ocpp1.6")], additional_headers=headers)
        )
    await until(lambda: _all_placed(lab, [], {victim.name}, GONE), timeout=30, what="the gone ones stored")
    killed_at = time.monotonic()
    victim.proc.kill9()
    await until(
        lambda: all(c.record.connects[-1] > killed_at for c in moved), timeout=30, what="chargers moved"
    )
    back = sorted(c.record.connects[-1] - killed_at for c in moved)
    took = back[-1]
    phase(f"{len(moved)} moved: p50 {back[len(back) // 2]:.1f} s, last {took:.1f} s after the kill")
    assert took < 30, took
    # The ones that never come back are shown disconnected (the victim's Will, applied by ingest).
    await until(lambda: _none_placed(lab, GONE), timeout=15, what="the gone ones disconnected")
    with contextlib.suppress(Exception):
        await gone.aclose()
    adding = asyncio.ensure_future(lab.start_gateway(spare))  # starting while the next checks run
    survivor_names = {g.name for g in survivors}
    await until(lambda: _all_placed(lab, moved, survivor_names), timeout=30, what="moves stored")
    assert sum((await connected_on(lab, survivors)).values()) == CHARGERS
    await command_reaches(lab, moved[0])
    await command_reaches(lab, moved[-1])

    phase("moved after kill -9")
    # A gateway started later takes the new connections (it has the fewest).
    await adding
    await lab.until_up({spare.name})
    late = [SimCharger(f"CL{i:05d}", lab.url, 2.0, own_address(i)) for i in range(CHARGERS, CHARGERS + LATE)]
    late_running = asyncio.ensure_future(run_fleet(late, stop))
    await until(lambda: all(c.record.started for c in late), timeout=60, what="late chargers started")
    assert (await connected_on(lab, [spare]))[spare.name] == LATE
    await command_reaches(lab, late[0])

    phase("late gateway took new connections")
    # A guesser behind the balancer is limited by its own address; a charger elsewhere still gets in.
    statuses = [await handshake_status(lab, f"NOBODY{n}", "guess-guess-guess", "127.0.0.3") for n in range(8)]
    assert 429 in statuses and 101 not in statuses, statuses
    assert await handshake_status(lab, "CL-GENUINE", "cluster-secret-01", "127.0.0.4") == 101
    logs = "".join(g.proc.text() for g in [*survivors, spare] if g.proc is not None)
    assert "from 127.0.0.3" in logs and "from 127.0.0.4" in logs

    phase("guesser limited")
    # Every transaction finishes; nothing the chargers were acknowledged is missing from the database.
    stop.set()
    await asyncio.wait_for(asyncio.gather(running, late_running), 60)
    everyone = fleet + late
    assert all(c.record.stopped for c in everyone)
    assert sum(len(c.record.samples) for c in moved) > 0
    gap = await until_stored(lab.db_url, everyone)
    assert not gap, gap
    phase("all acknowledged stored")


async def _all_placed(
    lab: Lab, chargers: list[SimCharger], on: set[str] | None = None, ids: list[str] | None = None
) -> bool:
    where = await lab.placement()
    wanted = [c.id for c in chargers] + (ids or [])
    return all(where.get(c) is not None and (on is None or where[c] in on) for c in wanted)


async def _none_placed(lab: Lab, ids: list[str]) -> bool:
    where = await lab.placement()
    return all(where.get(c, "?") is None for c in ids)
