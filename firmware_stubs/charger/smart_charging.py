"""Smart charging: installed charging profiles, the limit they set at any moment, the composite schedule."""

from __future__ import annotations

import datetime as dt

from firmware_stubs.charger.base import ChargerBase
from firmware_stubs.charger.state import Connector
from firmware_stubs.model import AC_PHASE_VOLTAGE, ChargingProfile, Period, utc_now


class SmartChargingMixin(ChargerBase):
    """Charging profiles (max / external / tx / tx default, stacked) and the limit in watts they give."""

    __slots__ = ()

    @property
    def charging_profiles(self) -> list[ChargingProfile]:
        return list(self._profiles or ())

    def set_profile(self, profile: ChargingProfile) -> bool:
        """Install a profile (replacing same id or same purpose/stack/connector); False if not applicable."""
        if not 0 <= profile.connector < len(self.connectors):
            return False
        if profile.purpose == "max" and profile.connector != 0:
            return False
        if profile.purpose == "tx":
            tx = self.connectors[profile.connector].tx
            if tx is None or (profile.transaction_id is not None and not tx.matches(profile.transaction_id)):
                return False
        profiles = [
            p
            for p in self._profiles or ()
            if p.id != profile.id
            and (p.stack_level, p.purpose, p.connector)
            != (profile.stack_level, profile.purpose, profile.connector)
        ]
        profiles.append(profile)
        self._profiles = profiles
        self._profiles_changed()
        return True

    def clear_profiles(
        self, profile_id: int | None, connector: int | None, purpose: str | None, stack_level: int | None
    ) -> int:
        """Remove matching profiles; returns how many were removed."""
        before = self._profiles or []
        kept = [
            p
            for p in before
            if not (
                (profile_id is None or p.id == profile_id)
                and (connector is None or p.connector == connector)
                and (purpose is None or p.purpose == purpose)
                and (stack_level is None or p.stack_level == stack_level)
            )
        ]
        self._profiles = kept or None
        if len(kept) != len(before):
            self._profiles_changed()
        return len(before) - len(kept)

    def _profiles_changed(self) -> None:
        for c in self.connectors[1:]:
            if c.tx is not None:
                self._advance(c)
                self._refresh(c)

    def _to_watts(self, unit: str, period: Period) -> float:
        if unit == "W":
            return period.limit
        if self.dc:
            return period.limit * 400.0
        return period.limit * AC_PHASE_VOLTAGE * (period.phases or 3)

    def _limit_w(self, c: Connector, when: dt.datetime) -> float | None:
        """Effective profile limit: min(station max, external, tx profile or else tx default)."""
        profiles = self._profiles
        if not profiles:
            return None
        tx = c.tx
        tx_start = tx.started if tx is not None else None

        def best(purpose: str, connectors: tuple[int, ...]) -> float | None:
            ranked = sorted(
                (p for p in profiles if p.purpose == purpose and p.connector in connectors),
                key=lambda p: -p.stack_level,
            )
            for p in ranked:
                if purpose == "tx" and (
                    tx is None or (p.transaction_id and not tx.matches(p.transaction_id))
                ):
                    continue
                period = p.period_at(when, tx_start)
                if period is not None:
                    return self._to_watts(p.unit, period)
            return None

        limits = [best("max", (0,)), best("external", (0, c.index))]
        own = best("tx", (c.index,)) if tx is not None and c.index else None
        if own is None and c.index:
            own = best("txdefault", (c.index,))
            if own is None:
                own = best("txdefault", (0,))
        limits.append(own)
        present = [limit for limit in limits if limit is not None]
        return min(present) if present else None

    def composite_schedule(
        self, connector: int, duration: int, unit: str
    ) -> tuple[dt.datetime, list[Period]]:
        """Limit over the next ``duration`` s in ``unit`` ('W'/'A'), merged into periods."""
        now = utc_now().replace(microsecond=0)
        horizon = dt.timedelta(seconds=duration)
        c = self.connectors[connector]
        tx_start = c.tx.started if c.tx is not None else None
        points = {now}
        for p in self._profiles or ():
            if p.connector in (0, connector):
                points.update(b for b in p.boundaries(now, horizon, tx_start) if now < b < now + horizon)
        periods: list[Period] = []
        for when in sorted(points):
            watts = self._limit_w(c, when)
            watts = self.max_power_w if watts is None else min(watts, self.max_power_w)
            if unit == "A":
                value = watts / (400.0 if self.dc else AC_PHASE_VOLTAGE * 3)
            else:
                value = watts
            value = round(value, 1)
            if not periods or periods[-1].limit != value:
                periods.append(Period(int((when - now).total_seconds()), value, None if self.dc else 3))
        return now, periods
