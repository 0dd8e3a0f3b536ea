"""Structural weak spots of the spare-parts supply: a diagnosis, never a level of the stock-out warning.

A stock-out warning (`ops.supply_warnings`) says a depot may run short soon; a weak spot is a property of the
supply chain that makes every future shortage likelier or longer whatever the stock is today, so it is
diagnosed apart and fixed by buyers and engineers (a second source, a framework contract, a batch recall),
not by the next order. Findings, most severe first, each `{kind, severity, sku?, supplier?, depots?, text,
figures}`; only SKUs the fleet uses (installed, stocked, demanded or ordered) are looked at:

- `single_source`: a SKU with one supplier or none. high: lead time ≥ `LONG_LEAD_DAYS`; medium: installed
  in ≥ `WIDE_DEPOTS` depots or ≥ `WIDE_UNITS` units; low otherwise (or when nothing installed needs it).
- `lead_time_variance`: a supplier × SKU whose lead time CV = σ / mean ≥ `CV_FLAG` (high ≥ `CV_HIGH`), or
  whose measured mean exceeds the catalogue's by ≥ `SLOW_BY` (high ≥ `SLOW_BY_HIGH`). Figures are
  planning's estimates (`ops.planning.leadtime`); a CV only the catalogue states (nothing measured yet) is
  one severity lower: a promise, not evidence.
- `supplier_on_time`: a supplier × SKU with ≥ `ON_TIME_MIN_ORDERS` measured orders and an on-time rate
  < `ON_TIME_FLAG` (high < `ON_TIME_HIGH`).
- `concentration`: each installed SKU's units (and the SKU itself) split evenly over its suppliers; a
  supplier whose share by units or by SKUs is ≥ `CONCENTRATION_SHARE` (high ≥ `CONCENTRATION_HIGH`). The
  fleet's Herfindahl–Hirschman index Σ sᵢ² (1 = one supplier for everything) goes with every such
  finding and into the report.
- `failure_trend_by_model`: a SKU whose failures rise within one charger model (a bad batch or design
  shows there first): `ops.planning.demand`'s own Poisson trend test (`TREND_WINDOWS`, `TREND_ALPHA`,
  `TREND_MIN_COUNT`, run through `forecast`, so it stays the planning's test) over the parts consumed by
  that model's tickets against its installed units.
  high: ≥ `TREND_HIGH_FACTOR` × the baseline.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from sqlalchemy import Integer, literal_column, select, union_all
from sqlalchemy.ext.asyncio import AsyncSession

from chargeops import clock
from chargeops.db.engine import stored_utc
from chargeops.db.models import Charger
from chargeops.db.ops_models import ChargerModel, ModelPart, Site, StockMovement, Ticket
from ops.planning.demand import forecast
from ops.planning.history import Demand, History, Pair, load
from ops.planning.leadtime import LeadTime, lead_times

LONG_LEAD_DAYS = 30.0
WIDE_DEPOTS = 2
WIDE_UNITS = 20
CV_FLAG = 0.3
CV_HIGH = 0.5
SLOW_BY = 0.25
SLOW_BY_HIGH = 0.5
ON_TIME_MIN_ORDERS = 3
ON_TIME_FLAG = 0.8
ON_TIME_HIGH = 0.5
CONCENTRATION_SHARE = 0.5
CONCENTRATION_HIGH = 0.75
TREND_HIGH_FACTOR = 3.0

KINDS = ("single_source", "lead_time_variance", "supplier_on_time", "concentration", "failure_trend_by_model")
SEVERITIES = ("low", "medium", "high")
Finding = dict[str, Any]
Times = dict[tuple[str | None, str], LeadTime]


@dataclass(slots=True)
class Diagnosis:
    """The findings, most severe first, and the fleet-wide sourcing figures (HHI) the report heads with."""

    findings: list[Finding]
    fleet: dict[str, Any] = field(default_factory=dict)


def _finding(kind: str, severity: str, text: str, figures: dict[str, Any], **where: Any) -> Finding:
    found = {k: v for k, v in where.items() if v is not None}
    return {"kind": kind, "severity": severity, **found, "text": text, "figures": figures}


def _n(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def _lower(severity: str) -> str:
    return SEVERITIES[max(0, SEVERITIES.index(severity) - 1)]


def _used_skus(history: History) -> set[str]:
    return {sku for _, sku in history.pairs()}


def _installed(history: History) -> dict[str, dict[str, int]]:
    """SKU → depot → units installed now."""
    out: dict[str, dict[str, int]] = defaultdict(dict)
    for depot, sku in history.installed:
        units = history.installed_now((depot, sku))
        if units > 0:
            out[sku][depot] = units
    return out


def single_source(history: History, times: Times) -> list[Finding]:
    installed = _installed(history)
    found = []
    for sku in sorted(_used_skus(history)):
        part = history.parts[sku]
        if len(part.suppliers) > 1:
            continue
        supplier = part.suppliers[0] if part.suppliers else None
        lt = times.get((supplier, sku))
        lead = lt.mean if lt is not None else part.lead_time_days
        depots = installed.get(sku, {})
        units = sum(depots.values())
        if units == 0:
            severity = "low"
        elif lead >= LONG_LEAD_DAYS:
            severity = "high"
        elif len(depots) >= WIDE_DEPOTS or units >= WIDE_UNITS:
            severity = "medium"
        else:
            severity = "low"
        who = f"only {supplier}" if supplier else "no supplier on record"
        text = (
            f"{sku} ({part.name}): {who}, lead time {lead:.0f} d; {_n(units, 'unit')} installed "
            f"in {_n(len(depots), 'depot')} depend on it"
        )
        figures = {
            "suppliers": len(part.suppliers),
            "lead_time_days": round(lead, 1),
            "catalogue_lead_time_days": part.lead_time_days,
            "installed_units": units,
            "depots": len(depots),
        }
        found.append(
            _finding(
                "single_source", severity, text, figures, sku=sku, supplier=supplier, depots=sorted(depots)
            )
        )
    return found


def _measured(lt: LeadTime) -> bool:
    return lt.completed > 0 or lt.mean != lt.catalogue_mean


def _per_supplier(history: History, times: Times) -> list[tuple[LeadTime, dict[str, Any]]]:
    """Each supplier × SKU the fleet uses, with where it is (SKU, supplier, depots installed)."""
    used, installed = _used_skus(history), _installed(history)
    return [
        (lt, {"sku": sku, "supplier": supplier, "depots": sorted(installed.get(sku, {}))})
        for (supplier, sku), lt in sorted(times.items(), key=lambda kv: (kv[0][1], kv[0][0] or ""))
        if sku in used
    ]


def lead_time_variance(history: History, times: Times) -> list[Finding]:
    found = []
    for lt, where in _per_supplier(history, times):
        if lt.mean <= 0:
            continue
        cv = lt.sd / lt.mean
        slow = lt.mean / lt.catalogue_mean - 1 if lt.catalogue_mean > 0 else 0.0
        measured = _measured(lt)
        severities = []
        if cv >= CV_FLAG:
            by_cv = "high" if cv >= CV_HIGH else "medium"
            severities.append(by_cv if measured else _lower(by_cv))
        if measured and slow >= SLOW_BY:
            severities.append("high" if slow >= SLOW_BY_HIGH else "medium")
        if not severities:
            continue
        basis = f"{lt.completed} orders measured" if measured else "catalogue figure, no order measured yet"
        text = (
            f"{lt.supplier or 'unknown supplier'} → {lt.sku}: lead time {lt.mean:.0f} ± {lt.sd:.0f} d "
            f"(CV {cv:.2f}) against the catalogue's {lt.catalogue_mean:.0f} ± {lt.catalogue_sd:.0f} d"
            + (f" ({slow:+.0%})" if measured else "")
            + f"; {basis}"
        )
        figures = {
            "mean_days": round(lt.mean, 1),
            "sd_days": round(lt.sd, 1),
            "cv": round(cv, 3),
            "catalogue_mean_days": lt.catalogue_mean,
            "catalogue_sd_days": lt.catalogue_sd,
            "slower_than_catalogue": round(slow, 3),
            "orders_measured": lt.completed,
            "basis": "measured" if measured else "catalogue",
        }
        severity = max(severities, key=SEVERITIES.index)
        found.append(_finding("lead_time_variance", severity, text, figures, **where))
    return found


def supplier_on_time(history: History, times: Times) -> list[Finding]:
    found = []
    for lt, where in _per_supplier(history, times):
        if lt.completed < ON_TIME_MIN_ORDERS or lt.on_time is None or lt.on_time >= ON_TIME_FLAG:
            continue
        text = (
            f"{lt.supplier or 'unknown supplier'} delivered {lt.on_time:.0%} of its last {lt.completed} "
            f"{lt.sku} orders on time (flag below {ON_TIME_FLAG:.0%})"
        )
        figures = {
            "on_time": round(lt.on_time, 3),
            "orders_measured": lt.completed,
            "mean_days": round(lt.mean, 1),
            "catalogue_mean_days": lt.catalogue_mean,
        }
        severity = "high" if lt.on_time < ON_TIME_HIGH else "medium"
        found.append(_finding("supplier_on_time", severity, text, figures, **where))
    return found


def supplier_shares(history: History) -> dict[str, Any]:
    """Each supplier's share of the installed units and of the installed SKUs (split evenly over a SKU's
    suppliers), and the fleet HHI on both. SKUs without a supplier are `single_source`'s business."""
    per_sku = {sku: sum(d.values()) for sku, d in _installed(history).items() if sku in history.parts}
    units: dict[str, float] = defaultdict(float)
    skus: dict[str, float] = defaultdict(float)
    for sku, n in per_sku.items():
        names = history.parts[sku].suppliers
        for name in names:
            units[name] += n / len(names)
            skus[name] += 1 / len(names)
    total_units, total_skus = sum(units.values()), sum(skus.values())
    by_units = {s: u / total_units for s, u in units.items()} if total_units else {}
    by_skus = {s: k / total_skus for s, k in skus.items()} if total_skus else {}
    return {
        "units": round(total_units),
        "skus": round(total_skus),
        "suppliers": len(units),
        "hhi_units": round(sum(s * s for s in by_units.values()), 4),
        "hhi_skus": round(sum(s * s for s in by_skus.values()), 4),
        "share_units": {s: round(v, 4) for s, v in sorted(by_units.items())},
        "share_skus": {s: round(v, 4) for s, v in sorted(by_skus.items())},
    }


def concentration(history: History, fleet: dict[str, Any] | None = None) -> list[Finding]:
    fleet = fleet or supplier_shares(history)
    found = []
    for supplier in sorted(fleet["share_units"]):
        by_units, by_skus = fleet["share_units"][supplier], fleet["share_skus"][supplier]
        top = max(by_units, by_skus)
        if top < CONCENTRATION_SHARE:
            continue
        text = (
            f"{by_units:.0%} of the installed parts (by units) and {by_skus:.0%} of the SKUs depend on "
            f"{supplier}; fleet HHI {fleet['hhi_units']:.2f} by units, {fleet['hhi_skus']:.2f} by SKUs"
        )
        figures = {
            "share_units": by_units,
            "share_skus": by_skus,
            "fleet_hhi_units": fleet["hhi_units"],
            "fleet_hhi_skus": fleet["hhi_skus"],
            "fleet_units": fleet["units"],
            "fleet_skus": fleet["skus"],
        }
        severity = "high" if top >= CONCENTRATION_HIGH else "medium"
        found.append(_finding("concentration", severity, text, figures, supplier=supplier))
    return found


@dataclass(slots=True)
class ByModel:
    """Failures and exposure per (charger model, SKU) in the shape of a `History` (model in the depot's
    place), so `ops.planning.demand` runs its own trend test on it unchanged."""

    history: History
    names: dict[str, str]  # model id → "vendor model"
    depots: dict[Pair, list[str]]  # (model, SKU) → depots where it is installed


def by_model(
    history: History,
    exposure: list[tuple[str, str, str, int, datetime]],
    failures: list[tuple[str, str, int, datetime]],
    names: dict[str, str] | None = None,
) -> ByModel:
    """`exposure`: (model, depot, SKU, units, charger joined); `failures`: (model, SKU, units consumed,
    ticket created)."""
    installed: dict[Pair, list[tuple[datetime, int]]] = defaultdict(list)
    depots: dict[Pair, set[str]] = defaultdict(set)
    for model, depot, sku, units, joined in exposure:
        installed[(model, sku)].append((joined, units))
        depots[(model, sku)].add(depot)
    demand: dict[Pair, list[Demand]] = defaultdict(list)
    for model, sku, units, at in failures:
        demand[(model, sku)].append(Demand(at, float(units)))
    shaped = replace(history, stock={}, installed=dict(installed), demand=dict(demand), orders=[])
    return ByModel(shaped, names or {}, {k: sorted(v) for k, v in depots.items()})


def failure_trend_by_model(data: ByModel) -> list[Finding]:
    found = []
    for pair in data.history.pairs():
        trend = forecast(data.history, pair).trend
        if trend is None:
            continue
        model, sku = pair
        name = data.names.get(model, model)
        text = (
            f"{sku} failing more on {name}: {trend.count:.0f} in {trend.window_days:.0f} days vs "
            f"{trend.expected:.2g} expected from its {data.history.installed_now(pair)} units "
            f"(×{trend.factor:.1f}, p = {trend.p:.2g})"
        )
        figures = {
            "model": model,
            "model_name": name,
            "count": trend.count,
            "expected": round(trend.expected, 4),
            "factor": round(trend.factor, 2),
            "p": trend.p,
            "window_days": trend.window_days,
            "installed_units": data.history.installed_now(pair),
        }
        severity = "high" if trend.factor >= TREND_HIGH_FACTOR else "medium"
        found.append(
            _finding("failure_trend_by_model", severity, text, figures, sku=sku, depots=data.depots.get(pair))
        )
    return found


def _rank(f: Finding) -> tuple[int, int, str, str]:
    where = (f.get("sku") or "", f.get("supplier") or "")
    return (-SEVERITIES.index(f["severity"]), KINDS.index(f["kind"]), *where)


def find(history: History, times: Times | None = None, models: ByModel | None = None) -> Diagnosis:
    """Every weak spot of the snapshot; `times` as `ops.planning.plan` measured them (measured here if
    None), `models` the per-model failures (no trend test without them)."""
    times = times if times is not None else lead_times(history)
    fleet = supplier_shares(history)
    findings = [
        *single_source(history, times),
        *lead_time_variance(history, times),
        *supplier_on_time(history, times),
        *concentration(history, fleet),
        *(failure_trend_by_model(models) if models is not None else []),
    ]
    findings.sort(key=_rank)
    return Diagnosis(findings, fleet)


def pick(
    findings: list[Finding], kind: str | None = None, sku: str | None = None, supplier: str | None = None
) -> list[Finding]:
    return [
        f
        for f in findings
        if (kind is None or f["kind"] == kind)
        and (sku is None or f.get("sku") == sku)
        and (supplier is None or f.get("supplier") == supplier)
    ]


async def _load_by_model(session: AsyncSession, history: History) -> ByModel:
    """One query: the parts each model's maintenance tickets consumed, dated by the fault, and every
    charger's installed parts (the exposure), both keyed by charger model."""
    model_of = (ChargerModel.vendor == Charger.vendor) & (ChargerModel.model == Charger.model)
    consumed = (
        select(
            literal_column("1", Integer).label("failure"),
            ChargerModel.id,
            StockMovement.depot_id,
            StockMovement.sku,
            StockMovement.qty,
            Ticket.created_at,
            ChargerModel.vendor,
            ChargerModel.model,
        )
        .select_from(StockMovement)
        .join(Ticket, Ticket.id == StockMovement.ticket_id)
        .join(Charger, Charger.id == Ticket.charger_id)
        .join(ChargerModel, model_of)
        .where(
            StockMovement.kind == "consume",
            Ticket.kind == "maintenance",
            Ticket.created_at >= history.since,
        )
    )
    exposed = (
        select(
            literal_column("0", Integer),
            ChargerModel.id,
            Site.depot_id,
            ModelPart.sku,
            ModelPart.qty,
            Charger.created_at,
            ChargerModel.vendor,
            ChargerModel.model,
        )
        .select_from(Charger)
        .join(Site, Site.id == Charger.site)
        .join(ChargerModel, model_of)
        .join(ModelPart, ModelPart.model_id == ChargerModel.id)
        .where(Site.depot_id.is_not(None))  # stock is consumed at depots: exposure counts the same chargers
    )
    exposure, failures, names = [], [], {}
    result: Any = await session.execute(union_all(consumed, exposed))  # a UNION's rows are untyped
    for failure, model, depot, sku, qty, at, vendor, name in result.all():
        names[str(model)] = f"{vendor} {name}"
        if int(failure):
            failures.append((str(model), str(sku), int(qty or 0), stored_utc(at)))
        else:
            exposure.append((str(model), str(depot), str(sku), int(qty or 0), stored_utc(at)))
    return by_model(history, exposure, failures, names)


async def diagnose(session: AsyncSession, now: datetime | None = None) -> Diagnosis:
    """The weak spots at `now` (the clock's): the planning snapshot plus the per-model failure query."""
    history = await load(session, now or clock.now())
    return find(history, lead_times(history), await _load_by_model(session, history))


def report(diagnosis: Diagnosis, now: datetime) -> str:
    """The diagnosis as a Markdown report for buyers and reliability engineers."""
    findings, fleet = diagnosis.findings, diagnosis.fleet
    count = {s: sum(f["severity"] == s for f in findings) for s in reversed(SEVERITIES)}
    lines = [
        f"# Spare-parts weak spots — {now:%Y-%m-%d %H:%M} UTC",
        "",
        f"{len(findings)} structural weak spots ({count['high']} high, {count['medium']} medium, "
        f"{count['low']} low): not stock-out warnings, but what makes every shortage likelier or longer.",
        "",
    ]
    if fleet.get("suppliers"):
        top = sorted(fleet["share_units"].items(), key=lambda kv: -kv[1])[:3]
        lines += [
            f"Sourcing: {fleet['units']} installed units of {fleet['skus']} SKUs from {fleet['suppliers']} "
            f"suppliers; HHI {fleet['hhi_units']:.2f} by units, {fleet['hhi_skus']:.2f} by SKUs "
            f"(largest: {', '.join(f'{s} {v:.0%}' for s, v in top)}).",
            "",
        ]
    if findings:
        head = "| severity | kind | SKU | supplier | depots | finding |"
        lines += [head, "|" + "---|" * (head.count("|") - 1)]
        for f in findings:
            lines.append(
                f"| {f['severity']} | {f['kind']} | {f.get('sku') or '—'} | {f.get('supplier') or '—'} | "
                f"{', '.join(f.get('depots') or []) or '—'} | {f['text'].replace('|', '/')} |"
            )
    lines += [
        "",
        f"Single source: high with a lead time ≥ {LONG_LEAD_DAYS:.0f} d. Lead time: CV ≥ {CV_FLAG} "
        f"(high ≥ {CV_HIGH}) or ≥ {SLOW_BY:.0%} slower than the catalogue (high ≥ {SLOW_BY_HIGH:.0%}).",
        f"On time: < {ON_TIME_FLAG:.0%} over ≥ {ON_TIME_MIN_ORDERS} orders (high < {ON_TIME_HIGH:.0%}). "
        f"Concentration: a supplier with ≥ {CONCENTRATION_SHARE:.0%} of units or SKUs; HHI = Σ share².",
        "Failure trend by model: the planning's own Poisson trend test, within one charger model.",
    ]
    return "\n".join(lines) + "\n"
