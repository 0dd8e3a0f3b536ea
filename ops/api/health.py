"""`/healthz` for load balancers and orchestrators (healthy means the database answers), and `/`, which
points a person who opened the bare address to where things are."""

from __future__ import annotations

import asyncio
import logging

from fastapi import APIRouter
from fastapi.responses import HTMLResponse, JSONResponse
from sqlalchemy import text

from ops.api.context import Ctx

log = logging.getLogger(__name__)

router = APIRouter(tags=["health"])

# A probe must answer quickly even when the database hangs instead of refusing.
PROBE_TIMEOUT = 5.0


@router.get("/healthz", responses={503: {"description": "the database did not answer"}})
async def healthz(ctx: Ctx) -> JSONResponse:
    try:
        async with asyncio.timeout(PROBE_TIMEOUT), ctx.sessions() as session:
            await session.execute(text("SELECT 1"))
    except Exception as exc:  # any failure to reach the database is "unhealthy", not a 500
        log.warning("health check failed: %s", type(exc).__name__)
        return JSONResponse(
            {"status": "unavailable", "error": "unavailable", "detail": "the database did not answer"},
            status_code=503,
        )
    return JSONResponse({"status": "ok"})


_INDEX = """<!doctype html><html lang="en"><meta charset="utf-8"><title>chargeops</title>
<h1>chargeops</h1><ul>
<li><a href="/docs">/docs</a>: the operator API, with a token (<code>Authorization: Bearer …</code>)</li>
<li><a href="/crew">/crew</a>: the crew page for phones</li>
<li><a href="/status">/status</a>: the fleet status page (read-only: chargers, tickets, supply warnings)</li>
<li><a href="/healthz">/healthz</a>: whether the database answers</li>
<li><a href="/metrics">/metrics</a>: Prometheus metrics (unless they have their own port or token)</li>
</ul></html>"""


@router.get("/", include_in_schema=False)
async def index() -> HTMLResponse:
    return HTMLResponse(_INDEX)
