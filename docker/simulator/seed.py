"""Seed the registry for the compose `simulator` profile: the simulated chargers (SIM00000..) spread over a
few sites, and their drivers' id tokens (SIMTAG0000..0099) on the authorization list.

Why: without registration the gateway refuses the simulator (no --accept-unknown in a real deployment), and
without accepted tokens no session ever starts, so the dashboards would have nothing to show.
Idempotent: an existing charger (409) or token is left as it is.
"""

from __future__ import annotations

import os
import sys
import time

import httpx


def main() -> int:
    api = os.environ.get("SEED_API", "http://api:8000")
    token = os.environ["CHARGEOPS_ADMIN_TOKEN"]
    chargers = int(os.environ.get("SIM_CHARGERS", "100"))
    sites = [s for s in os.environ.get("SIM_SITES", "north,south,harbour").split(",") if s]
    with httpx.Client(base_url=api, headers={"Authorization": f"Bearer {token}"}, timeout=10) as client:
        for _ in range(60):  # the api may still be starting
            try:
                if client.get("/healthz").status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(1)
        for n in range(chargers):
            body = {"id": f"SIM{n:05d}", "site": sites[n % len(sites)]}
            r = client.post("/api/chargers", json=body)
            if r.status_code not in (201, 409):
                print(f"registering {body['id']}: {r.status_code} {r.text}", file=sys.stderr)
                return 1
        for n in range(100):
            status = "Blocked" if n % 10 == 9 else "Accepted"  # some refusals, as in `chargeops demo`
            r = client.put(f"/api/id-tokens/SIMTAG{n:04d}", json={"status": status})
            if r.status_code not in (200, 201):
                print(f"id token SIMTAG{n:04d}: {r.status_code} {r.text}", file=sys.stderr)
                return 1
    print(f"seeded {chargers} chargers on {len(sites)} sites and 100 id tokens")
    return 0


if __name__ == "__main__":
    sys.exit(main())
