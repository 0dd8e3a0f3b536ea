"""`chargeops demo` as a user runs it (default fleet, fault rate and speed): within a couple of minutes the
API shows maintenance tickets with parts, reserved stock, supply-risk warnings, battery swaps from the swap
stations and charger limits from the PV + storage site's planner."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

TOKEN = "demo-test-token"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_demo_shows_tickets_parts_and_warnings(tmp_path: Path) -> None:
    http_port, ocpp_port = free_port(), free_port()
    env = {**os.environ, "CHARGEOPS_ADMIN_TOKEN": TOKEN}
    log = (tmp_path / "demo.log").open("wb")
    args = ["demo", "--http-port", str(http_port), "--ocpp-port", str(ocpp_port)]
    demo = subprocess.Popen(
        [sys.executable, "-m", "ops.cli", *args], cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT
    )
    api = httpx.Client(
        base_url=f"http://127.0.0.1:{http_port}", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10
    )
    seen: dict[str, Any] = {}
    try:
        deadline = time.monotonic() + 150
        while time.monotonic() < deadline and demo.poll() is None:
            time.sleep(2)
            try:
                tickets = api.get("/api/tickets", params={"kind": "maintenance"}).json()["items"]
                risks = api.get("/api/supply-risk").json()["items"]
                stock = api.get("/api/stock").json()["items"]
            except httpx.TransportError:
                continue  # not listening yet
            seen = {
                "tickets with parts": [t for t in tickets if t["parts"] and t["depot"]],
                "warnings": [r for r in risks if r["level"] != "ok"],
                "reserved stock": [s for s in stock if s["reserved"] > 0],
                "swaps": api.get("/api/swaps").json()["items"],
                "site power budget": [
                    a for a in api.get("/api/sites/harbour/power").json().get("allocations", [])
                ],
            }
            if all(seen.values()):
                break
        assert demo.poll() is None, (tmp_path / "demo.log").read_text()
        assert seen and all(seen.values()), {k: len(v) for k, v in seen.items()}
        out = (tmp_path / "demo.log").read_text()
        assert "/crew" in out and "/api/tickets" in out and "/api/supply-risk" in out
        assert api.get("/crew").status_code == 200
        # every curl line works pasted into a shell as printed (the token is $CHARGEOPS_ADMIN_TOKEN here)
        curls = [line.split("curl ", 1)[1] for line in out.splitlines() if " curl -H " in line]
        assert len(curls) >= 8 and all("$CHARGEOPS_ADMIN_TOKEN" in c for c in curls)
        for line in curls:
            shell = ["bash", "-c", f"curl -s -o /dev/null -w '%{{http_code}}' {line}"]
            code = subprocess.run(shell, env=env, capture_output=True, text=True, timeout=30).stdout
            assert code == "200", (line, code)
    finally:
        api.close()
        demo.terminate()
        demo.wait(30)
        log.close()
