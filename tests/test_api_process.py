"""The operator API in a worker process of its own (issue 12.4, `ops/api/process.py`): it answers from that
process, its commands reach a real charger through the gateway's bus and come back, a stalled or killed API
process does not hold up the chargers, `/metrics` holds both processes' series, and SIGTERM stops both."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from pathlib import Path

import httpx

from ops.api.metrics import merge
from tests.conftest import StartRuntime
from tests.ocpp_client import raw_charger
from tests.server_process import ROOT, Server
from tests.test_api_support import bearer
from tests.waiting import until

ADMIN = bearer("test-admin-token")
AUTH = ADMIN["Authorization"].encode()


def _socket_inodes(pid: int) -> set[str]:
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    return inodes


def _accepted_inode(server_port: int, client_port: int) -> str:
    """The inode of the server's socket of the TCP connection from `client_port` to `server_port`."""
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            local, remote = (int(field.rsplit(":", 1)[1], 16) for field in fields[1:3])
            if (local, remote) == (server_port, client_port):
                return fields[9]
    raise AssertionError(f"no connection from port {client_port} to {server_port}")


def _running(pid: int) -> bool:
    return Path(f"/proc/{pid}").exists()


def _metric(text: str, name: str) -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name))


async def test_the_api_answers_from_its_own_process(start_runtime: StartRuntime) -> None:
    runtime = await start_runtime(api_process=True)
    child = runtime.api_pid
    assert child is not None and child != os.getpid()
    reader, writer = await asyncio.open_connection("127.0.0.1", runtime.http_port)
    try:
        writer.write(
            b"GET /api/chargers HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer test-admin-token\r\n\r\n"
        )
        assert (await reader.readline()).startswith(b"HTTP/1.1 200")
        inode = _accepted_inode(runtime.http_port, writer.get_extra_info("sockname")[1])
        assert inode in _socket_inodes(child)  # accepted (and answered) by the API process
        assert inode not in _socket_inodes(os.getpid())
    finally:
        writer.close()


async def test_commands_from_the_api_process_reach_a_real_charger_and_come_back(
    start_runtime: StartRuntime,
) -> None:
    runtime = await start_runtime(api_process=True, accept_unknown=True)
    assert runtime.gateway is not None
    async with (
        raw_charger(runtime.gateway.port, "CP-CHILD") as cp,
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{runtime.http_port}", headers=ADMIN) as http,
    ):
        await cp.boot()
        command = asyncio.create_task(http.post("/api/chargers/CP-CHILD/ocpp/ClearCache", json={}))
        call = await asyncio.wait_for(cp.recv(), 10)
        assert call[0] == 2 and call[2] == "ClearCache", call
        await cp.ws.send(json.dumps([3, call[1], {"status": "Rejected"}]))
        r = await command
        assert r.status_code == 200 and r.json() == {"response": {"status": "Rejected"}}, r.text
        gone = await http.post("/api/chargers/CP-NOWHERE/ocpp/ClearCache", json={})
        assert gone.status_code in (404, 409), gone.text  # not connected: the gateway's answer, relayed


async def test_metrics_hold_both_processes_series(start_runtime: StartRuntime) -> None:
    runtime = await start_runtime(api_process=True, accept_unknown=True, api_rate_limit="2/minute")
    assert runtime.gateway is not None
    async with (
        raw_charger(runtime.gateway.port, "CP-METRICS") as cp,
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{runtime.http_port}", headers=ADMIN) as http,
    ):
        await cp.boot()
        statuses = [(await http.get("/api/chargers")).status_code for _ in range(3)]
        assert statuses[-1] == 429, statuses  # counted in the API process
        text = (await http.get("/metrics")).text
    assert _metric(text, 'chargeops_api_requests_refused_total{reason="rate_limited"}') >= 1
    assert _metric(text, "chargeops_ocpp_messages_total") >= 1  # counted in the gateway's
    assert _metric(text, "chargeops_api_process_cpu_seconds_total") > 0  # the API process's own
    assert _metric(text, "process_cpu_seconds_total") > 0
    assert text.count("# TYPE chargeops_api_requests_refused_total counter") == 1


async def test_a_stalled_api_process_does_not_hold_up_the_chargers(start_runtime: StartRuntime) -> None:
    runtime = await start_runtime(api_process=True, accept_unknown=True)
    assert runtime.gateway is not None and runtime.api_pid is not None
    async with (
        raw_charger(runtime.gateway.port, "CP-STALL") as cp,
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{runtime.http_port}", headers=ADMIN) as http,
    ):
        await cp.boot()
        os.kill(runtime.api_pid, signal.SIGSTOP)
        try:
            api = asyncio.create_task(http.get("/api/chargers"))
            await cp.result("Heartbeat", {})
            assert not api.done()
        finally:
            os.kill(runtime.api_pid, signal.SIGCONT)
        assert (await api).status_code == 200


async def test_a_killed_api_process_is_started_again(start_runtime: StartRuntime) -> None:
    runtime = await start_runtime(api_process=True)
    first = runtime.api_pid
    assert first is not None
    os.kill(first, signal.SIGKILL)
    await until(lambda: runtime.api_pid not in (first, None), 30, "a new API process")
    # The API process runs niced: on a busy machine its first request (pool, first queries) can take
    # longer than httpx's default 5 s; what is tested is that it answers at all.
    async with httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{runtime.http_port}", headers=ADMIN, timeout=30
    ) as http:
        assert (await http.get("/api/chargers")).status_code == 200
        text = (await http.get("/metrics")).text
    assert _metric(text, "chargeops_api_process_restarts_total") == 1


async def test_the_in_thread_api_remains(start_runtime: StartRuntime) -> None:
    runtime = await start_runtime(api_process=False)
    assert runtime.api_pid is None and runtime.api_loop is not asyncio.get_running_loop()
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{runtime.http_port}", headers=ADMIN) as http:
        assert (await http.get("/api/chargers")).status_code == 200


async def test_sigterm_stops_serve_and_its_api_process(tmp_path: Path) -> None:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("CHARGEOPS_")},
        "CHARGEOPS_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'c.db'}",
        "PYTHONPATH": str(ROOT),
    }
    server = await Server.start("serve", "gateway,ingest,ops,api", env, tmp_path, ocpp_port=0)
    try:
        line = next(line for line in server.lines if "HTTP API on" in line)
        child = int(line.rsplit("API process ", 1)[1].rstrip(")"))
        assert _running(child)
        server.proc.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(server.proc.wait(), 30)
    finally:
        await server.stop()
    assert code == 0, server.lines[-20:]
    assert not _running(child), server.lines[-20:]


def test_merged_exposition_adds_counts_and_keeps_the_gateways_gauges() -> None:
    gateway = b"""# HELP a_total A
# TYPE a_total counter
a_total{k="x"} 2.0
# HELP g G
# TYPE g gauge
g 5.0
# HELP h H
# TYPE h histogram
h_bucket{le="1.0"} 1.0
h_bucket{le="+Inf"} 1.0
h_count 1.0
h_sum 0.5
"""
    api = b"""# HELP a_total A
# TYPE a_total counter
a_total{k="x"} 3.0
a_total{k="y"} 1.0
# HELP g G
# TYPE g gauge
g 0.0
# HELP h H
# TYPE h histogram
h_bucket{le="1.0"} 0.0
h_bucket{le="+Inf"} 2.0
h_count 2.0
h_sum 7.0
# HELP only_api O
# TYPE only_api gauge
only_api 4.0
"""
    text = merge(gateway, api).decode()
    assert 'a_total{k="x"} 5.0' in text and 'a_total{k="y"} 1.0' in text
    assert "\ng 5.0" in text and "only_api 4.0" in text
    assert 'h_bucket{le="1.0"} 1.0' in text and 'h_bucket{le="+Inf"} 3.0' in text and "h_sum 7.5" in text
    assert text.count("# TYPE a_total counter") == 1
