"""What the routes share (database, bus, settings) and the per-request dependencies that hand it out."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from chargeops.commands import Commands
from chargeops.settings import Settings
from ops.api.ratelimit import RateLimiter


@dataclass(frozen=True, slots=True)
class ApiContext:
    sessions: async_sessionmaker[AsyncSession]
    bus: Commands
    settings: Settings
    limiter: RateLimiter


def api_context(request: Request) -> ApiContext:
    ctx = request.app.state.chargeops
    assert isinstance(ctx, ApiContext)
    return ctx


async def db_session(ctx: Annotated[ApiContext, Depends(api_context)]) -> AsyncIterator[AsyncSession]:
    """One session per request, shared by the auth check and the route (FastAPI caches the dependency);
    whatever a route did not commit is rolled back when the request ends."""
    async with ctx.sessions() as session:
        yield session


Ctx = Annotated[ApiContext, Depends(api_context)]
Db = Annotated[AsyncSession, Depends(db_session)]
