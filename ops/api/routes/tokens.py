"""API bearer tokens (admin only): issued once, stored as SHA-256, revoked rather than deleted so the
record of who had access remains."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path
from sqlalchemy import select

from chargeops.db.models import ApiToken
from chargeops.events import utcnow
from ops.api.auth import Admin, new_token, token_digest
from ops.api.context import Db
from ops.api.errors import ApiError, documented
from ops.api.schemas import ApiTokenCreate, ApiTokenCreated, ApiTokenOut, Items

router = APIRouter(
    prefix="/api/tokens", tags=["api tokens"], dependencies=[Admin], responses=documented(401, 403, 422)
)


@router.post("", status_code=201)
async def create_token(body: ApiTokenCreate, db: Db) -> ApiTokenCreated:
    """Issue a token; the secret is in this response only."""
    token = new_token()
    row = ApiToken(name=body.name, role=body.role.value, region=body.region, token_sha256=token_digest(token))
    db.add(row)
    await db.flush()
    out = ApiTokenCreated(**ApiTokenOut.model_validate(row, from_attributes=True).model_dump(), token=token)
    await db.commit()
    return out


@router.get("")
async def list_tokens(db: Db) -> Items[ApiTokenOut]:
    rows = (await db.scalars(select(ApiToken).order_by(ApiToken.id))).all()
    return Items(items=[ApiTokenOut.model_validate(r, from_attributes=True) for r in rows])


@router.delete("/{token_id}", status_code=204, responses=documented(404))
async def revoke_token(token_id: Annotated[int, Path(ge=1)], db: Db) -> None:
    """Revoke at once (every request checks the token); revoking twice keeps the first time."""
    row = await db.get(ApiToken, token_id)
    if row is None:
        raise ApiError(404, "not_found", f"no api token {token_id}")
    if row.revoked_at is None:
        row.revoked_at = utcnow()
        await db.commit()
