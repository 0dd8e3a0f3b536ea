"""Physics of a simulated charger: power and energy over simulated time, meter samples, V2X discharge,
grid events, and the per-tick random life of the site (EV arrivals and departures, faults).
"""

from __future__ import annotations

import math

from firmware_stubs.charger.base import ChargerBase
from firmware_stubs.charger.components import GridState
from firmware_stubs.charger.state import Connector, Sample, chance
from firmware_stubs.der import GRID_TRIPS, DerControls
from firmware_stubs.model import AC_PHASE_VOLTAGE, EV, charging_power, dc_voltage, utc_now


class PhysicsMixin(ChargerBase):
    """What flows through the connectors, and what happens to the site between two ticks."""

    __slots__ = ()

    @property
    def der_controls(self) -> DerControls:
        """The DER controls a CSMS set (OCPP 2.1), created by the first DER control message."""
        grid = self._grid_state()
        if grid.der is None:
            grid.der = DerControls()
        return grid.der

    def _grid_state(self) -> GridState:
        if self._grid is None:
            self._grid = GridState()
        return self._grid

    def _advance(self, c: Connector) -> None:
        """Integrate power over simulated time since the last update (30 s sub-steps for the taper)."""
        now_sim = self.env.clock.now()
        elapsed = now_sim - c.last_sim
        c.last_sim = now_sim
        ev = c.ev
        if c.tx is None or ev is None or c.fault:
            c.power_w = c.export_w = 0.0
            return
        if self.max_discharge_w > 0 and ev.discharge_w > 0 and ev.soc > ev.discharge_floor_soc:
            self._discharge(c, ev, elapsed)
            return
        c.export_w = 0.0
        limit = self._limit_w(c, utc_now())
        while elapsed > 0:
            step = min(elapsed, 30.0)
            energy = charging_power(ev, self.max_power_w, limit) * step / 3600.0
            c.meter_wh += energy
            self.energy_wh += energy
            ev.soc = min(100.0, ev.soc + energy / ev.capacity_wh * 100.0)
            elapsed -= step
        c.power_w = charging_power(ev, self.max_power_w, limit)

    def _discharge(self, c: Connector, ev: EV, elapsed: float) -> None:
        """V2X: the EV gives what its owner offers, within the charger's rating and its DER cap, down to the
        EV's floor; there it stops offering and charges again."""
        c.power_w = 0.0
        c.export_w = min(ev.discharge_w, self.discharge_cap_w())
        energy = c.export_w * elapsed / 3600.0
        c.export_wh += energy
        ev.soc = max(ev.discharge_floor_soc, ev.soc - energy / ev.capacity_wh * 100.0)
        if ev.soc <= ev.discharge_floor_soc:
            ev.discharge_w = 0.0

    def discharge_cap_w(self) -> float:
        """What may be discharged now: the rating × the LimitMaxDischarge in effect; 0 while a grid event
        trips the DER function."""
        grid = self._grid
        if grid is None:
            return self.max_discharge_w
        if grid.events:
            return 0.0
        pct = grid.der.max_discharge_pct(utc_now()) if grid.der is not None else None
        return self.max_discharge_w if pct is None else self.max_discharge_w * pct / 100.0

    def grid_event(self, fault: str, *, clear_after: float | None = None) -> None:
        """A grid event at the charger (e.g. OverVoltage): its trip curve stops any discharge and it sends
        NotifyDERAlarm; cleared after ``clear_after`` simulated seconds or by ``end_grid_event``."""
        if fault not in GRID_TRIPS:
            raise ValueError(f"unknown grid event {fault!r}; use one of {sorted(GRID_TRIPS)}")
        events = self._grid_state().events
        if fault not in events:
            self.dialect.der_alarm(self._whole, GRID_TRIPS[fault], fault, ended=False)
        events[fault] = None if clear_after is None else self.env.clock.now() + clear_after
        self._profiles_changed()

    def end_grid_event(self, fault: str) -> None:
        """End a grid event now (no-op if none is in progress): discharge may resume."""
        grid = self._grid
        if grid is not None and fault in grid.events:
            del grid.events[fault]
            self.dialect.der_alarm(self._whole, GRID_TRIPS[fault], fault, ended=True)
            self._profiles_changed()

    def _grid_tick(self, now_sim: float) -> None:
        """Grid events that cleared by themselves; scheduled DER controls that started or ended."""
        grid = self._grid
        if grid is None:
            return
        for fault, clear_at in list(grid.events.items()):
            if clear_at is not None and now_sim >= clear_at:
                self.end_grid_event(fault)
        if grid.der is not None:
            self.dialect.der_tick(self._whole)

    def _sample_interval(self) -> float:
        interval = self.config.get_float("MeterValueSampleInterval", 60.0)
        return interval if interval > 0 else math.inf

    def _sample_periodic(self, now: float) -> None:
        self._sample_due = now + self._sample_interval()
        for c in self.connectors:
            if c.tx is not None:
                self._advance(c)
                self.dialect.tx_periodic(self._whole, c, c.tx)
                self._refresh(c)

    def sample(self, c: Connector, measurands: list[str]) -> list[Sample]:
        """Current meter readings of connector ``c`` for the requested measurands."""
        out: list[Sample] = []
        ev = c.ev
        for measurand in measurands:
            if measurand == "Energy.Active.Import.Register":
                out.append((measurand, round(c.meter_wh, 1), "Wh", None))
            elif measurand == "Power.Active.Import":
                out.append((measurand, round(c.power_w, 1), "W", None))
            elif measurand == "Power.Active.Export":
                out.append((measurand, round(c.export_w, 1), "W", None))
            elif measurand == "Energy.Active.Export.Register":
                out.append((measurand, round(c.export_wh, 1), "Wh", None))
            elif measurand == "Power.Export.Offered":  # the rating; the DER cap shows in Power.Active.Export
                out.append((measurand, round(self.max_discharge_w, 1), "W", None))
            elif (
                measurand == "Power.Offered"
            ):  # what the station offers the EV: its maximum or the profile limit
                limit = self._limit_w(c, utc_now())
                offered = self.max_power_w if limit is None else min(limit, self.max_power_w)
                out.append((measurand, round(offered, 1), "W", None))
            elif measurand == "SoC" and ev is not None:
                out.append((measurand, round(ev.soc, 1), "Percent", None))
            elif measurand in ("Current.Import", "Voltage") and self.dc:
                volts = dc_voltage(ev.soc if ev else 50.0)
                value = c.power_w / volts if measurand == "Current.Import" else volts
                out.append((measurand, round(value, 1), "A" if measurand == "Current.Import" else "V", None))
            elif measurand == "Current.Import":
                amps = round(c.power_w / (3 * AC_PHASE_VOLTAGE), 1)
                out.extend((measurand, amps, "A", phase) for phase in ("L1", "L2", "L3"))
            elif measurand == "Voltage":
                out.extend((measurand, AC_PHASE_VOLTAGE, "V", phase) for phase in ("L1-N", "L2-N", "L3-N"))
        return out

    def _sim_tick(self) -> None:
        """Physics, EV departures, random arrivals/faults, reservation expiry and fault auto-clear."""
        env = self.env
        now_sim = env.clock.now()
        elapsed = now_sim - self._last_tick_sim
        self._last_tick_sim = now_sim
        wall = utc_now()
        for c in self.connectors[1:]:
            ev = c.ev
            if c.tx is not None and ev is not None:
                self._advance(c)
                if ev.soc >= min(ev.target_soc, 100.0):
                    if ev.dwell_s is not None and c.depart_at is None:
                        c.depart_at = now_sim + ev.dwell_s
                    if ev.stop_when_full:
                        self._end_tx(c, "EVFull")
            if c.ev is not None and c.depart_at is not None and now_sim >= c.depart_at:
                self._unplug(c)
            if c.reservation is not None and wall >= c.reservation.expiry:
                res, c.reservation = c.reservation, None
                self.dialect.reservation_ended(self._whole, c, res, "Expired")
            if c.fault_clear_at is not None and now_sim >= c.fault_clear_at:
                self.clear_fault(c.index)
            self._refresh(c)
        self._grid_tick(now_sim)
        self._arrivals(elapsed)
        if env.fault_rate > 0 and self.rng.random() < chance(env.fault_rate, elapsed / 3600.0):
            c = self.rng.choice(self.connectors[1:])
            if self.max_discharge_w > 0 and self.rng.random() < 0.5:  # V2X: half the faults are grid events
                self.grid_event(self.rng.choice(sorted(GRID_TRIPS)), clear_after=600.0)
            elif c.fault is None:
                code = self.rng.choice(self.fault_codes)
                self.inject_fault(
                    c.index, code, vendor_code=f"E{self.rng.randrange(100, 999)}", clear_after=1800.0
                )

    def _arrivals(self, elapsed: float) -> None:
        """Seeded random EV arrivals on free connectors; a swap station replaces them with swaps."""
        env = self.env
        if env.session_rate <= 0:
            return
        for c in self.connectors[1:]:
            if c.status == "Available" and self.rng.random() < chance(env.session_rate, elapsed / 60.0):
                ev = EV.random(self.rng, self.dc)
                if self.max_discharge_w > 0 and self.rng.random() < 0.5:  # half the V2X drivers offer energy
                    ev.discharge_w = self.max_discharge_w
                self._plug(c, self.rng.choice(env.id_tags), ev)
