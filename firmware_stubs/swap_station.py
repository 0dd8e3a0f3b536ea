"""Simulated battery-swap station: slots holding packs that charge while docked and age with every cycle.

Wire contract (what a central system can rely on):

* OCPP 2.1 (subprotocol ``ocpp2.1``), part 2 section S. Local swap: the driver presents an idToken ->
  ``Authorize`` -> ``BatterySwap`` eventType ``BatteryIn`` (the vehicle's depleted pack, docked in a free
  slot) -> ``BatterySwap`` ``BatteryOut`` (a charged pack leaves its slot) with the same ``requestId``.
  When the driver does not take the charged pack within ``out_timeout`` simulated seconds the station
  sends ``BatteryOutTimeout`` instead (same requestId, that pack's data) and the pack stays in its slot.
  Remote: ``RequestBatterySwap`` (requestId, idToken) is answered Accepted and followed by the same
  BatteryIn / BatteryOut sequence with that requestId and idToken (no Authorize: the CSMS authorized it),
  or Rejected when no free slot or no charged pack (SoC >= ``min_out_soc``) is available.
* ``batteryData`` has one entry per pack: ``evseId`` (the slot), ``serialNumber``, ``soC``, ``soH``,
  ``productionDate`` and ``vendorInfo``, a compact JSON string (<= 500 chars)
  ``{"cycles": int, "cellTempMin": float, "cellTempMax": float, "cellVoltMin": float, "cellVoltMax": float}``
  (cell temperatures in degrees C, cell voltages in V). Payloads are built here as plain dicts because
  ``ocpp`` 2.1.0's snake->camel conversion writes ``SoC`` and ``soh`` where the schema says ``soC``/``soH``.
* Without 2.1 (subprotocol ``ocpp2.0.1``) the same BatterySwapRequest payload travels as ``DataTransfer``
  with vendorId ``org.chargeops.swap``, messageId ``BatterySwap`` and ``data`` = the payload as a JSON
  string (there is no 2.0.1 RequestBatterySwap). Either way the messages are queued while offline.
* Each slot is EVSE N with connector 1. Charging a docked pack is an ordinary TransactionEvent stream
  (idToken type ``NoAuthorization``, Started/Updated/Ended with SoC meter values), ended when the pack is
  full (StoppedByEV) or taken out (EVDisconnected).
* Slot faults (``inject_fault(slot, "SlotLock" | "SlotActuator")``): ``NotifyEvent`` trigger Alerting,
  component ``SlotLock`` / ``SlotActuator`` with ``evse.id`` = slot, variable ``Problem``, actualValue
  "true", and "false" with ``cleared`` when fixed; plus StatusNotification Faulted for that slot. A
  faulted or unavailable slot takes part in no swap.
"""

from __future__ import annotations

import datetime as dt
import random
from dataclasses import dataclass
from typing import Any

import orjson

from firmware_stubs.charger import Connector, SimEnvironment, SimulatedCharger, chance
from firmware_stubs.model import EV, iso

Payload = dict[str, Any]
SLOT_FAULTS = ("SlotLock", "SlotActuator")
_EPOCH = dt.datetime(2020, 1, 1, tzinfo=dt.UTC)  # production dates derive from the seed, not the clock


@dataclass(slots=True)
class Pack(EV):
    """A swappable pack. The EV fields drive the charging physics; the rest is what the pack reports."""

    serial: str = ""
    soh: float = 100.0  # % of the original capacity
    cycles: int = 0
    fade: float = 0.01  # SoH points lost per cycle
    temp_spread: float = 2.0  # degrees C between the coolest and the hottest cell
    volt_spread: float = 0.01  # V between the weakest and the strongest cell
    production_date: dt.datetime | None = None

    @classmethod
    def new(cls, serial: str, rng: random.Random) -> Pack:
        """A used pack from the operator's fleet: health consistent with its cycle count."""
        cycles = rng.randrange(0, 800)
        fade = rng.uniform(0.005, 0.02)
        return cls(
            capacity_wh=rng.choice((50_000.0, 70_000.0, 100_000.0)),
            soc=round(rng.uniform(40.0, 100.0), 1),
            max_power_w=80_000.0,
            stop_when_full=True,
            serial=serial,
            soh=max(60.0, 100.0 - cycles * fade - rng.uniform(0.0, 2.0)),
            cycles=cycles,
            fade=fade,
            temp_spread=rng.uniform(1.0, 3.0),
            volt_spread=rng.uniform(0.005, 0.02),
            production_date=_EPOCH + dt.timedelta(days=rng.randrange(0, 1500)),
        )

    def drive(self, rng: random.Random) -> None:
        """A round trip in a vehicle: discharged, one more cycle, a little less health."""
        self.soc = round(rng.uniform(5.0, 35.0), 1)
        self.cycles += 1
        self.soh = max(0.0, self.soh - self.fade)

    def battery_data(self, slot: int, load: float) -> Payload:
        """The BatteryDataType entry; ``load`` (0..1, share of the slot's power) warms the cells."""
        cell_volt = 3.0 + 1.2 * self.soc / 100.0  # open-circuit voltage of an average cell
        cell_temp = 22.0 + 13.0 * load
        info = {
            "cycles": self.cycles,
            "cellTempMin": round(cell_temp, 1),
            "cellTempMax": round(cell_temp + self.temp_spread, 1),
            "cellVoltMin": round(cell_volt - self.volt_spread / 2, 3),
            "cellVoltMax": round(cell_volt + self.volt_spread / 2, 3),
        }
        data: Payload = {
            "evseId": slot,
            "serialNumber": self.serial[:50],
            "soC": round(self.soc, 1),
            "soH": round(self.soh, 2),
            "vendorInfo": orjson.dumps(info).decode(),
        }
        if self.production_date is not None:
            data["productionDate"] = iso(self.production_date)
        return data


def _usable(slot: Connector) -> bool:
    return slot.status not in ("Faulted", "Unavailable")


class Swap:
    """One swap in progress; its slots are reserved until it ends."""

    __slots__ = ("deadline", "docked", "id_token", "pack", "request_id", "slot_in", "slot_out", "take")

    def __init__(
        self,
        request_id: int,
        id_token: Payload,
        pack: Pack,
        slots: tuple[int, int],
        take: bool,
        deadline: float,
    ) -> None:
        self.request_id = request_id
        self.id_token = id_token
        self.pack = pack
        self.slot_in, self.slot_out = slots
        self.take = take
        self.deadline = deadline  # simulated time the driver gives up (authorizing) or leaves (offered)
        self.docked = False


class SwapStation(SimulatedCharger):
    """A battery-swap station speaking OCPP 2.1, or 2.0.1 with the DataTransfer fallback.

    ``packs`` packs belong to the station's pool: ``docked`` of them start in slots 1.., the others are
    out in vehicles. ``swap_rate`` random swaps per simulated hour use random drivers of ``env.id_tags``;
    ``timeout_rate`` of random and remote swaps end in BatteryOutTimeout. Random faults (``env.fault_rate``)
    are slot faults.
    """

    fault_codes = SLOT_FAULTS
    __slots__ = (
        "_swaps",
        "min_out_soc",
        "out_timeout",
        "out_timeouts",
        "swap_rate",
        "swaps_completed",
        "timeout_rate",
        "vehicle_packs",
    )

    def __init__(
        self,
        station_id: str,
        csms_url: str,
        *,
        protocol: str = "ocpp2.1",
        password: str | None = None,
        slots: int = 8,
        packs: int | None = None,
        docked: int | None = None,
        slot_power_w: float = 60_000.0,
        swap_rate: float = 0.0,
        timeout_rate: float = 0.0,
        out_timeout: float = 120.0,
        min_out_soc: float = 80.0,
        rng: random.Random | None = None,
        env: SimEnvironment | None = None,
    ) -> None:
        if protocol not in ("ocpp2.1", "ocpp2.0.1"):
            raise ValueError("a swap station speaks ocpp2.1 or ocpp2.0.1 (DataTransfer fallback)")
        packs = 2 * slots if packs is None else packs
        docked = slots - 1 if docked is None else docked
        if not 0 <= docked < slots < packs:
            raise ValueError("need 0 <= docked < slots < packs: a free slot and packs out in vehicles")
        super().__init__(
            station_id,
            csms_url,
            protocol=protocol,
            password=password,
            connectors=slots,
            max_power_w=slot_power_w,
            dc=True,
            rng=rng,
            env=env,
            model="SimSwapStation",
        )
        self.swap_rate = swap_rate
        self.timeout_rate = timeout_rate
        self.out_timeout = out_timeout
        self.min_out_soc = min_out_soc
        self.swaps_completed = self.out_timeouts = 0
        self._swaps: list[Swap] = []
        pool = [Pack.new(f"{station_id}-P{n:03d}", self.rng) for n in range(packs)]
        for c, pack in zip(self.connectors[1:], pool[:docked], strict=False):
            c.ev = pack
        self.vehicle_packs = pool[docked:]

    # ------------------------------------------------------------------ observable state
    def pack(self, slot: int) -> Pack | None:
        """The pack docked in ``slot`` (None when empty)."""
        ev = self._connector(slot).ev
        return ev if isinstance(ev, Pack) else None

    @property
    def serials(self) -> list[str]:
        """Every pack of the station's pool (docked or in a vehicle), e.g. to register them as owned."""
        docked = [p.serial for p in map(self.pack, range(1, len(self.connectors))) if p is not None]
        return docked + [p.serial for p in self.vehicle_packs]

    # ------------------------------------------------------------------ driver and CSMS actions
    async def swap(
        self,
        id_token: str,
        serial_in: str | None = None,
        *,
        soc: float | None = None,
        soh: float | None = None,
        temp_spread: float | None = None,
        take: bool = True,
    ) -> int | None:
        """A driver presents ``id_token`` and swaps. The vehicle brings pack ``serial_in`` (a random pool
        pack if None; a serial the pool does not know is a foreign pack); ``soc``/``soh``/``temp_spread``
        override what that pack reports from now on. ``take=False``: the driver leaves the charged pack,
        so BatteryOutTimeout follows. Returns the requestId, or None when the swap cannot start (station
        not accepted, no free slot or no charged pack)."""
        return self._local_swap(id_token, serial_in, soc=soc, soh=soh, temp_spread=temp_spread, take=take)

    def request_swap(self, request_id: int, id_token: Payload) -> bool:
        """RequestBatterySwap: False (Rejected) when no swap is possible now, else the swap runs."""
        slots = self._plan()
        if slots is None:
            return False
        sw = Swap(request_id, id_token, self._vehicle_pack(None), slots, self._takes(), self.env.clock.now())
        self._swaps.append(sw)
        self._battery_in(sw)
        return True

    # ------------------------------------------------------------------ the swap sequence
    def _local_swap(
        self,
        tag: str,
        serial_in: str | None,
        *,
        soc: float | None = None,
        soh: float | None = None,
        temp_spread: float | None = None,
        take: bool,
    ) -> int | None:
        if serial_in is not None and serial_in in self.serials and self._in_vehicle(serial_in) is None:
            raise ValueError(f"pack {serial_in} is docked in {self.id}, not in a vehicle")
        slots = self._plan() if self.accepted else None
        if slots is None:
            self.log.info("swap for %s impossible now (offline, no free slot or no charged pack)", tag)
            return None
        pack = self._vehicle_pack(serial_in)
        if soc is not None:
            pack.soc = soc
        if soh is not None:
            pack.soh = soh
        if temp_spread is not None:
            pack.temp_spread = temp_spread
        token = {"idToken": tag[:36], "type": "ISO14443"}
        deadline = self.env.clock.now() + self.out_timeout
        sw = Swap(self.rng.randrange(1, 2**31), token, pack, slots, take, deadline)
        self._swaps.append(sw)
        self.dialect.authorize(self, self.connectors[sw.slot_in], tag)
        return sw.request_id

    def _takes(self) -> bool:
        return not (self.timeout_rate > 0 and self.rng.random() < self.timeout_rate)

    def _plan(self) -> tuple[int, int] | None:
        """(free slot for the incoming pack, slot of the fullest charged pack), or None."""
        reserved = {s for sw in self._swaps for s in (sw.slot_in, sw.slot_out)}
        usable = [c for c in self.connectors[1:] if c.index not in reserved and _usable(c)]
        free = next((c.index for c in usable if c.ev is None), None)
        soc, full = max(((c.ev.soc, c.index) for c in usable if c.ev is not None), default=(0.0, 0))
        if free is None or soc < self.min_out_soc:
            return None
        return free, full

    def _in_vehicle(self, serial: str) -> Pack | None:
        return next((p for p in self.vehicle_packs if p.serial == serial), None)

    def _vehicle_pack(self, serial: str | None) -> Pack:
        """The pack the arriving vehicle brings, back from a trip."""
        if serial is None:
            pack = self.vehicle_packs.pop(self.rng.randrange(len(self.vehicle_packs)))
        else:
            owned = self._in_vehicle(serial)
            if owned is not None:
                self.vehicle_packs.remove(owned)
            pack = owned or Pack.new(serial, self.rng)
        pack.drive(self.rng)
        return pack

    def authorized(self, c: Connector, tag: str, status: str) -> None:
        """Authorize result: the base class caches it (no slot session waits for a tag); an accepted
        driver's pack goes in, a refused driver leaves with it."""
        super().authorized(c, tag, status)
        sw = next(
            (
                s
                for s in self._swaps
                if s.slot_in == c.index and not s.docked and s.id_token["idToken"] == tag
            ),
            None,
        )
        if sw is None:
            return
        if status == "Accepted":
            self._battery_in(sw)
        else:
            self._abandon(sw, f"id token {tag} not accepted ({status})")

    def _abandon(self, sw: Swap, why: str) -> None:
        """The swap ends before BatteryIn: the driver leaves with their pack."""
        self.log.info("swap %d abandoned: %s", sw.request_id, why)
        self._swaps.remove(sw)
        self.vehicle_packs.append(sw.pack)

    def _battery_in(self, sw: Swap) -> None:
        """The vehicle's pack goes into the free slot (it starts charging at the next tick)."""
        slot_in, slot_out = self.connectors[sw.slot_in], self.connectors[sw.slot_out]
        if not (_usable(slot_in) and _usable(slot_out)):
            self._abandon(sw, "slot faulted or unavailable meanwhile")
            return
        sw.docked = True
        self._report("BatteryIn", sw, sw.pack.battery_data(sw.slot_in, load=0.5))
        self._plug(slot_in, None, sw.pack)
        if sw.take:
            self._battery_out(sw, "BatteryOut")
        else:
            sw.deadline = self.env.clock.now() + self.out_timeout

    def _battery_out(self, sw: Swap, event: str) -> None:
        """BatteryOut: the charged pack leaves with the driver. BatteryOutTimeout: it stays docked."""
        c = self.connectors[sw.slot_out]
        pack = self.pack(sw.slot_out)
        assert pack is not None, "an offered slot keeps its pack"
        self._advance(c)
        self._report(event, sw, pack.battery_data(c.index, load=c.power_w / self.max_power_w))
        self._swaps.remove(sw)
        if event == "BatteryOut":
            self.swaps_completed += 1
            self._unplug(c)
            self.vehicle_packs.append(pack)
        else:
            self.out_timeouts += 1
            self.log.warning(
                "swap %d: pack %s not taken, left in slot %d", sw.request_id, pack.serial, c.index
            )

    def _report(self, event: str, sw: Swap, battery: Payload) -> None:
        payload = {
            "eventType": event,
            "requestId": sw.request_id,
            "idToken": sw.id_token,
            "batteryData": [battery],
        }
        self.log.info(
            "%s %s slot %s pack %s", event, sw.request_id, battery["evseId"], battery["serialNumber"]
        )
        self.dialect.battery_swap(self, payload)

    def _arrivals(self, elapsed: float) -> None:
        """Per tick: drivers who waited too long, docked packs that need charging, random swaps."""
        now = self.env.clock.now()
        for sw in [s for s in self._swaps if now >= s.deadline]:
            if sw.docked:
                self._battery_out(sw, "BatteryOutTimeout")
            else:
                self._abandon(sw, "no authorization in time")
        for c in self.connectors[1:]:
            ev = c.ev
            if ev is not None and ev.soc < 100.0 and c.tx is None and _usable(c):
                self._begin_tx(c, "")
        if self.swap_rate > 0 and self.rng.random() < chance(self.swap_rate, elapsed / 3600.0):
            self._local_swap(self.rng.choice(self.env.id_tags), None, take=self._takes())
