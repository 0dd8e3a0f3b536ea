"""Sharing a power budget among units (chargers, sessions) fairly: one rule for charging and discharging."""

from __future__ import annotations


def water_fill(budget_w: float, units: dict[str, tuple[int, float]]) -> dict[str, float]:
    """Per-unit share of `budget_w`: unit → (weight, cap per weight). Every unit gets the same level,
    except those capped below it; Σ weight × share ≤ budget."""
    left = dict(units)
    remaining = max(0.0, budget_w)
    shares: dict[str, float] = {}
    while left:
        level = remaining / sum(w for w, _ in left.values())
        capped = {unit for unit, (_, cap) in left.items() if cap <= level}
        if not capped:
            shares.update(dict.fromkeys(left, level))
            break
        for unit in capped:
            weight, cap = left.pop(unit)
            shares[unit] = cap
            remaining -= weight * cap
    return shares
