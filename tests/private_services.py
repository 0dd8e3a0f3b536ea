"""Private Mosquitto (or rumqttd) and Postgres instances on free ports for the tests that stop, restart or
load them (restarting the machine's shared ones would break everyone else's tests): started once per session
and removed afterwards. A fixture plugin: test modules name it in `pytest_plugins`; tests/cluster_lab.py and
bench/ take the classes."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Protocol

import aiomqtt
import asyncpg
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from sqlalchemy import insert

from chargeops.db.engine import make_engine
from chargeops.db.migrate import upgrade
from chargeops.db.models import IdToken
from firmware_stubs import SimEnvironment
from tests.mqtt_brokers import BUS_BROKERS, PrivateRumqttd

PG_BIN = Path(os.environ.get("CHARGEOPS_TEST_PG_BIN", "/usr/lib/postgresql/15/bin"))


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


async def end_session(broker: PrivateBroker, client_id: str) -> None:
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = 0
    async with aiomqtt.Client(
        "127.0.0.1", broker.port, identifier=client_id, protocol=aiomqtt.ProtocolVersion.V5, properties=props
    ):
        pass
