"""The event pipeline end to end: simulated chargers → gateway process → MQTT → ingest process(es) → Postgres.

Every meter sample a charger was told is stored ("CALLRESULT received") must be in `meter_samples`, and no
sample may be stored more often than chargers sent it, across a Postgres restart, a Mosquitto restart and
two ingest processes sharing the load. The truth is counted on the wire, by a transparent WebSocket proxy
between the simulated fleet and the gateway, never by the pipeline under test.

The broker and the database here are private instances on free ports (restarting the machine's shared ones
would break everyone else's tests); they are started once per session and removed afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import aiomqtt
import asyncpg
import httpx
import orjson
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from sqlalchemy import insert
from websockets.asyncio.client import connect
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed, InvalidHandshake
from websockets.typing import Subprotocol

from chargeops.db.engine import make_engine
from chargeops.db.migrate import upgrade
from chargeops.db.models import IdToken
from chargeops.settings import Settings
from firmware_stubs import SimEnvironment
from firmware_stubs.fleet import FleetConfig, build_fleet, run_fleet
from firmware_stubs.fleet import report as fleet_report
from ocpp_gateway.meter import samples_of
from telemetry.metrics import BUS_ERRORS
from telemetry.mqtt import MqttBus
from telemetry.spool import SpoolFull
from tests.mqtt_brokers import BUS_BROKERS, PrivateRumqttd
from tests.test_mqtt_bus import Collector, sample_events, until

ROOT = Path(__file__).resolve().parent.parent
PG_BIN = Path(os.environ.get("CHARGEOPS_TEST_PG_BIN", "/usr/lib/postgresql/15/bin"))
METER_ACTIONS = {
    "MeterValues": "meterValue",
    "TransactionEvent": "meterValue",
    "StopTransaction": "transactionData",
}

MIN_CONFIRMED = 1000  # confirmed meter samples a scenario needs to prove anything

pytestmark = pytest.mark.timeout(120)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, timeout: float = 15.0, host: str = "127.0.0.1") -> None:
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.2):
            return
        assert time.monotonic() < deadline, f"nothing listens on port {port}"
        time.sleep(0.02)


# -- private services ----------------------------------------------------------------------------------


class PrivateMosquitto:
    """A Mosquitto of our own, configured as docs/bus.md asks (and docker/mosquitto does): persistence on,
    no queue limit, no in-flight cap (the default 20 would bound every ingest commit at 20 events).
    `host`: the address it listens on (tests/cluster_lab.py: a bridge that network namespaces reach)."""

    def __init__(self, base: Path, host: str = "127.0.0.1") -> None:
        self.host = host
        self.port = free_port()
        self.dir = base / "mosquitto"
        self.dir.mkdir()
        if os.geteuid() == 0:  # a root-started Mosquitto drops to the `mosquitto` user: it writes here
            shutil.chown(self.dir, "mosquitto", "mosquitto")
        self.conf = self.dir / "mosquitto.conf"
        self.conf.write_text(
            f"listener {self.port} {host}\n"
            "allow_anonymous true\n"
            "persistence true\n"
            f"persistence_location {self.dir}/\n"
            "max_queued_messages 0\n"
            "max_inflight_messages 0\n"
            "log_dest stderr\n"
            "log_type error\n"
        )
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            ["mosquitto", "-c", str(self.conf)], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL
        )
        wait_for_port(self.port, host=self.host)

    def stop(self) -> None:
        """SIGTERM: Mosquitto writes its persistence file (sessions, queued messages) and exits."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def url(self, root: str) -> str:
        return f"mqtt://{self.host}:{self.port}/{root}"


class PrivatePostgres:
    """A throw-away cluster (initdb) on a free port of `host`, its socket in its own directory."""

    def __init__(self, base: Path, host: str = "127.0.0.1") -> None:
        self.host = host
        self.port = free_port()
        self.dir = base / "pg"
        self.data = self.dir / "data"
        self.dir.mkdir()
        self.log = self.dir / "server.log"
        self.as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        if os.geteuid() == 0:
            shutil.chown(self.dir, "postgres", "postgres")

    def _run(self, *args: str) -> None:
        subprocess.run([*self.as_postgres, *args], check=True, capture_output=True, timeout=60)

    def init(self) -> None:
        self._run(
            str(PG_BIN / "initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8"
        )
        if self.host != "127.0.0.1":  # trust covers loopback only: also the networks the host address is on
            with (self.data / "pg_hba.conf").open("a") as hba:
                hba.write("host all all samenet trust\n")
        self.start()

    def _ctl(self, *args: str) -> None:
        self._run(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-w", "-t", "30", *args)

    def start(self) -> None:
        opts = f"-p {self.port} -k {self.dir} -c listen_addresses={self.host}"
        self._ctl("-o", opts, "start")

    def restart(self) -> None:
        self._ctl("-m", "fast", "restart")

    def stop(self) -> None:
        with contextlib.suppress(subprocess.SubprocessError):
            self._ctl("-m", "immediate", "stop")

    @property
    def admin_dsn(self) -> str:
        return f"postgresql://postgres@{self.host}:{self.port}/postgres"

    def url(self, name: str) -> str:
        return f"postgresql+asyncpg://postgres@{self.host}:{self.port}/{name}"


@pytest.fixture(scope="session")
def services_dir() -> Iterator[Path]:
    base = Path(tempfile.mkdtemp(prefix="chargeops-pipeline-"))
    base.chmod(0o755)  # the postgres user must reach its data directory inside
    yield base
    shutil.rmtree(base, ignore_errors=True)


class PrivateBroker(Protocol):
    port: int
    proc: subprocess.Popen[bytes] | None  # None while stopped

    def url(self, root: str) -> str: ...
    def start(self) -> None: ...
    def stop(self) -> None: ...


@pytest.fixture(scope="session", params=BUS_BROKERS)
def broker(request: pytest.FixtureRequest, services_dir: Path) -> Iterator[PrivateBroker]:
    """A private broker of each of `BUS_BROKERS` (Mosquitto configured as docs/bus.md asks)."""
    b: PrivateBroker = (
        PrivateMosquitto(services_dir) if request.param == "mosquitto" else PrivateRumqttd(services_dir)
    )
    b.start()
    yield b
    b.stop()


@pytest.fixture(scope="session")
def postgres(services_dir: Path) -> Iterator[PrivatePostgres]:
    pg = PrivatePostgres(services_dir)
    pg.init()
    yield pg
    pg.stop()


@pytest.fixture
def restart_broker(broker: PrivateBroker) -> Iterator[PrivateBroker]:
    """For tests that stop the broker: it is running again afterwards, whatever happened."""
    yield broker
    if broker.proc is None:
        broker.start()


@pytest.fixture
async def pg_db(postgres: PrivatePostgres) -> AsyncIterator[str]:
    """A migrated database on the private cluster for one test."""
    name = f"pipeline_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(postgres.admin_dsn)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    engine = make_engine(postgres.url(name))
    try:
        await upgrade(engine)
        async with engine.begin() as conn:  # the simulated drivers' tokens, so sessions start
            tags = SimEnvironment().id_tags
            await conn.execute(
                insert(IdToken), [{"id_token": t, "type": "ISO14443", "status": "Accepted"} for t in tags]
            )
    finally:
        await engine.dispose()
    yield postgres.url(name)


# -- processes -----------------------------------------------------------------------------------------


class Server:
    """`chargeops serve --roles …` in a subprocess; its log is kept and shown when a test fails."""

    def __init__(self, name: str, proc: asyncio.subprocess.Process) -> None:
        self.name = name
        self.proc = proc
        self.http_port = 0  # known once the process logged it (see `port_after`)
        self.lines: list[str] = []
        self._drain = asyncio.ensure_future(self._read())

    @classmethod
    async def start(cls, name: str, roles: str, env: dict[str, str], cwd: Path, **flags: Any) -> Server:
        # Port 0 everywhere: a port picked free here could be taken before the child binds it.
        args = ["--roles", roles, "--http-port", "0"]
        for flag, value in flags.items():
            args += [f"--{flag.replace('_', '-')}"] + ([] if value is True else [str(value)])
        proc = await asyncio.create_subprocess_exec(
            *[sys.executable, "-m", "ops.cli", "serve", *args],
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        server = cls(name, proc)
        server.http_port = await server.port_after("HTTP API on")
        return server

    async def _read(self) -> None:
        assert self.proc.stderr is not None
        async for line in self.proc.stderr:
            self.lines.append(line.decode(errors="replace").rstrip())

    def saw(self, text: str) -> bool:
        return any(text in line for line in self.lines)

    async def wait_for_line(self, text: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while not self.saw(text):
            assert self.proc.returncode is None, f"{self.name} exited:\n" + "\n".join(self.lines)
            assert time.monotonic() < deadline, f"no {text!r} from {self.name}:\n" + "\n".join(self.lines)
            await asyncio.sleep(0.05)

    async def port_after(self, text: str) -> int:
        """The port in the first log line containing `text` (`…://host:PORT…`)."""
        await self.wait_for_line(text)
        line = next(line for line in self.lines if text in line)
        found = re.search(r"://[^:/\s]+:(\d+)", line.split(text, 1)[1])
        assert found, line
        return int(found.group(1))

    async def metric(self, name: str) -> float:
        """Sum of a counter's samples in this process's /metrics."""
        async with httpx.AsyncClient() as http:
            text = (await http.get(f"http://127.0.0.1:{self.http_port}/metrics")).text
        return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name))

    async def stop(self) -> None:
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.proc.wait(), 15)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        await self._drain


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


# -- the three scenarios -------------------------------------------------------------------------------


@pytest.mark.postgres
async def test_every_sample_is_stored_once_across_a_postgres_restart(
    pipeline: Pipeline, postgres: PrivatePostgres
) -> None:
    await pipeline.start(ingest_processes=1)

    async def restart() -> None:
        await asyncio.to_thread(postgres.restart)

    try:
        await pipeline.run_fleet(restart)
        confirmed, _ = await pipeline.check_exactly_once()
    except BaseException:
        dump_logs(pipeline)
        raise
    assert confirmed > 0
    assert pipeline.ingest[0].saw("failed"), "the restart should have made a commit fail and be retried"


@pytest.mark.postgres
async def test_every_sample_is_stored_once_across_a_mosquitto_restart(
    pipeline: Pipeline, restart_broker: PrivateBroker
) -> None:
    await pipeline.start(ingest_processes=1)

    async def restart() -> None:
        await asyncio.to_thread(restart_broker.stop)
        await asyncio.sleep(1.0)  # the gateway answers chargers from its spool meanwhile
        await asyncio.to_thread(restart_broker.start)

    try:
        await pipeline.run_fleet(restart)
        await pipeline.check_exactly_once()
        assert pipeline.gateway is not None
        assert pipeline.gateway.saw("spooling events"), "the outage should have been ridden out by the spool"
        await pipeline.gateway.wait_for_line("spool drained", timeout=10)
    except BaseException:
        dump_logs(pipeline)
        raise


@pytest.mark.postgres
@pytest.mark.timeout(180)  # the fleet runs until enough samples are confirmed, up to 90 s on a loaded machine
async def test_every_sample_is_stored_once_by_two_ingest_processes_sharing_the_load(
    pipeline: Pipeline,
) -> None:
    await pipeline.start(ingest_processes=2)
    try:
        await pipeline.run_fleet(None, duration=90.0, until_confirmed=MIN_CONFIRMED)
        await pipeline.check_exactly_once()
        shares = [
            await s.metric('chargeops_ingest_rows_total{table="meter_samples"}') for s in pipeline.ingest
        ]
    except BaseException:
        dump_logs(pipeline)
        raise
    assert all(share > 0 for share in shares), f"both ingest processes should store samples: {shares}"


# -- the gateway's spool against a broker that is really gone --------------------------------------------


async def _bus(broker: PrivateBroker, root: str, name: str, spool_dir: Path, **kw: Any) -> MqttBus:
    bus = MqttBus(
        Settings(mqtt_url=broker.url(root), gateway_id=name, node_id=name, spool_dir=spool_dir, **kw)
    )
    await bus.start()
    return bus


async def end_session(broker: PrivateBroker, client_id: str) -> None:
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = 0
    async with aiomqtt.Client(
        "127.0.0.1", broker.port, identifier=client_id, protocol=aiomqtt.ProtocolVersion.V5, properties=props
    ):
        pass


async def test_events_published_while_the_broker_is_down_are_spooled_and_replayed_in_order(
    restart_broker: PrivateBroker, tmp_path: Path
) -> None:
    root = f"spool-{uuid.uuid4().hex[:10]}"
    ingest = await _bus(restart_broker, root, "ingest-a", tmp_path)
    got = Collector()
    ingest.subscribe(got, durable=True)
    await asyncio.wait_for(ingest.durable_ready.wait(), 5)
    gateway = await _bus(restart_broker, root, "gw-a", tmp_path)
    sent = sample_events(300)
    try:
        await gateway.publish(sent[:100])
        await asyncio.to_thread(restart_broker.stop)
        await until(lambda: gateway._link.conn is None)
        for i in range(100, 300, 20):
            await gateway.publish(sent[i : i + 20])  # returns: the events are on disk
        assert gateway.spool is not None and len(gateway.spool) == 200
        await asyncio.to_thread(restart_broker.start)
        await until(lambda: len({e.event_id for e in got.events}) == len(sent), timeout=20)
        assert {e.event_id for e in got.events} == {e.event_id for e in sent}
        # A batch leaves the spool once the broker acknowledged all of it, which may come after ingest
        # already has it.
        await until(lambda: gateway.spool is not None and len(gateway.spool) == 0, timeout=10)
        # Order is not asserted here: the replay races the ingest's re-subscription after the broker
        # restart (Mosquitto answers "no matching subscribers" to some events of a batch, which are sent
        # again after later ones were taken). Known limitation, see docs/bus.md.
    finally:
        await gateway.close()
        await ingest.close()
        await end_session(restart_broker, ingest.durable_client_id)


async def test_a_full_spool_refuses_the_events_and_counts_it(
    restart_broker: PrivateBroker, tmp_path: Path
) -> None:
    root = f"spool-{uuid.uuid4().hex[:10]}"
    ingest = await _bus(restart_broker, root, "ingest-a", tmp_path)
    ingest.subscribe(Collector(), durable=True)
    await asyncio.wait_for(ingest.durable_ready.wait(), 5)
    gateway = await _bus(restart_broker, root, "gw-a", tmp_path, spool_max_events=10)
    full_before = BUS_ERRORS.labels("spool_full")._value.get()
    try:
        await asyncio.to_thread(restart_broker.stop)
        await until(lambda: gateway._link.conn is None)
        await gateway.publish(sample_events(10))
        with pytest.raises(SpoolFull):
            await gateway.publish(sample_events(1, charger="CP2"))
        assert BUS_ERRORS.labels("spool_full")._value.get() == full_before + 1
        await asyncio.to_thread(restart_broker.start)
        await until(lambda: gateway.spool is not None and len(gateway.spool) == 0, timeout=20)
        await gateway.publish(sample_events(1, charger="CP2"))  # room again
    finally:
        await gateway.close()
        await ingest.close()
        await end_session(restart_broker, ingest.durable_client_id)


async def test_events_nobody_subscribed_to_yet_are_kept_until_ingest_subscribes(
    broker: PrivateBroker, tmp_path: Path
) -> None:
    """The broker acks such events with "no matching subscribers" and drops them; the gateway keeps them."""
    root = f"spool-{uuid.uuid4().hex[:10]}"
    gateway = await _bus(broker, root, "gw-a", tmp_path)
    sent = sample_events(20)
    try:
        await gateway.publish(sent)
        assert gateway.spool is not None and len(gateway.spool) == 20
        ingest = await _bus(broker, root, "ingest-a", tmp_path)
        got = Collector()
        ingest.subscribe(got, durable=True)
        await until(lambda: {e.event_id for e in got.events} == {e.event_id for e in sent}, timeout=10)
        await ingest.close()
        await end_session(broker, ingest.durable_client_id)
    finally:
        await gateway.close()


async def test_a_spool_left_by_a_stopped_gateway_is_replayed_when_it_starts_again(
    restart_broker: PrivateBroker, tmp_path: Path
) -> None:
    root = f"spool-{uuid.uuid4().hex[:10]}"
    ingest = await _bus(restart_broker, root, "ingest-a", tmp_path)
    got = Collector()
    ingest.subscribe(got, durable=True)
    await asyncio.wait_for(ingest.durable_ready.wait(), 5)
    gateway = await _bus(restart_broker, root, "gw-a", tmp_path)
    sent = sample_events(50)
    try:
        await asyncio.to_thread(restart_broker.stop)
        await until(lambda: gateway._link.conn is None)
        await gateway.publish(sent)
        await gateway.close()  # the process stops before the broker is back
        await asyncio.to_thread(restart_broker.start)
        await asyncio.sleep(0.5)
        assert got.events == []
        gateway = await _bus(restart_broker, root, "gw-a", tmp_path)
        await until(lambda: {e.event_id for e in got.events} == {e.event_id for e in sent}, timeout=20)
    finally:
        await gateway.close()
        await ingest.close()
        await end_session(restart_broker, ingest.durable_client_id)
