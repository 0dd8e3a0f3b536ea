"""How a back-test scores the early warning (the definitions of shared/EARLY-WARNING.md; README "Back-test").

Per depot × SKU, with L, σ_L the part's catalogue lead time and deviation and H = L + σ_L:
- **episode**: a day whose end finds available < 0 after a day that did not; it lasts while available < 0;
- **warned ≥ L ahead**: the first day at ≥ `warning` among the H days before the episode lies ≥ L days before
  it; *strict*: ≥ `warning` on every one of the L days before;
- **onset**: the first day of a run at ≥ a level; *reactive* when an episode is under way, *censored* when its
  horizon runs past the end, else **false** when no episode starts within (onset, onset + H];
- **systematic**: the episode starts while the pair's demand or supply is changed by design (`changes`:
  a trend from its day on, a supplier change or growth until the orders placed in it have arrived);
  *foreseeable* when that change began at least L before the episode (the only ones a warning ≥ L ahead
  could catch);
- **calibration**: every day's probability (not in an episode, horizon inside the history) by decile against
  the share of those days followed by an episode start within H;
- **naive rule**: available ÷ forecast daily demand < L, scored the same way;
- **forecast accuracy**: the model's H-day demand forecast against SBA and TSB (`ops.backtest.accuracy`).
"""

from __future__ import annotations

import math
from typing import Any

from ops.backtest import accuracy
from ops.backtest.world import Day, Pair, Recording
from ops.planning.risk import LEVELS


def _horizon(rec: Recording, sku: str) -> tuple[int, int]:
    part = rec.parts[sku]
    lead = max(1, round(part.lead_time_days))
    return lead, max(lead, math.ceil(part.lead_time_days + part.lead_time_sd_days))


def changes(rec: Recording) -> dict[Pair, list[tuple[int, int]]]:
    """Per depot/SKU, the day spans in which its demand or supply is changed by design: a trend from its
    first day on, a supplier's lead-time change from its first day until orders placed in it have had their
    changed lead time (end + that lead time + its σ), growth from its day until orders placed on it have
    arrived (H later: the installed base moves at once, so after that the depot runs at its new, known
    rate and its stock-outs are as stationary as anyone's)."""
    s = rec.scenario
    spans: dict[Pair, list[tuple[int, int]]] = {}
    for pair in rec.days:
        depot, sku = pair
        part = rec.parts[sku]
        found = [
            (t.start_day, s.days)
            for t in s.trends
            if t.sku == sku and (t.depots is None or depot in t.depots)
        ]
        found += [
            (c.start_day, c.end_day + math.ceil(c.lead_time_days + c.lead_time_sd_days))
            for c in s.supplier_changes
            if c.supplier in part.suppliers and (c.skus is None or sku in c.skus)
        ]
        found += [(g.day, g.day + _horizon(rec, sku)[1]) for g in s.growth if g.depot == depot]
        if found:
            spans[pair] = found
    return spans


def systematic(spans: dict[Pair, list[tuple[int, int]]], pair: Pair, day: int) -> bool:
    return any(a <= day <= b for a, b in spans.get(pair, ()))


def foreseeable(spans: dict[Pair, list[tuple[int, int]]], pair: Pair, day: int, lead: int) -> bool:
    """A systematic episode whose change had begun at least a lead time before it: only then can any
    warning built on what happened so far be ≥ L ahead (a stock-out 35 days into a bad batch of a part with a
    56-day lead time cannot)."""
    return any(a <= day <= b and day - a >= lead for a, b in spans.get(pair, ()))


def episodes(days: list[Day]) -> list[int]:
    starts, short = [], False
    for i, d in enumerate(days):
        if d.available < 0 and not short:
            starts.append(i)
        short = d.available < 0
    return starts


def onsets(flags: list[bool]) -> list[int]:
    return [i for i, on in enumerate(flags) if on and (i == 0 or not flags[i - 1])]


def _classify(onset_days: list[int], starts: list[int], days: list[Day], h: int) -> dict[str, int]:
    out = {"true": 0, "false": 0, "reactive": 0, "censored": 0}
    for o in onset_days:
        if days[o].available < 0:
            out["reactive"] += 1
        elif any(o < e <= o + h for e in starts):
            out["true"] += 1
        elif o + h >= len(days):
            out["censored"] += 1
        else:
            out["false"] += 1
    return out


def _warned(flags: list[bool], start: int, lead: int, h: int) -> tuple[bool, bool]:
    window = [i for i in range(max(0, start - h), start) if flags[i]]
    ahead = bool(window) and window[0] <= start - lead
    strict = start >= lead and all(flags[i] for i in range(start - lead, start))
    return ahead, strict


def _share(a: float, b: float) -> float | None:
    return round(a / b, 3) if b else None


def score(rec: Recording, fill: dict[str, Any], tickets: int) -> dict[str, Any]:
    spans = changes(rec)
    rule_names = ("model", "naive")
    tallies: dict[str, dict[str, Any]] = {
        name: {"warned": {"systematic": 0, "stationary": 0, "foreseeable": 0},
               "strict": {"systematic": 0, "stationary": 0},
               "onsets": {"true": 0, "false": 0, "reactive": 0, "censored": 0}}
        for name in rule_names
    }  # fmt: skip
    per_level = {lv: {"true": 0, "false": 0, "reactive": 0, "censored": 0} for lv in LEVELS[1:]}
    counts = {"systematic": 0, "stationary": 0}
    foreseen = 0  # systematic episodes whose change began ≥ L before them
    calib: list[list[float]] = [[0, 0.0, 0] for _ in range(10)]  # days, Σp, followed by an episode
    held_units = held_value = 0.0
    trend_days = [0, 0, 0]  # on parts with no trend by design: days flagged, days, onsets of a flag
    n_days = max(len(d) for d in rec.days.values()) if rec.days else 0
    errors: dict[str, dict[str, list[float]]] = {}  # class → method → sums (ops.backtest.accuracy)
    for pair, days in rec.days.items():
        sku = pair[1]
        lead, h = _horizon(rec, sku)
        starts = episodes(days)
        for e in starts:
            counts["systematic" if systematic(spans, pair, e) else "stationary"] += 1
            foreseen += foreseeable(spans, pair, e, lead)
        flags = {
            "model": [LEVELS.index(d.level) >= LEVELS.index("warning") for d in days],
            "naive": [d.demand_per_day > 0 and d.available / d.demand_per_day < lead for d in days],
        }
        for name in rule_names:
            for e in starts:
                cause = "systematic" if systematic(spans, pair, e) else "stationary"
                ahead, strict = _warned(flags[name], e, lead, h)
                tallies[name]["warned"][cause] += ahead
                tallies[name]["strict"][cause] += strict
                tallies[name]["warned"]["foreseeable"] += ahead and foreseeable(spans, pair, e, lead)
            for k, v in _classify(onsets(flags[name]), starts, days, h).items():
                tallies[name]["onsets"][k] += v
        for lv in LEVELS[1:]:
            at = [LEVELS.index(d.level) >= LEVELS.index(lv) for d in days]
            for k, v in _classify(onsets(at), starts, days, h).items():
                per_level[lv][k] += v
        for i, d in enumerate(days):
            if d.available < 0 or i + h >= len(days):
                continue
            b = calib[min(9, int(d.probability * 10))]
            b[0] += 1
            b[1] += d.probability
            b[2] += any(i < e <= i + h for e in starts)
        if pair not in spans or all(t.sku != sku for t in rec.scenario.trends):
            trend_days[0] += sum(d.trend for d in days)
            trend_days[1] += len(days)
            trend_days[2] += len(onsets([d.trend for d in days]))
        cls, sums = accuracy.pair_errors([d.failed for d in days], [d.demand_per_day for d in days], h)
        for method, figures in sums.items():
            acc = errors.setdefault(cls, {}).setdefault(method, [0.0, 0.0, 0.0, 0.0])
            for j, x in enumerate(figures):
                acc[j] += x
        unit_cost = rec.parts[sku].unit_cost or 0.0
        held_units += sum(d.on_hand for d in days) / max(1, len(days))
        held_value += unit_cost * sum(d.on_hand for d in days) / max(1, len(days))
    out: dict[str, Any] = {"scenario": rec.scenario.name, "seed": rec.scenario.seed, "days": n_days}
    out["episodes"] = {
        **counts,
        "total": counts["systematic"] + counts["stationary"],
        "foreseeable": foreseen,
    }
    for name in rule_names:
        t = tallies[name]
        o = t["onsets"]
        judged = o["true"] + o["false"]
        out[name] = {
            "warned_ahead_systematic": _share(t["warned"]["systematic"], counts["systematic"]),
            "warned_ahead_stationary": _share(t["warned"]["stationary"], counts["stationary"]),
            "warned_strict_systematic": _share(t["strict"]["systematic"], counts["systematic"]),
            "warned_ahead_foreseeable": _share(t["warned"]["foreseeable"], foreseen),
            "false_onset_share": _share(o["false"], judged),
            "onsets": o,
            "warned": t["warned"],
            "strict": t["strict"],
        }
    out["model"]["precision_by_level"] = {
        lv: {"onsets": v, "precision": _share(v["true"], v["true"] + v["false"])}
        for lv, v in per_level.items()
    }
    out["calibration"] = [
        {
            "decile": f"{i / 10:.1f}-{(i + 1) / 10:.1f}",
            "days": int(b[0]),
            "probability_sum": round(b[1], 4),
            "followed": int(b[2]),
            "mean_probability": round(b[1] / b[0], 3) if b[0] else None,
            "observed": round(b[2] / b[0], 3) if b[0] else None,
            "within_10_points": abs(b[1] / b[0] - b[2] / b[0]) <= 0.10 if b[0] else None,
        }
        for i, b in enumerate(calib)
    ]
    out["fill_rate"] = round(fill["served"] / fill["reserved"], 4) if fill["reserved"] else None
    out["units"] = {"reserved": fill["reserved"], "served": fill["served"]}
    consumed: dict[str, int] = fill["consumed"]
    out["units_consumed_not_used"] = sum(max(0, n - rec.fitted.get(sku, 0)) for sku, n in consumed.items())
    out["stock_held"] = {"mean_units": round(held_units, 1), "mean_value": round(held_value)}
    out["false_trend"] = {
        "share_of_days": _share(trend_days[0], trend_days[1]),
        "onsets_per_part_year": round(trend_days[2] / (trend_days[1] / 365), 3) if trend_days[1] else None,
        "onsets": trend_days[2],
        "days": trend_days[1],
    }
    out["forecast_accuracy"] = accuracy.summary(errors)
    out["faults"] = rec.failures
    out["tickets_per_fault"] = round(tickets / rec.failures, 3) if rec.failures else None
    return out
