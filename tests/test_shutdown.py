"""SIGTERM under load (issue 12, graceful shutdown): `chargeops serve` with chargers sending meter values
stops accepting, closes the chargers, commits what it acknowledged and exits well within 30 s; every meter
value a charger got an answer for is in the database."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from pathlib import Path

import asyncpg
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from tests.server_process import ROOT, Server

CHARGERS = 40


async def _charger(port: int, n: int, acked: list[str], stop: asyncio.Event) -> None:
    """Boot, then MeterValues back-to-back until the server goes away; `acked` gets each answered one."""
    async with connect(f"ws://127.0.0.1:{port}/ocpp/SD{n:03d}", subprotocols=["ocpp1.6"]) as ws:  # type: ignore[list-item]
        boot = {"chargePointVendor": "Test", "chargePointModel": "Raw"}
        await ws.send(json.dumps([2, "b", "BootNotification", boot]))
        await ws.recv()
        i = 0
        try:
            while True:
                i += 1
                at = f"2026-11-25T10:{i // 60 % 60:02d}:{i % 60:02d}.{n:03d}Z"
                value = {
                    "timestamp": at,
                    "sampledValue": [{"value": str(1000 + i), "measurand": "Power.Active.Import"}],
                }
                await ws.send(
                    json.dumps([2, f"m{i}", "MeterValues", {"connectorId": 1, "meterValue": [value]}])
                )
                answer = json.loads(await ws.recv())
                if answer[0] == 3:
                    acked.append(at)
                if stop.is_set():
                    await asyncio.sleep(0)
        except ConnectionClosed:
            return


async def test_sigterm_under_load_exits_quickly_and_keeps_every_acknowledged_reading(
    pg_url: str, tmp_path: Path
) -> None:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("CHARGEOPS_")},
        "CHARGEOPS_DATABASE_URL": pg_url,
        "PYTHONPATH": str(ROOT),
    }
    server = await Server.start(
        "serve", "gateway,ingest,ops,api", env, tmp_path, ocpp_port=0, accept_unknown=True
    )
    try:
        port = await server.port_after("OCPP gateway listening on")
        acked: list[str] = []
        stop = asyncio.Event()
        fleet = [asyncio.create_task(_charger(port, n, acked, stop)) for n in range(CHARGERS)]
        while len(acked) < 2000:  # well under way
            assert server.proc.returncode is None, "\n".join(server.lines)
            await asyncio.sleep(0.05)
        started = time.monotonic()
        server.proc.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(server.proc.wait(), 40)
        took = time.monotonic() - started
        stop.set()
        await asyncio.wait_for(asyncio.gather(*fleet, return_exceptions=True), 10)
    finally:
        if server.proc.returncode is None:
            server.proc.kill()
            await server.proc.wait()
    assert code == 0 and took < 30, (code, took, server.lines[-20:])
    conn = await asyncpg.connect(pg_url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        stored = {
            r["sampled_at"].strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
            for r in await conn.fetch(
                "SELECT sampled_at FROM meter_samples WHERE measurand = 'Power.Active.Import'"
            )
        }
    finally:
        await conn.close()
    missing = [a for a in acked if a not in stored]
    assert not missing, f"{len(missing)} of {len(acked)} acknowledged readings not stored, e.g. {missing[:3]}"
