"""The authorization list that Authorize, StartTransaction and TransactionEvent are checked against.

Tokens are up to 36 printable ASCII characters (the OCPP 2.0.1 limit); a 1.6 charger can only present an
idTag of at most 20, so longer tokens are usable only by 2.0.1 chargers. The list is one for the whole
fleet (a card works at every region's chargers): every token reads it, only an unscoped one changes it.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Request, Response
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from chargeops.db.models import IdToken
from chargeops.events import utcnow
from ops.api.auth import Operator, Viewer
from ops.api.context import Ctx, Db
from ops.api.errors import ApiError, documented
from ops.api.routes.local_list import local_lists
from ops.api.schemas import ID_TOKEN_PATTERN, MAX_PAGE, IdTokenOut, IdTokenPut, Page
from ops.api.scope import Scoped
from ops.local_list.tokens import TokenState

router = APIRouter(prefix="/api/id-tokens", tags=["id tokens"], responses=documented(401, 403, 422))

IdTokenPath = Annotated[
    str, Path(pattern=ID_TOKEN_PATTERN, description="1–36 printable ASCII characters (1.6 chargers: ≤ 20)")
]


def _state(row: IdToken | None) -> TokenState | None:
    return None if row is None else TokenState(row.status, row.expiry, row.group_id)


async def _one(db: Db, id_token: str) -> IdToken:
    row = await db.get(IdToken, id_token)
    if row is None:
        raise ApiError(404, "not_found", f"no id token {id_token}")
    return row


@router.put("/{id_token}", dependencies=[Operator], responses={201: {"model": IdTokenOut}})
async def put_id_token(
    id_token: IdTokenPath,
    body: IdTokenPut,
    db: Db,
    response: Response,
    scope: Scoped,
    request: Request,
    ctx: Ctx,
) -> IdTokenOut:
    """Create (201) or replace (200) a token's entry; fields left out go back to their defaults. The local
    lists it concerns become stale; a token that stops being Accepted is taken off chargers at once (their
    lists are synced and the caches that may hold it cleared, in the background)."""
    scope.fleet_wide("the authorization list")
    for attempt in range(2):  # a concurrent PUT may create the row between our read and our insert
        row = await db.get(IdToken, id_token)
        created = row is None
        before = _state(row)
        if row is None:
            row = IdToken(id_token=id_token)
            db.add(row)
        row.type, row.status, row.expiry, row.group_id = body.type, body.status, body.expiry, body.group_id
        row.updated_at = utcnow()
        try:
            await db.flush()
            break
        except IntegrityError:
            await db.rollback()
            if attempt:
                raise
    out = IdTokenOut.model_validate(row, from_attributes=True)
    await db.commit()
    await local_lists(request, ctx)[1].changed(id_token, before, _state(row))
    response.status_code = 201 if created else 200
    return out


@router.get("", dependencies=[Viewer])
async def list_id_tokens(
    db: Db,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 500,
    cursor: Annotated[str | None, Query(max_length=36, description="`next` of the previous page")] = None,
) -> Page[IdTokenOut]:
    """The list by token, a page at a time (a fleet's list can hold a city's cards): pass `next` as
    `cursor` until it is null."""
    query = select(IdToken).order_by(IdToken.id_token).limit(limit + 1)
    if cursor is not None:
        query = query.where(IdToken.id_token > cursor)
    rows = (await db.scalars(query)).all()
    items = [IdTokenOut.model_validate(r, from_attributes=True) for r in rows[:limit]]
    return Page(items=items, next=rows[limit - 1].id_token if len(rows) > limit else None)


@router.get("/{id_token}", dependencies=[Viewer], responses=documented(404))
async def get_id_token(id_token: IdTokenPath, db: Db) -> IdTokenOut:
    return IdTokenOut.model_validate(await _one(db, id_token), from_attributes=True)


@router.delete("/{id_token}", status_code=204, dependencies=[Operator], responses=documented(404))
async def delete_id_token(id_token: IdTokenPath, db: Db, scope: Scoped, request: Request, ctx: Ctx) -> None:
    """Remove a token: chargers asking about it are then told Invalid; it goes off the local lists."""
    scope.fleet_wide("the authorization list")
    row = await _one(db, id_token)
    before = _state(row)
    await db.delete(row)
    await db.commit()
    await local_lists(request, ctx)[1].changed(id_token, before, None)
