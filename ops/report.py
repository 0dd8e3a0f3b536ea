"""The supply-risk early warning as a report a supply manager reads (Markdown, plain text)."""

from __future__ import annotations

from datetime import datetime

from ops.planning import Risk

_HEAD = "| level | depot | SKU | available | on order | days of cover | stock-out | lead time | trend | why |"


def supply_report(risks: list[Risk], now: datetime) -> str:
    flagged = [r for r in risks if r.level != "ok"]
    count = {level: sum(r.level == level for r in risks) for level in ("critical", "warning", "watch")}
    lines = [
        f"# Spare-parts supply risk — {now:%Y-%m-%d %H:%M} UTC",
        "",
        f"{len(flagged)} of {len(risks)} depot / part pairs need attention ({count['critical']} critical, "
        f"{count['warning']} warning, {count['watch']} watch).",
        "",
    ]
    if flagged:
        lines += [_HEAD, "|" + "---|" * (_HEAD.count("|") - 1)]
        for r in flagged:
            f = r.figures
            cover = f["days_of_cover"]
            trend = "—" if f["trend"] is None else f"{f['trend']}×"
            lines.append(
                f"| {r.level} | {r.depot} | {r.sku} | {f['available']} | {f['on_order']} | "
                f"{'∞' if cover is None else cover} | {f['stockout_date'] or '—'} | "
                f"{f['lead_time_days']:.0f} ± {f['lead_time_sd_days']:.0f} d | "
                f"{trend} | "
                f"{'; '.join(x['text'] for x in r.reasons)} |"
            )
    lines += [
        "",
        "Days of cover = available ÷ forecast daily demand; stock-out = today + days of cover;",
        "trend = recent failure rate ÷ baseline (catalogue rate blended with older history);",
        "reorder point = demand over the lead time + z · σ(daily demand) · √lead time.",
    ]
    return "\n".join(lines) + "\n"
