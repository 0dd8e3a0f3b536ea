"""The event pipeline as the exactly-once tests run it: a gateway process and N ingest processes on a fresh
topic root and database, and the truth counted on the wire by a transparent WebSocket proxy between the
simulated fleet and the gateway, never by the pipeline under test. A fixture plugin (`pipeline`) on top of
tests/private_services.py."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import pytest
from websockets.asyncio.client import connect
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed, InvalidHandshake
from websockets.typing import Subprotocol

from firmware_stubs.fleet import FleetConfig, build_fleet, run_fleet
from firmware_stubs.fleet import report as fleet_report
from ocpp_gateway.meter import samples_of
from tests.private_services import PrivateBroker
from tests.server_process import ROOT, Server
from tests.waiting import until

METER_ACTIONS = {
    "MeterValues": "meterValue",
    "TransactionEvent": "meterValue",
    "StopTransaction": "transactionData",
}

MIN_CONFIRMED = 1000  # confirmed meter samples a scenario needs to prove anything


# -- the truth, counted on the wire --------------------------------------------------------------------

SampleKey = tuple[str, str, str, str | None, str | None, str | None, str | None, float]


def _key(
    charger_id: str,
    sampled_at: datetime,
    measurand: str,
    phase: str | None,
    location: str | None,
    context: str | None,
    unit: str | None,
    value: float,
) -> SampleKey:
    return (
        charger_id,
        sampled_at.astimezone(UTC).isoformat(),
        measurand,
        phase,
        location,
        context,
        unit,
        value,
    )


class CountingProxy:
    """Between the chargers and the gateway, forwarding every frame unchanged, it remembers each CALL that
    carries meter samples and whether the gateway answered it with a CALLRESULT (the charger was told its
    samples are stored) or not. A call sent again with the same payload (a retry) counts once."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream = upstream_port
        self.port = 0
        self._calls: dict[tuple[str, str], tuple[str, bytes]] = {}
        self.sent: dict[tuple[str, str, bytes], list[SampleKey]] = {}
        self.confirmed: set[tuple[str, str, bytes]] = set()

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[CountingProxy]:
        def choose(_conn: ServerConnection, offered: Any) -> Subprotocol | None:
            return offered[0] if offered else None

        async with serve(
            self._handle, "127.0.0.1", 0, select_subprotocol=choose, compression=None, ping_interval=None
        ) as server:
            self.port = next(iter(server.sockets)).getsockname()[1]
            yield self

    async def _handle(self, client: ServerConnection) -> None:
        path = client.request.path if client.request is not None else "/"
        charger_id = path.rsplit("/", 1)[-1]
        try:
            upstream = await connect(
                f"ws://127.0.0.1:{self.upstream}{path}",
                subprotocols=[client.subprotocol] if client.subprotocol else None,
                compression=None,
                ping_interval=None,
                close_timeout=1.0,
            )
        except (OSError, InvalidHandshake, TimeoutError):
            await client.close(1011, "gateway unavailable")
            return

        async def pump(src: Any, dst: Any, seen: Callable[[str, str | bytes], None]) -> None:
            with contextlib.suppress(ConnectionClosed):
                async for frame in src:
                    seen(charger_id, frame)
                    await dst.send(frame)

        async with upstream:
            tasks = [
                asyncio.ensure_future(pump(client, upstream, self._from_charger)),
                asyncio.ensure_future(pump(upstream, client, self._from_gateway)),
            ]
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    def _from_charger(self, charger_id: str, frame: str | bytes) -> None:
        msg = orjson.loads(frame)
        if msg[0] != 2 or msg[2] not in METER_ACTIONS:
            return
        payload = orjson.dumps(msg[3], option=orjson.OPT_SORT_KEYS)
        ident = (charger_id, msg[2], payload)
        if ident not in self.sent:
            self.sent[ident] = [
                _key(
                    charger_id,
                    s.sampled_at or datetime.min.replace(tzinfo=UTC),
                    s.measurand,
                    s.phase,
                    s.location,
                    s.context,
                    s.unit,
                    s.value,
                )
                for s in samples_of(msg[3].get(METER_ACTIONS[msg[2]]) or [])
            ]
        self._calls[(charger_id, msg[1])] = (msg[2], payload)

    def _from_gateway(self, charger_id: str, frame: str | bytes) -> None:
        msg = orjson.loads(frame)
        if msg[0] == 3 and (call := self._calls.pop((charger_id, msg[1]), None)) is not None:
            self.confirmed.add((charger_id, *call))

    def counts(self, confirmed_only: bool) -> Counter[SampleKey]:
        out: Counter[SampleKey] = Counter()
        for ident, keys in self.sent.items():
            if not confirmed_only or ident in self.confirmed:
                out.update(keys)
        return out


async def stored_samples(db_url: str) -> Counter[SampleKey]:
    conn = await asyncpg.connect(db_url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        rows = await conn.fetch(
            "SELECT charger_id, sampled_at, measurand, phase, location, context, unit, value"
            " FROM meter_samples"
        )
    finally:
        await conn.close()
    return Counter(_key(*r) for r in rows)


# -- the scenario runner -------------------------------------------------------------------------------


class Pipeline:
    """One gateway process and N ingest processes on a fresh topic root and database, a counting proxy in
    front of the gateway, and a simulated fleet driven through the proxy."""

    def __init__(self, broker: PrivateBroker, db_url: str, workdir: Path) -> None:
        self.root = f"pipeline-{uuid.uuid4().hex[:10]}"
        self.db_url = db_url
        self.workdir = workdir
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("CHARGEOPS_")},
            "CHARGEOPS_MQTT_URL": broker.url(self.root),
            "CHARGEOPS_DATABASE_URL": db_url,
            "CHARGEOPS_SPOOL_DIR": str(workdir / "spool"),
            "PYTHONPATH": str(ROOT),
        }
        self.ingest: list[Server] = []
        self.gateway: Server | None = None
        self.ocpp_port = 0

    @property
    def servers(self) -> list[Server]:
        return [*self.ingest, *([self.gateway] if self.gateway else [])]

    async def start(self, ingest_processes: int) -> None:
        self.ingest = await asyncio.gather(
            *(
                Server.start(f"ingest-{n}", "ingest", {**self.env, "CHARGEOPS_NODE_ID": f"ingest-{n}"}, ROOT)
                for n in range(ingest_processes)
            )
        )
        await asyncio.gather(*(s.wait_for_line("durable shared subscription") for s in self.ingest))
        env = {**self.env, "CHARGEOPS_GATEWAY_ID": "gw-pipeline", "CHARGEOPS_NODE_ID": "gw-pipeline"}
        # the gateway's working directory holds its default spool directory
        self.gateway = await Server.start(
            "gateway",
            "gateway",
            env,
            self.workdir,
            ocpp_port=0,
            accept_unknown=True,
            call_timeout=10,
        )
        self.ocpp_port = await self.gateway.port_after("OCPP gateway listening on")

    async def run_fleet(
        self,
        disrupt: Callable[[], Awaitable[None]] | None,
        duration: float = 12.0,
        until_confirmed: int | None = None,
    ) -> None:
        """Drives the fleet `duration` seconds or, given `until_confirmed`, until the proxy saw that many
        samples confirmed (at most `duration` seconds: a loaded machine may need far longer than 12 s)."""
        proxy = CountingProxy(self.ocpp_port)
        self.proxy = proxy
        async with proxy.running():
            config = FleetConfig(
                csms_url=f"ws://127.0.0.1:{proxy.port}/ocpp",
                chargers=20,
                protocol="mixed",
                duration=None if until_confirmed is not None else duration,
                sample_interval=0.1,
                session_rate=5.0,
                time_scale=600.0,
                connect_rate=200.0,
                seed=7,
            )
            fleet = build_fleet(config)
            env = fleet[0].env  # shared by the fleet: retry soon, so a short outage is ridden out
            env.call_timeout, env.backoff_base, env.backoff_cap = 5.0, 0.2, 1.0
            runner = asyncio.ensure_future(run_fleet(config, fleet))
            try:
                if disrupt is not None:
                    await asyncio.sleep(duration / 3)
                    await disrupt()
                if until_confirmed is None:
                    result = await runner
                else:
                    await until(
                        lambda: sum(proxy.counts(True).values()) >= until_confirmed,
                        timeout=duration,
                        what=f"{until_confirmed} confirmed samples",
                        interval=0.5,
                    )
            finally:
                if not runner.done():
                    runner.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await runner
            if until_confirmed is not None:
                result = fleet_report(fleet)
        assert result.boots_accepted >= 20, result

    async def check_exactly_once(self, timeout: float = 30.0) -> tuple[int, Counter[SampleKey]]:
        """Waits until every confirmed sample is stored, then compares the stored multiset with the wire."""
        confirmed, sent = self.proxy.counts(True), self.proxy.counts(False)
        assert sum(confirmed.values()) >= MIN_CONFIRMED, (
            f"too few samples to prove anything: {sum(confirmed.values())}"
        )
        deadline = time.monotonic() + timeout
        while True:
            stored = await stored_samples(self.db_url)
            missing = confirmed - stored
            if not missing:
                break
            assert time.monotonic() < deadline, f"{sum(missing.values())} confirmed samples never stored"
            await asyncio.sleep(0.5)
        await asyncio.sleep(1.0)  # a duplicate would arrive now
        stored = await stored_samples(self.db_url)
        unknown = stored.keys() - sent.keys()
        assert not unknown, f"{len(unknown)} stored samples no charger sent, e.g. {next(iter(unknown))}"
        extra = {k: n for k, n in stored.items() if n > sent[k]}
        assert not extra, (
            f"{len(extra)} samples stored more often than sent, e.g. {next(iter(extra.items()))}"
        )
        return sum(confirmed.values()), stored

    async def stop(self) -> None:
        await asyncio.gather(*(s.stop() for s in self.servers))


@pytest.fixture
async def pipeline(broker: PrivateBroker, pg_db: str, tmp_path: Path) -> AsyncIterator[Pipeline]:
    p = Pipeline(broker, pg_db, tmp_path)
    try:
        yield p
    finally:
        await p.stop()


def dump_logs(p: Pipeline) -> None:
    for s in p.servers:
        print(f"----- {s.name} -----")
        print("\n".join(s.lines[-200:]))
