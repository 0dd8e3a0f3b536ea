"""The operator HTTP API (SPEC §5): fleet registry and summary, authorization list, transactions and
tariffs, OCPP commands, API tokens, tickets, spare parts and supply risk."""

from __future__ import annotations

from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from chargeops.settings import Settings
from ops.api import errors, health
from ops.api.context import ApiContext, Commands
from ops.api.middleware import AccessLogMiddleware, BodyLimitMiddleware, CatchAllMiddleware
from ops.api.ratelimit import RateLimiter
from ops.api.routes import (
    certificates,
    chargers,
    commands,
    crew,
    der,
    docs,
    ev_charging,
    fleet,
    id_tokens,
    inventory,
    local_list,
    pages,
    registry,
    site_power,
    status_page,
    suppliers,
    supply_risk,
    swaps,
    tariffs,
    tickets,
    tokens,
    transactions,
    webhooks,
)

__all__ = ["create_app"]

# Largest request body accepted; OCPP payloads (e.g. charging profiles) are far smaller.
MAX_BODY_BYTES = 1 << 20


def create_app(sessions: async_sessionmaker[AsyncSession], bus: Commands, settings: Settings) -> FastAPI:
    """An app bound to one database and a way to reach chargers; `/metrics` is mounted on it by the caller."""
    app = FastAPI(
        title="chargeops operator API",
        version="0.1.0",
        description="`Authorization: Bearer TOKEN` on every /api/ route; errors are "
        '`{"error": CODE, "detail": TEXT}`.',
        docs_url=None,  # FastAPI's pages load Swagger UI and Redoc from a CDN; ours are served locally
        redoc_url=None,
    )
    app.state.chargeops = ApiContext(sessions, bus, settings, RateLimiter(settings.api_rate_limit))
    errors.install(app)
    app.add_middleware(CatchAllMiddleware)
    app.add_middleware(BodyLimitMiddleware, limit=MAX_BODY_BYTES)
    if settings.access_log:
        app.add_middleware(AccessLogMiddleware)
    app.include_router(health.router)
    routes = (
        chargers,
        fleet,
        commands,
        certificates,
        id_tokens,
        local_list,
        transactions,
        tariffs,
        tokens,
        tickets,
        inventory,
        supply_risk,
        suppliers,
        registry,
        site_power,
        der,
        ev_charging,
        swaps,
        webhooks,
        crew,
        status_page,
        docs,
    )
    for module in routes:
        app.include_router(module.router)
    app.include_router(pages.shared_router)
    return app
