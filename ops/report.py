"""The supply-risk early warning as a report a supply manager reads (Markdown, plain text)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

_HEAD = (
    "| level | since | depot | SKU | P(stock-out) | available | on order | cover (d) | lead time | why | do |"
)


def supply_report(warnings: list[dict[str, Any]], now: datetime) -> str:
    """`warnings`: stored warnings as `ops.supply_warnings.warning_view` shows them."""
    flagged = [w for w in warnings if w["level"] != "ok"]
    count = {level: sum(w["level"] == level for w in warnings) for level in ("critical", "warning", "watch")}
    lines = [
        f"# Spare-parts supply risk — {now:%Y-%m-%d %H:%M} UTC",
        "",
        f"{len(flagged)} of {len(warnings)} depot / part pairs need attention ({count['critical']} critical, "
        f"{count['warning']} warning, {count['watch']} watch).",
        "",
    ]
    if flagged:
        lines += [_HEAD, "|" + "---|" * (_HEAD.count("|") - 1)]
        for w in flagged:
            f = w["figures"]
            cover = f.get("days_of_cover")
            lines.append(
                f"| {w['level']} | {(w['level_since'] or '')[:10]} | {w['depot']} | {w['sku']} | "
                f"{w['probability']:.0%} | {f.get('available')} | {f.get('on_order')} | "
                f"{'∞' if cover is None else cover} | "
                f"{f.get('lead_time_days', 0):.0f} ± {f.get('lead_time_sd_days', 0):.0f} d | "
                f"{'; '.join(r['text'] for r in w['reasons'])} | "
                f"{'; '.join(a['text'] for a in w['actions']) or '—'} |"
            )
    lines += [
        "",
        "P(stock-out) = chance that a ticket finds no part on the shelf within the part's lead time + σ,",
        "from the forecast demand and the open orders' expected arrival (measured supplier lead times);",
        "cover = available ÷ forecast daily demand; lead time = the preferred supplier's measured lead time.",
    ]
    return "\n".join(lines) + "\n"
