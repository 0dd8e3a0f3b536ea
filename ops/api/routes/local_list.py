"""Chargers' local authorization lists (`ops.local_list`): what each holds as far as we know, and syncing
one charger or all connected ones (of a site) with the id tokens."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from pydantic import Field
from sqlalchemy import func, select

from chargeops.db.engine import stored_iso
from chargeops.db.models import Charger, LocalList, LocalListEntry
from ops.api.auth import Operator, Viewer
from ops.api.context import ApiContext, Ctx, Db
from ops.api.errors import ApiError, documented
from ops.api.routes.chargers import ChargerIdPath
from ops.api.schemas import Input
from ops.api.scope import Scoped
from ops.local_list.records import NEVER
from ops.local_list.sync import LocalListSync
from ops.local_list.tokens import TokenReactions

router = APIRouter(tags=["local lists"], responses=documented(401, 403, 422))


def local_lists(request: Request, ctx: ApiContext) -> tuple[LocalListSync, TokenReactions]:
    """The app's syncer (one sync per charger at a time) and token reactions, made on first use."""
    state = request.app.state
    if getattr(state, "local_lists", None) is None:
        sync = LocalListSync(
            ctx.sessions,
            ctx.bus,
            groups=ctx.settings.local_list_group_set(),
            timeout=ctx.settings.call_timeout,
        )
        state.local_lists = (sync, TokenReactions(sync))
    pair: tuple[LocalListSync, TokenReactions] = state.local_lists
    return pair


def _view(charger_id: str, row: LocalList | None, entries: int) -> dict[str, Any]:
    if row is None:
        row = LocalList(charger_id=charger_id, state=NEVER, entries_sent=0)
    return {
        "charger_id": charger_id,
        "version": row.version,
        "state": row.state,
        "entries": entries,
        "supports": {
            "list_enabled": row.list_enabled,
            "max_length": row.max_length,
            "items_per_message": row.items_per_message,
            "cache_enabled": row.cache_enabled,
            "read_at": stored_iso(row.settings_at),
        },
        "last_sync": {
            "at": stored_iso(row.synced_at),
            "update": row.last_update,
            "result": row.last_result,
            "detail": row.last_detail,
            "entries_sent": row.entries_sent,
        },
        "changed_at": stored_iso(row.changed_at),
    }


@router.get("/api/chargers/{charger_id}/local-list", dependencies=[Viewer], responses=documented(404))
async def get_local_list(charger_id: ChargerIdPath, db: Db, scope: Scoped) -> dict[str, Any]:
    """The version the charger last accepted from us, the state (never, in_step, stale, failed,
    unsupported), how many tokens it holds, what it supports, and how the last sync went."""
    await scope.charger(db, charger_id)
    row = await db.get(LocalList, charger_id)
    count = await db.scalar(
        select(func.count()).select_from(LocalListEntry).where(LocalListEntry.charger_id == charger_id)
    )
    return _view(charger_id, row, count or 0)


@router.post(
    "/api/chargers/{charger_id}/local-list/sync", dependencies=[Operator], responses=documented(404, 409)
)
async def sync_local_list(
    charger_id: ChargerIdPath,
    request: Request,
    ctx: Ctx,
    db: Db,
    scope: Scoped,
    full: Annotated[bool, Query(description="send the whole list whatever the versions say")] = False,
) -> dict[str, Any]:
    """Bring the charger's list in step now: a Full update when its version is unknown or not ours, else a
    Differential one with what changed (nothing when nothing did). 200 with the outcome, also when the
    charger refused (`state` failed / unsupported); 409 when it is not connected."""
    await scope.charger(db, charger_id)
    await db.close()
    sync, _ = local_lists(request, ctx)
    result = await sync.sync(charger_id, full=full)
    if result.result == "not_connected":
        raise ApiError(409, "not_connected", result.detail or f"charger {charger_id} is not connected")
    return result.as_dict()


class FleetSync(Input):
    site: str | None = Field(default=None, min_length=1, max_length=64, description="only this site")
    full: bool = Field(default=False, description="send every list whole")


@router.post("/api/local-list/sync", dependencies=[Operator], responses=documented(404))
async def sync_local_lists(
    request: Request, ctx: Ctx, db: Db, scope: Scoped, body: FleetSync | None = None
) -> dict[str, Any]:
    """Sync every connected charger in the caller's scope (of one site if given), a few at a time; one
    outcome per charger and the count per state."""
    body = body or FleetSync()
    query = select(Charger.id).where(Charger.connected, Charger.kind == "charger", scope.chargers(Charger.id))
    if body.site is not None:
        await scope.place(db, body.site)  # a region: one of its sites (404 otherwise)
        query = query.where(Charger.site == body.site)
    ids = list(await db.scalars(query.order_by(Charger.id)))
    await db.close()
    sync, _ = local_lists(request, ctx)
    results = await sync.sync_many(ids, full=body.full)
    counts: dict[str, int] = {}
    for r in results:
        counts[r.state] = counts.get(r.state, 0) + 1
    return {"items": [r.as_dict() for r in results], "counts": counts}
