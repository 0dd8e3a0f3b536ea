"""A small data centre on one machine (issue 14.4), for tests/test_cluster.py and bench/cluster.py: gateway
hosts in network namespaces on a bridge, HAProxy running docker/haproxy/cluster.cfg in front of them, and in
the root namespace two ingest processes on the shared subscription, one ops and one API process, a private
Mosquitto and a private Postgres listening on the bridge address (the machine's shared ones listen on
127.0.0.1, which a namespace cannot reach). Everything is made here and removed by `close()`: only the
processes it started (by PID), only the namespaces and the bridge it created."""

from __future__ import annotations

import asyncio
import contextlib
import csv
import io
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import httpx
from sqlalchemy import insert

from chargeops.db.engine import make_engine
from chargeops.db.migrate import upgrade
from chargeops.db.models import Charger, IdToken
from chargeops.passwords import hash_password
from tests.private_services import PrivateMosquitto, PrivatePostgres, free_port

ROOT = Path(__file__).resolve().parent.parent
CLUSTER_CFG = ROOT / "docker" / "haproxy" / "cluster.cfg"
ADMIN_TOKEN = "cluster-admin-token"
PASSWORD = "cluster-secret-01"
ID_TAG = "CLUSTERTAG"
OCPP_PORT, HTTP_PORT = 9000, 8000  # every gateway host has its own address, so the same ports
START_TIMEOUT = 150.0  # s for a process to start: schemas are compiled at start, and CI's 2 cores are shared
HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


class Network:
    """A bridge in the root namespace (`10.231.N.1/24`, N a /24 no interface here uses) and one namespace
    per host, joined to it by a veth pair. Traffic stays between these namespaces and the root one."""

    def __init__(self) -> None:
        self.tag = uuid.uuid4().hex[:4]
        used = subprocess.run(["ip", "-4", "-o", "addr"], capture_output=True, text=True).stdout
        free = [n for n in range(256) if f"10.231.{n}." not in used]
        self.net = random.choice(free)
        self.bridge = f"cobr{self.tag}"
        self.address = f"10.231.{self.net}.1"
        self.namespaces: list[str] = []

    def create(self) -> None:
        ip("link", "add", "name", self.bridge, "type", "bridge")
        ip("addr", "add", f"{self.address}/24", "dev", self.bridge)
        ip("link", "set", self.bridge, "up")

    def add_host(self, index: int) -> tuple[str, str]:
        """A namespace `co{tag}h{index}` with address 10.231.N.(10+index); (namespace, address)."""
        ns, outside, inside = f"co{self.tag}h{index}", f"cv{self.tag}{index}", f"ce{self.tag}{index}"
        address = f"10.231.{self.net}.{10 + index}"
        ip("netns", "add", ns)
        self.namespaces.append(ns)
        ip("link", "add", outside, "type", "veth", "peer", "name", inside, "netns", ns)
        ip("link", "set", outside, "master", self.bridge, "up")
        ip("-n", ns, "addr", "add", f"{address}/24", "dev", inside)
        ip("-n", ns, "link", "set", inside, "up")
        ip("-n", ns, "link", "set", "lo", "up")
        ip("-n", ns, "route", "add", "default", "via", self.address)
        return ns, address

    def destroy(self) -> None:
        for ns in self.namespaces:  # deleting a namespace deletes its end of the veth pair, and so both
            with contextlib.suppress(subprocess.CalledProcessError):
                ip("netns", "del", ns)
        with contextlib.suppress(subprocess.CalledProcessError):
            ip("link", "del", self.bridge)


class Proc:
    """A process this lab started; its output goes to a file that failures show."""

    def __init__(self, name: str, cmd: list[str], env: dict[str, str], log: Path) -> None:
        self.name = name
        self.log = log
        with log.open("wb") as out:
            self.popen = subprocess.Popen(
                cmd, cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT
            )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    async def wait_for(self, pattern: str, timeout: float = 60.0) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while True:
            if found := re.search(pattern, self.text()):
                return found
            if self.popen.poll() is not None:
                raise AssertionError(f"{self.name} exited ({self.popen.returncode}):\n{self.text()[-4000:]}")
            if time.monotonic() > deadline:
                raise AssertionError(f"no {pattern!r} from {self.name}:\n{self.text()[-4000:]}")
            await asyncio.sleep(0.1)

    def kill9(self) -> None:
        self.popen.send_signal(signal.SIGKILL)
        self.popen.wait()

    def stop(self, timeout: float = 20.0) -> None:
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()


@dataclass
class Gateway:
    name: str
    namespace: str
    address: str
    proc: Proc | None = None

    @property
    def metrics_url(self) -> str:
        return f"http://{self.address}:{HTTP_PORT}/metrics"


@dataclass
class Lab:
    """`await Lab.open(hosts=4, serving=3, chargers=[...])`: every role running, gateways on the first
    `serving` hosts, the others' balancer slots in maintenance until `start_gateway`; `close()` removes
    everything."""

    base: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="chargeops-cluster-")))
    network: Network = field(default_factory=Network)
    gateways: list[Gateway] = field(default_factory=list)
    procs: list[Proc] = field(default_factory=list)
    postgres: PrivatePostgres | None = None
    broker: PrivateMosquitto | None = None
    balancer: Proc | None = None
    lb_port: int = 0
    api_port: int = 0
    root: str = field(default_factory=lambda: f"cluster{uuid.uuid4().hex[:6]}")
    db_url: str = ""
    serving: int = 0  # gateway hosts in the balancer from the start
    gateway_env: dict[str, str] = field(default_factory=dict)

    @classmethod
    async def open(
        cls, hosts: int, chargers: list[str], gateway_env: dict[str, str] | None = None, serving: int = 0
    ) -> Lab:
        lab = cls(gateway_env=gateway_env or {}, serving=serving or hosts)
        try:
            await lab._build(hosts, chargers)
        except BaseException:
            lab.close()
            raise
        return lab

    async def _build(self, hosts: int, chargers: list[str]) -> None:
        self.base.chmod(0o755)  # the postgres and mosquitto users reach their directories inside
        self.network.create()
        bridge = self.network.address
        for i in range(1, hosts + 1):
            ns, address = self.network.add_host(i)
            self.gateways.append(Gateway(f"gw-{i}", ns, address))
        self.postgres = PrivatePostgres(self.base, host=bridge)
        await asyncio.to_thread(self.postgres.init)
        self.broker = PrivateMosquitto(self.base, host=bridge)
        self.broker.start()
        self.db_url = await self._database(chargers)
        self.balancer, self.lb_port = await self._balancer()
        # Every process starts at once (start-up is mostly CPU: both cores busy). The gateways publish nothing
        # before a charger connects, and the fleet connects after ingest made the shared subscription their
        # events need (docs/bus.md).
        roles = [self._serve(f"ingest-{n}", "ingest") for n in (1, 2)]
        roles += [self._serve("ops", "ops"), self._serve("api", "api")]
        for gw in self.gateways[: self.serving]:
            self.launch_gateway(gw)
        waits = [proc.wait_for(f"started: {proc.name.split('-')[0]}", START_TIMEOUT) for proc in roles]
        waits += [gw.proc.wait_for("started: gateway", START_TIMEOUT) for gw in self.gateways if gw.proc]
        await asyncio.gather(*waits)
        found = await roles[-1].wait_for(r"HTTP API on http://[^:]+:(\d+)")
        self.api_port = int(found.group(1))

    async def _database(self, chargers: list[str]) -> str:
        """A migrated database with the fleet registered (one password, security profile 1) and its id tag."""
        assert self.postgres is not None
        name = f"cluster_{uuid.uuid4().hex[:8]}"
        admin = await asyncpg.connect(self.postgres.admin_dsn)
        try:
            await admin.execute(f'CREATE DATABASE "{name}"')
        finally:
            await admin.close()
        url = self.postgres.url(name)
        engine = make_engine(url)
        secret = hash_password(PASSWORD)  # one hash for all: each gateway still verifies each charger once
        try:
            await upgrade(engine)
            async with engine.begin() as conn:
                await conn.execute(insert(IdToken), [{"id_token": ID_TAG, "status": "Accepted"}])
                rows = [{"id": c, "password_hash": secret, "security_profile": 1} for c in chargers]
                for i in range(0, len(rows), 1000):
                    await conn.execute(insert(Charger), rows[i : i + 1000])
        finally:
            await engine.dispose()
        return url

    def _env(self, **extra: str) -> dict[str, str]:
        assert self.broker is not None
        return {
            **os.environ,
            "CHARGEOPS_DATABASE_URL": self.db_url,
            "CHARGEOPS_MQTT_URL": self.broker.url(self.root),
            "CHARGEOPS_ADMIN_TOKEN": ADMIN_TOKEN,
            "CHARGEOPS_LOG_LEVEL": "INFO",
            "CHARGEOPS_API_RATE_LIMIT": "off",
            # A gateway that just took over a dead one's chargers, on a machine shared with other test runs,
            # took over 2 s (the default) to pick up a command.
            "CHARGEOPS_COMMAND_ACK_TIMEOUT": "10",
            "CHARGEOPS_CA_DIR": str(self.base / "ca"),
            **extra,
        }

    def _serve(self, name: str, roles: str) -> Proc:
        cmd = [sys.executable, "-m", "ops.cli", "serve", "--roles", roles, "--http-port", "0"]
        env = self._env(CHARGEOPS_NODE_ID=name, CHARGEOPS_SPOOL_DIR=str(self.base / f"spool-{name}"))
        proc = Proc(name, cmd, env, self.base / f"{name}.log")
        self.procs.append(proc)
        return proc

    async def start_gateway(self, gw: Gateway) -> None:
        """A gateway started after the others, put into the balancer once it is up."""
        self.launch_gateway(gw)
        assert gw.proc is not None
        await gw.proc.wait_for("started: gateway", timeout=START_TIMEOUT)
        self.enable(gw)

    def launch_gateway(self, gw: Gateway) -> None:
        """`serve --roles gateway` inside its host's namespace, trusting the balancer's headers only."""
        cmd = ["ip", "netns", "exec", gw.namespace, sys.executable, "-m", "ops.cli", "serve"]
        cmd += ["--roles", "gateway", "--ocpp-host", "0.0.0.0", "--ocpp-port", str(OCPP_PORT)]
        cmd += ["--http-host", gw.address, "--http-port", str(HTTP_PORT)]
        env = self._env(
            CHARGEOPS_GATEWAY_ID=gw.name,
            CHARGEOPS_NODE_ID=gw.name,
            CHARGEOPS_SPOOL_DIR=str(self.base / f"spool-{gw.name}"),
            CHARGEOPS_TRUSTED_PROXIES=f"{self.network.address}/32",
            **self.gateway_env,
        )
        gw.proc = Proc(gw.name, cmd, env, self.base / f"{gw.name}.log")  # `ip netns exec` execs: same PID
        self.procs.append(gw.proc)

    def _balancer_config(self, port: int) -> dict[str, str]:
        """HAProxy's config: docker/haproxy/cluster.cfg, one `server` line per gateway host instead of the
        DNS template; hosts beyond the first `serving` are in maintenance until `enable()` (a replica the DNS
        template has not found yet), the others down until their health checks pass; and a stats socket to see
        what it thinks of them; checked by `haproxy -c`. Returns its environment."""
        lines = []
        for line in CLUSTER_CFG.read_text().splitlines():
            if line.strip().startswith("server-template"):
                lines += [
                    f"    server {g.name} {g.address}:{OCPP_PORT}"
                    + (" disabled" if i >= self.serving else "")
                    for i, g in enumerate(self.gateways)
                ]
            else:
                lines.append(line)
                if line.startswith("global"):
                    lines.append(f"    stats socket {self.base / 'haproxy.sock'} mode 600 level admin")
        config = self.base / "haproxy.cfg"
        config.write_text("\n".join(lines) + "\n")
        cert = self.base / "lb.pem"
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=lab",
             "-keyout", str(cert), "-out", str(cert)],
            check=True, capture_output=True,
        )  # fmt: skip
        env = {
            **os.environ,
            "LB_BIND": f"127.0.0.1:{free_port()}",
            "LB_PLAIN_BIND": f"127.0.0.1:{port}",
            "LB_CERT": str(cert),
            "LB_MAXCONN": "8000",  # two descriptors each: within this machine's 20,000
        }
        check = subprocess.run([HAPROXY, "-c", "-f", str(config)], env=env, capture_output=True, text=True)
        assert check.returncode == 0, check.stdout + check.stderr
        return env

    async def _balancer(self) -> tuple[Proc, int]:
        port = free_port()
        env = await asyncio.to_thread(self._balancer_config, port)
        config = str(self.base / "haproxy.cfg")
        proc = Proc("haproxy", [HAPROXY, "-db", "-f", config], env, self.base / "haproxy.log")
        self.procs.append(proc)
        deadline = time.monotonic() + 15
        while not _accepts("127.0.0.1", port):
            assert time.monotonic() < deadline, proc.text()
            await asyncio.sleep(0.05)
        return proc, port

    def _haproxy(self, command: str) -> str:
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(str(self.base / "haproxy.sock"))
            s.sendall(command.encode() + b"\n")
            data = b""
            while chunk := s.recv(65536):
                data += chunk
        return data.decode()

    def enable(self, gw: Gateway) -> None:
        """The balancer learns of a new gateway (what the DNS template does when a replica appears)."""
        assert self._haproxy(f"enable server gateways/{gw.name}").strip() == ""

    def servers_up(self) -> dict[str, bool]:
        """HAProxy's view: is each gateway server UP (its health checks pass)?"""
        data = self._haproxy("show stat")
        rows = csv.DictReader(io.StringIO(data.lstrip("# ")))
        return {r["svname"]: r["status"].startswith("UP") for r in rows if r["pxname"] == "gateways"
                and r["svname"] not in ("FRONTEND", "BACKEND")}  # fmt: skip

    async def until_up(self, names: set[str], up: bool = True, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while {n for n, ok in self.servers_up().items() if ok == up} < names:
            assert time.monotonic() < deadline, f"HAProxy: {self.servers_up()}"
            await asyncio.sleep(0.2)

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.lb_port}/ocpp"

    def api(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{self.api_port}",
            headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
            timeout=60,
        )

    async def placement(self) -> dict[str, str | None]:
        """charger id -> the gateway the database says holds it (None: not connected)."""
        conn = await asyncpg.connect(self.db_url.replace("postgresql+asyncpg://", "postgresql://"))
        try:
            rows = await conn.fetch("SELECT id, gateway_id, connected FROM chargers")
        finally:
            await conn.close()
        return {r["id"]: r["gateway_id"] if r["connected"] else None for r in rows}

    async def metrics(self, gw: Gateway) -> str:
        async with httpx.AsyncClient(timeout=10) as http:
            return (await http.get(gw.metrics_url)).text

    def close(self) -> None:
        """Processes first (a namespace with a process in it outlives `ip netns del`), then the network."""
        for proc in reversed(self.procs):
            with contextlib.suppress(Exception):
                proc.stop()
        if self.broker is not None:
            self.broker.stop()
        if self.postgres is not None:
            self.postgres.stop()
        self.network.destroy()
        if keep := os.environ.get("CHARGEOPS_CLUSTER_KEEP_LOGS"):  # a directory to copy the logs to
            skip = shutil.ignore_patterns("pg", "mosquitto", "*.sock")
            with contextlib.suppress(OSError, shutil.Error):
                shutil.copytree(self.base, keep, ignore=skip, dirs_exist_ok=True)
        shutil.rmtree(self.base, ignore_errors=True)


def _accepts(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def metric_sum(text: str, name: str, **labels: str) -> float:
    """Sum of the samples of `name` in a /metrics text whose labels include `labels`."""
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        if all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total
