"""The early warning's back-test over several seeds (README "Back-test"): JSON per run and pooled.

    python -m bench.backtest                      # generated scenarios, seeds 1-5, 365 days
    python -m bench.backtest --seeds 1-3 --days 180
    python -m bench.backtest --scenario bench/scenarios/regional.yaml --seeds 1-5
    python -m bench.backtest --rules model,legacy  # the same histories under the old replenishment rule too

Each run replays the real ops code on a throwaway SQLite database (`ops.backtest.run`); the pooled figures
add the runs' counts up before dividing, so a seed with few stock-outs weighs what its stock-outs weigh.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path
from typing import Any

from ops.backtest import accuracy, generated, read_scenario, run


def _seeds(text: str) -> list[int]:
    if "-" in text:
        a, b = text.split("-", 1)
        return list(range(int(a), int(b) + 1))
    return [int(x) for x in text.split(",")]


def _share(a: float, b: float) -> float | None:
    return round(a / b, 3) if b else None


def pooled(runs: list[dict[str, Any]]) -> dict[str, Any]:
    ep = {
        k: sum(r["episodes"][k] for r in runs) for k in ("systematic", "stationary", "total", "foreseeable")
    }
    out: dict[str, Any] = {"runs": len(runs), "episodes": ep}
    for name in ("model", "naive"):
        warned = {
            k: sum(r[name]["warned"][k] for r in runs) for k in ("systematic", "stationary", "foreseeable")
        }
        strict = sum(r[name]["strict"]["systematic"] for r in runs)
        onsets = {
            k: sum(r[name]["onsets"][k] for r in runs) for k in ("true", "false", "reactive", "censored")
        }
        out[name] = {
            "warned_ahead_systematic": _share(warned["systematic"], ep["systematic"]),
            "warned_ahead_stationary": _share(warned["stationary"], ep["stationary"]),
            "warned_strict_systematic": _share(strict, ep["systematic"]),
            "warned_ahead_foreseeable": _share(warned["foreseeable"], ep["foreseeable"]),
            "false_onset_share": _share(onsets["false"], onsets["true"] + onsets["false"]),
            "onsets": onsets,
        }
    levels = {}
    for lv in ("watch", "warning", "critical"):
        c = {
            k: sum(r["model"]["precision_by_level"][lv]["onsets"][k] for r in runs) for k in ("true", "false")
        }
        levels[lv] = {**c, "precision": _share(c["true"], c["true"] + c["false"])}
    out["model"]["precision_by_level"] = levels
    calib = []
    for i in range(10):
        days = sum(r["calibration"][i]["days"] for r in runs)
        p = sum(r["calibration"][i]["probability_sum"] for r in runs)
        hit = sum(r["calibration"][i]["followed"] for r in runs)
        calib.append(
            {
                "decile": runs[0]["calibration"][i]["decile"],
                "days": days,
                "mean_probability": _share(p, days),
                "observed": _share(hit, days),
                "within_10_points": abs(p - hit) / days <= 0.10 if days else None,
            }
        )
    out["calibration"] = calib
    reserved = sum(r["units"]["reserved"] for r in runs)
    out["fill_rate"] = _share(sum(r["units"]["served"] for r in runs), reserved)
    out["units_consumed_not_used"] = sum(r["units_consumed_not_used"] for r in runs)
    out["stock_held_mean_units"] = round(sum(r["stock_held"]["mean_units"] for r in runs) / len(runs), 1)
    out["stock_held_mean_value"] = round(sum(r["stock_held"]["mean_value"] for r in runs) / len(runs))
    trend_days = sum(r["false_trend"]["days"] for r in runs)
    trend_onsets = sum(r["false_trend"]["onsets"] for r in runs)
    per_year = round(trend_onsets / (trend_days / 365), 3) if trend_days else None
    out["false_trend_onsets_per_part_year"] = per_year
    sums: dict[str, dict[str, list[float]]] = {}
    for r in runs:
        for cls, by_method in r["forecast_accuracy"].items():
            for m in accuracy.METHODS:
                acc = sums.setdefault(cls, {}).setdefault(m, [0.0, 0.0, 0.0, 0.0])
                for j, x in enumerate(by_method[m]["sums"]):
                    acc[j] += x
    out["forecast_accuracy"] = accuracy.summary(sums)
    faults = sum(r["faults"] for r in runs)
    out["tickets_per_fault"] = _share(sum(r["tickets_per_fault"] * r["faults"] for r in runs), faults)
    return out


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scenario", type=Path, help="a scenario file (default: generated from each seed)")
    ap.add_argument("--seeds", default="1-5", help="e.g. 1-5 or 1,4,9")
    ap.add_argument("--days", type=int, default=365)
    ap.add_argument("--rules", default="model", help="replenishment rules to replay: model,legacy")
    ap.add_argument("--runs", action="store_true", help="print each run's figures too")
    args = ap.parse_args()
    rules = args.rules.split(",")
    runs: dict[str, list[dict[str, Any]]] = {r: [] for r in rules}
    started = time.monotonic()
    for seed in _seeds(args.seeds):
        if args.scenario:
            scenario = read_scenario(args.scenario).model_copy(update={"seed": seed, "days": args.days})
        else:
            scenario = generated(seed, args.days)
        for rule in rules:
            runs[rule].append(await run(scenario, rule=rule))
    result: dict[str, Any] = {rule: {"pooled": pooled(r)} for rule, r in runs.items()}
    if "model" in runs and "legacy" in runs:
        m, old = result["model"]["pooled"], result["legacy"]["pooled"]
        result["model_vs_legacy"] = {
            "fill_rate": [m["fill_rate"], old["fill_rate"]],
            "stock_units_ratio": _share(m["stock_held_mean_units"], old["stock_held_mean_units"]),
            "stock_value_ratio": _share(m["stock_held_mean_value"], old["stock_held_mean_value"]),
        }
    result["seconds"] = round(time.monotonic() - started, 1)
    if args.runs:
        for rule, r in runs.items():
            result[rule]["runs"] = r
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
