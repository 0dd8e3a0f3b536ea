"""Bearer-token roles for the operator API.

The admin token comes from the settings; every other token is a random secret of which only the SHA-256 is
stored, so the database never holds a usable credential. Looking a token up by its digest reveals nothing
through timing (an attacker cannot steer the digest), and the admin token is compared in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import select

from chargeops.db.models import ApiToken
from ops.api import audit
from ops.api.context import Ctx, Db
from ops.api.errors import ApiError
from telemetry.metrics import API_REFUSED


class Role(StrEnum):
    VIEWER = "viewer"
    CREW = "crew"
    OPERATOR = "operator"
    ADMIN = "admin"


_RANK = {Role.VIEWER: 0, Role.CREW: 1, Role.OPERATOR: 2, Role.ADMIN: 3}
_bearer = HTTPBearer(auto_error=False, description="CHARGEOPS_ADMIN_TOKEN or a token from POST /api/tokens")


@dataclass(frozen=True, slots=True)
class Principal:
    name: str
    role: Role
    token_id: int | None = None
    region: str | None = None  # a token bound to a region sees only that region (`ops.api.scope`)

    @property
    def at_least_operator(self) -> bool:
        return _RANK[self.role] >= _RANK[Role.OPERATOR]


def new_token() -> str:
    return "cop_" + secrets.token_urlsafe(32)


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _unauthorized(detail: str) -> ApiError:
    return ApiError(401, "unauthorized", detail, headers={"WWW-Authenticate": "Bearer"})


async def authenticate(
    request: Request,
    ctx: Ctx,
    db: Db,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    if credentials is None or not credentials.credentials:  # costs no lookup: not limited
        audit.refused(request, 401, "missing bearer token")
        raise _unauthorized("missing bearer token")
    token = credentials.credentials.encode()
    admin = ctx.settings.admin_token.get_secret_value() if ctx.settings.admin_token else ""
    if admin and hmac.compare_digest(token, admin.encode()):
        _limit(ctx, request, "admin")
        request.state.principal = principal = Principal("admin", Role.ADMIN)  # for the access log
        return principal
    _limit(ctx, request, _address_key(request), count=False)  # a guessing address is refused unhashed
    row = (
        await db.execute(
            select(ApiToken).where(ApiToken.token_sha256 == token_digest(credentials.credentials))
        )
    ).scalar_one_or_none()
    if row is None or row.revoked_at is not None or row.role not in _RANK:
        known = row is not None
        _limit(ctx, request, _address_key(request))
        audit.refused(request, 401, "revoked token" if known else "unknown token", row.id if row else None)
        raise _unauthorized("unknown or revoked token")
    _limit(ctx, request, f"token:{row.id}")
    request.state.principal = principal = Principal(row.name, Role(row.role), row.id, row.region)
    return principal


def _address_key(request: Request) -> str:
    return f"address:{request.client.host if request.client else '?'}"


def _limit(ctx: Ctx, request: Request, key: str, *, count: bool = True) -> None:
    """429 with `Retry-After` once `key` has used up its rate (`api_rate_limit`)."""
    wait = ctx.limiter.retry_after(key) if count else ctx.limiter.exhausted(key)
    if wait is not None:
        API_REFUSED.labels("rate_limited").inc()
        raise ApiError(
            429,
            "rate_limited",
            f"more requests than {ctx.settings.api_rate_limit} allows; retry in {wait} s",
            headers={"Retry-After": str(wait)},
        )


def require(minimum: Role) -> Callable[..., Awaitable[Principal]]:
    """Dependency: a caller holding at least `minimum` (admin > operator > crew > viewer)."""

    async def check(request: Request, principal: Annotated[Principal, Depends(authenticate)]) -> Principal:
        if _RANK[principal.role] < _RANK[minimum]:
            why = f"needs {minimum}, has {principal.role}"
            audit.refused(request, 403, why, principal.token_id, principal.name)
            raise ApiError(403, "forbidden", f"this needs the {minimum} role; the token has {principal.role}")
        return principal

    return check


Caller = Annotated[Principal, Depends(authenticate)]
CrewMember = Annotated[Principal, Depends(require(Role.CREW))]
OperatorUser = Annotated[Principal, Depends(require(Role.OPERATOR))]
Viewer = Depends(require(Role.VIEWER))
Operator = Depends(require(Role.OPERATOR))
Admin = Depends(require(Role.ADMIN))
