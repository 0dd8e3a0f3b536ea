"""Measured supply (issue 9): per supplier and SKU, the lead time the planning uses (catalogue prior moved
toward the realised lead times), its spread, the on-time rate and the orders still open with their age.

A supplier's figures belong to no region (it is the same supplier whoever ordered), so every token reads
them; a region-scoped token sees only its region's depots' open orders."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from ops.api.auth import Viewer
from ops.api.context import Db
from ops.api.errors import documented
from ops.api.schemas import Items
from ops.api.scope import Scoped
from ops.planning import load
from ops.planning.leadtime import lead_times

router = APIRouter(tags=["supply risk"], responses=documented(401, 403, 422))


@router.get("/api/suppliers", dependencies=[Viewer])
async def suppliers(
    db: Db, scope: Scoped, supplier: str | None = None, sku: str | None = None
) -> Items[dict[str, Any]]:
    """Lead time per supplier and SKU as measured from purchase orders, with the open orders' age and
    how overdue they are, slowest supplier first."""
    history = await load(db, sku=sku)
    depots = await scope.depot_ids(db)
    times = lead_times(history)
    items: list[dict[str, Any]] = []
    slip: dict[int, float] = {}  # row → measured ÷ catalogue lead time
    for (name, part_sku), lt in times.items():
        if supplier is not None and name != supplier:
            continue
        open_orders = [
            o
            for o in history.orders
            if o.open and o.supplier == name and o.sku == part_sku and (depots is None or o.depot in depots)
        ]
        slip[len(items)] = lt.mean / max(lt.catalogue_mean, 1e-9)
        items.append(
            {
                "supplier": name,
                "sku": part_sku,
                "lead_time_days": round(lt.mean, 1),
                "lead_time_sd_days": round(lt.sd, 1),
                "catalogue_lead_time_days": lt.catalogue_mean,
                "catalogue_lead_time_sd_days": lt.catalogue_sd,
                "orders_measured": lt.completed,
                "on_time_share": None if lt.on_time is None else round(lt.on_time, 3),
                "open_orders": [
                    {
                        "id": o.id,
                        "depot": o.depot,
                        "outstanding": o.outstanding,
                        "age_days": round(o.age_days(history.now), 1),
                        "overdue_days": max(0.0, round(lt.overdue_days(o, history.now), 1)),
                    }
                    for o in open_orders
                ],
            }
        )
    order = sorted(range(len(items)), key=lambda n: (-slip[n], str(items[n]["sku"])))
    return Items(items=[items[n] for n in order])
