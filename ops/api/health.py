"""`/healthz` for load balancers and orchestrators: healthy means the database answers."""

from __future__ import annotations

import asyncio
import logging

from fastapi import APIRouter
from fastapi.responses import JSONResponse
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
