"""Is the model's demand forecast the right one? Its error on the replayed history against the standard
intermittent-demand methods, per class of part (shared/EARLY-WARNING.md: "keep whichever back-tests better").

- **SBA** (Croston 1972 with the Syntetos–Boylan 2005 bias correction): smooths the size of nonzero demands
  and the interval between them (α); forecast (1 − α/2) · size / interval per day.
- **TSB** (Teunter–Syntetos–Babai 2011): smooths the size (α) and the probability of a demand each day (β),
  so the forecast decays while nothing happens (an obsolescent part) instead of waiting for the next demand.
- **model**: planning's daily demand forecast that day (gamma–Poisson over the installed base, tested trend).

Each method forecasts, at the end of every day after a warm-up, the demand of the next H days (H = L + σ_L of
the part, the protection interval the warning covers); the error is against the failures that came. Both
smoothers start from the warm-up's own mean (they know no catalogue and no installed base; that is the
comparison). A part/depot is *intermittent* when its average interval between demands exceeds 1.32 days
(Syntetos–Boylan), else *frequent*.
"""

from __future__ import annotations

from typing import Any

ALPHA = 0.1
BETA = 0.1
WARM_UP_DAYS = 60
ADI_CUTOFF = 1.32
METHODS = ("model", "sba", "tsb")


def sba(failed: list[int], warm: int = WARM_UP_DAYS, alpha: float = ALPHA) -> list[float]:
    """Daily forecasts made at the end of each day from `warm` on (index i: after day i)."""
    first = failed[:warm]
    hits = [q for q in first if q > 0]
    size = sum(hits) / len(hits) if hits else 1.0
    interval = warm / len(hits) if hits else float(warm + 1)
    last = max((i for i, q in enumerate(first) if q > 0), default=-1)
    since, out = len(first) - 1 - last, []
    for i, q in enumerate(failed):
        if i < warm:
            continue
        since += 1
        if q > 0:
            size += alpha * (q - size)
            interval += alpha * (since - interval)
            since = 0
        out.append((1 - alpha / 2) * size / interval)
    return out


def tsb(failed: list[int], warm: int = WARM_UP_DAYS, alpha: float = ALPHA, beta: float = BETA) -> list[float]:
    first = failed[:warm]
    hits = [q for q in first if q > 0]
    size = sum(hits) / len(hits) if hits else 1.0
    prob = len(hits) / warm if hits else 1.0 / (warm + 1)
    out = []
    for i, q in enumerate(failed):
        if i < warm:
            continue
        prob += beta * ((q > 0) - prob)
        if q > 0:
            size += alpha * (q - size)
        out.append(prob * size)
    return out


def pair_errors(failed: list[int], model_per_day: list[float], h: int) -> tuple[str, dict[str, list[float]]]:
    """(class, method → [Σ|error|, Σ error, forecasts, Σ actual]) of one depot/SKU's H-day forecasts."""
    n = len(failed)
    demand_days = sum(q > 0 for q in failed)
    cls = "intermittent" if demand_days == 0 or n / demand_days > ADI_CUTOFF else "frequent"
    per_day = {"model": model_per_day[WARM_UP_DAYS:], "sba": sba(failed), "tsb": tsb(failed)}
    sums = {m: [0.0, 0.0, 0.0, 0.0] for m in METHODS}
    for k in range(n - WARM_UP_DAYS - h):
        i = WARM_UP_DAYS + k
        actual = sum(failed[i + 1 : i + 1 + h])
        for m in METHODS:
            err = per_day[m][k] * h - actual
            s = sums[m]
            s[0] += abs(err)
            s[1] += err
            s[2] += 1
            s[3] += actual
    return cls, sums


def summary(totals: dict[str, dict[str, list[float]]]) -> dict[str, Any]:
    """Per class and method: mean absolute and mean error of the H-day forecast, and MAE over mean demand."""
    out: dict[str, Any] = {}
    for cls, by_method in totals.items():
        out[cls] = {}
        for m, (abs_sum, err_sum, count, actual) in by_method.items():
            out[cls][m] = {
                "forecasts": int(count),
                "mae": round(abs_sum / count, 4) if count else None,
                "bias": round(err_sum / count, 4) if count else None,
                "relative_mae": round(abs_sum / actual, 3) if actual else None,
                "sums": [round(abs_sum, 3), round(err_sum, 3), int(count), round(actual, 3)],
            }
        ranked = [m for m in METHODS if out[cls][m]["mae"] is not None]
        out[cls]["best"] = min(ranked, key=lambda m: out[cls][m]["mae"]) if ranked else None
    return out
