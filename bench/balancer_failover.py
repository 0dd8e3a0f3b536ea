"""How fast the cluster balancer (docker/haproxy/cluster.cfg) stops sending chargers to a gateway that was
killed, and what the chargers pay meanwhile: WebSocket echo servers in place of gateways (no argon2, no
database), so what is measured is the balancer alone.

N backend processes on loopback behind HAProxy running the given config (the `server-template` line
replaced by one `server` per backend, as tests/cluster_lab.py does); C clients connect through it and hold
their WebSocket. Then `kill -9` of backend 0: its clients reconnect after 1 to 1 + `--spread` s (2: as
tests/cluster_fleet.py's chargers do; again after 1-3 s on a failure). Reported: when HAProxy marked the
backend down, the moved clients' reconnect times after the kill (p50, max), how many reconnect attempts
failed, and HAProxy's own counts for the dead server (connection errors, retries, redispatches). Prints one
JSON document.

    python -m bench.balancer_failover                          # the shipped config
    git show main:docker/haproxy/cluster.cfg > /tmp/old.cfg
    python -m bench.balancer_failover --config /tmp/old.cfg    # an earlier config
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import io
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake

from tests.cluster_lab import CLUSTER_CFG, HAPROXY
from tests.private_services import free_port, wait_for_port

BACKEND = """
import asyncio, sys
from websockets.asyncio.server import serve
async def main():
    async def handler(ws):
        await ws.send(sys.argv[1])
        await ws.wait_closed()
    async with serve(handler, "127.0.0.1", int(sys.argv[2]), compression=None, ping_interval=None):
        await asyncio.Future()
asyncio.run(main())
"""


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(p * len(ordered)))], 2) if ordered else 0.0


class Balancer:
    def __init__(self, config: Path, backends: dict[str, int], base: Path) -> None:
        self.sock = base / "haproxy.sock"
        lines = []
        for line in config.read_text().splitlines():
            if line.strip().startswith("server-template"):
                lines += [f"    server {name} 127.0.0.1:{port}" for name, port in backends.items()]
            else:
                lines.append(line)
                if line.startswith("global"):
                    lines.append(f"    stats socket {self.sock} mode 600 level admin")
        cfg = base / "haproxy.cfg"
        cfg.write_text("\n".join(lines) + "\n")
        cert = base / "lb.pem"
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=lb",
             "-keyout", str(cert), "-out", str(cert)],
            check=True, capture_output=True,
        )  # fmt: skip
        self.port = free_port()
        env = {
            **os.environ,
            "LB_BIND": f"127.0.0.1:{free_port()}",
            "LB_PLAIN_BIND": f"127.0.0.1:{self.port}",
            "LB_CERT": str(cert),
            "LB_MAXCONN": "4000",
        }
        self.proc = subprocess.Popen(
            [HAPROXY, "-db", "-f", str(cfg)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        wait_for_port(self.port)

    def stat(self) -> dict[str, dict[str, str]]:
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(str(self.sock))
            s.sendall(b"show stat\n")
            data = b""
            while chunk := s.recv(65536):
                data += chunk
        rows = csv.DictReader(io.StringIO(data.decode().lstrip("# ")))
        return {r["svname"]: r for r in rows if r["pxname"] == "gateways"}


class Client:
    def __init__(self, url: str, spread: float) -> None:
        self.url = url
        self.spread = spread
        self.ws: ClientConnection | None = None
        self.backend = ""
        self.failures = 0
        self.errors: list[str] = []
        self.back_at: float | None = None

    async def connect(self) -> None:
        while True:
            try:
                self.ws = await connect(self.url, compression=None, ping_interval=None, open_timeout=30)
                self.backend = str(await self.ws.recv())
                return
            except (OSError, InvalidHandshake, TimeoutError, ConnectionClosed) as exc:
                self.failures += 1
                self.errors.append(str(exc)[:80])
                await asyncio.sleep(1.0 + 2 * random.random())

    async def move(self) -> None:
        """After its backend died: reconnect as the cluster fleet's chargers do."""
        assert self.ws is not None
        await self.ws.wait_closed()
        self.failures = 0
        await asyncio.sleep(1.0 + self.spread * random.random())
        await self.connect()
        self.back_at = time.monotonic()


def start(config: Path, backends: int, base: Path) -> tuple[dict[str, subprocess.Popen[bytes]], Balancer]:
    """The backends and HAProxy in front of them, once HAProxy sees every backend up."""
    ports = {f"gw-{i}": free_port() for i in range(backends)}
    procs = {
        name: subprocess.Popen([sys.executable, "-c", BACKEND, name, str(port)], stdin=subprocess.DEVNULL)
        for name, port in ports.items()
    }
    for port in ports.values():
        wait_for_port(port)
    lb = Balancer(config, ports, base)
    while not all(r["status"].startswith("UP") for n, r in lb.stat().items() if n in ports):
        time.sleep(0.1)
    return procs, lb


async def measure(
    lb: Balancer, procs: dict[str, subprocess.Popen[bytes]], clients: int, spread: float
) -> dict[str, Any]:
    fleet = [Client(f"ws://127.0.0.1:{lb.port}/ocpp/C{i}", spread) for i in range(clients)]
    try:
        for i in range(0, clients, 50):
            await asyncio.gather(*(c.connect() for c in fleet[i : i + 50]))
        victims = [c for c in fleet if c.backend == "gw-0"]
        moving = [asyncio.ensure_future(c.move()) for c in victims]
        killed_at = time.monotonic()
        procs["gw-0"].send_signal(signal.SIGKILL)
        down_at = None
        while down_at is None or not all(m.done() for m in moving):
            if down_at is None and not lb.stat()["gw-0"]["status"].startswith("UP"):
                down_at = time.monotonic()
            if time.monotonic() - killed_at > 60:
                break
            await asyncio.sleep(0.02)
        dead = lb.stat()["gw-0"]
        back = [c.back_at - killed_at for c in victims if c.back_at is not None]
        return {
            "clients": clients,
            "reconnect_after_s": [1.0, 1.0 + spread],
            "moved": len(victims),
            "marked_down_after_s": None if down_at is None else round(down_at - killed_at, 2),
            "back_p50_s": pct(back, 0.5),
            "back_max_s": round(max(back), 2) if back else None,
            "failed_attempts": sum(c.failures for c in victims),
            "clients_with_a_failed_attempt": sum(c.failures > 0 for c in victims),
            "errors": sorted({e for c in victims for e in c.errors}),
            "haproxy_dead_server": {k: dead.get(k) for k in ("econ", "wretr", "wredis", "check_status")},
            "load": [round(x, 2) for x in os.getloadavg()],
        }
    finally:
        for c in fleet:
            if c.ws is not None:
                await c.ws.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--config", type=Path, default=CLUSTER_CFG)
    parser.add_argument("--backends", type=int, default=3)
    parser.add_argument("--clients", type=int, default=300)
    parser.add_argument(
        "--spread", type=float, default=2.0, help="moved clients reconnect 1 to 1+spread s later"
    )
    args = parser.parse_args()
    procs: dict[str, subprocess.Popen[bytes]] = {}
    lb: Balancer | None = None
    base = Path(tempfile.mkdtemp(prefix="chargeops-failover-"))
    try:
        procs, lb = start(args.config, args.backends, base)
        result = asyncio.run(measure(lb, procs, args.clients, args.spread))
    finally:
        for proc in [*procs.values(), *([lb.proc] if lb else [])]:  # ours, by PID
            if proc.poll() is None:
                proc.terminate()
                proc.wait(10)
        shutil.rmtree(base, ignore_errors=True)
    print(json.dumps({"config": str(args.config), **result}, indent=2))


if __name__ == "__main__":
    main()
