"""A fleet of simulated chargers and swap stations in one process: ramp-up, run, aggregate a report."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from dataclasses import dataclass, field

from firmware_stubs.charger import SimEnvironment, SimulatedCharger
from firmware_stubs.swap_station import SwapStation

logger = logging.getLogger("firmware_stubs.fleet")

MAX_VIOLATIONS_REPORTED = 1000


@dataclass
class FleetConfig:
    csms_url: str  # e.g. "ws://127.0.0.1:9000/ocpp"
    chargers: int = 1
    protocol: str = "ocpp1.6"  # "ocpp1.6" | "ocpp2.0.1" | "ocpp2.1" | "mixed" (1.6 and 2.0.1 alternate)
    swap_stations: int = 0  # ids SWAP00000...; ocpp2.1 ("mixed": every other one the 2.0.1 fallback)
    swap_slots: int = 8
    swap_rate: float = 6.0  # random swaps per station per simulated hour (Poisson rate)
    swap_timeout_rate: float = 0.02  # share of swaps whose driver leaves the charged pack (BatteryOutTimeout)
    v2x_chargers: int = 0  # bidirectional OCPP 2.1 chargers with DER control, ids V2X00000...
    duration: float | None = None  # seconds; None = run until cancelled
    fault_rate: float = 0.0  # random faults per charger per simulated hour (Poisson rate)
    seed: int = 0
    id_prefix: str = "SIM"
    password: str | None = None
    sample_interval: float = 60.0
    session_rate: float = 0.02  # EV arrivals per free connector per simulated minute (Poisson rate)
    time_scale: float = 1.0
    connect_rate: float = 500.0  # new connections per second during ramp-up
    strict: bool = False


@dataclass
class FleetReport:
    chargers: int = 0
    connected: int = 0  # connected at the end of the run
    ever_connected: int = 0
    boots_accepted: int = 0
    sessions_started: int = 0
    sessions_completed: int = 0
    energy_wh: float = 0.0
    calls_sent: int = 0
    calls_received: int = 0
    errors: int = 0  # CALLERRORs and timeouts of our calls
    faults: int = 0
    energy_exported_wh: float = 0.0  # discharged by V2X chargers
    swaps: int = 0  # completed (BatteryOut)
    swap_timeouts: int = 0  # BatteryOutTimeout
    schema_violations: list[str] = field(default_factory=list)


def build_fleet(config: FleetConfig) -> list[SimulatedCharger]:
    """Create (not start) the chargers, then the swap stations, then the V2X chargers; hardware mix, EVs and
    packs derive from ``config.seed`` only (each group draws its seeds after the ones before, so adding one
    changes nothing in the others)."""
    if config.protocol not in ("ocpp1.6", "ocpp2.0.1", "ocpp2.1", "mixed"):
        raise ValueError(f"unknown protocol {config.protocol!r}")
    env = SimEnvironment(
        time_scale=config.time_scale,
        sample_interval=config.sample_interval,
        session_rate=config.session_rate,
        fault_rate=config.fault_rate,
        strict=config.strict,
        tick=1.0 if config.chargers <= 1000 else 5.0,
        seed=config.seed,
    )
    fleet_rng = random.Random(config.seed)
    chargers = []
    for n in range(config.chargers):
        rng = random.Random(fleet_rng.getrandbits(64))
        if config.protocol == "mixed":
            protocol = "ocpp1.6" if n % 2 == 0 else "ocpp2.0.1"
        else:
            protocol = config.protocol
        dc = rng.random() < 0.25
        chargers.append(
            SimulatedCharger(
                f"{config.id_prefix}{n:05d}",
                config.csms_url,
                protocol=protocol,
                password=config.password,
                connectors=rng.choice((1, 2)),
                max_power_w=rng.choice((50_000.0, 150_000.0)) if dc else rng.choice((11_000.0, 22_000.0)),
                dc=dc,
                rng=rng,
                env=env,
            )
        )
    for n in range(config.swap_stations):
        chargers.append(
            SwapStation(
                f"SWAP{n:05d}",
                config.csms_url,
                protocol="ocpp2.0.1" if config.protocol == "mixed" and n % 2 else "ocpp2.1",
                password=config.password,
                slots=config.swap_slots,
                docked=max(0, config.swap_slots - 2),  # two free slots: one left-behind pack blocks nothing
                swap_rate=config.swap_rate,
                timeout_rate=config.swap_timeout_rate,
                rng=random.Random(fleet_rng.getrandbits(64)),
                env=env,
            )
        )
    for n in range(config.v2x_chargers):
        rated = fleet_rng.choice((7_400.0, 11_000.0))
        chargers.append(
            SimulatedCharger(
                f"V2X{n:05d}",
                config.csms_url,
                protocol="ocpp2.1",
                password=config.password,
                max_power_w=11_000.0,
                max_discharge_w=rated,
                rng=random.Random(fleet_rng.getrandbits(64)),
                env=env,
                model="SimV2X",
            )
        )
    return chargers


def report(chargers: list[SimulatedCharger]) -> FleetReport:
    """Aggregate the per-charger counters."""
    result = FleetReport(chargers=len(chargers))
    for cp in chargers:
        result.connected += cp.connected
        result.ever_connected += cp.connected_count > 0
        result.boots_accepted += cp.boots_accepted
        result.sessions_started += cp.sessions_started
        result.sessions_completed += cp.sessions_completed
        result.energy_wh += cp.energy_wh
        result.energy_exported_wh += sum(c.export_wh for c in cp.connectors)
        result.calls_sent += cp.calls_sent
        result.calls_received += cp.calls_received
        result.errors += cp.call_errors
        result.faults += cp.faults
        if isinstance(cp, SwapStation):
            result.swaps += cp.swaps_completed
            result.swap_timeouts += cp.out_timeouts
        room = MAX_VIOLATIONS_REPORTED - len(result.schema_violations)
        result.schema_violations.extend(f"{cp.id}: {v}" for v in cp.schema_violations[:room])
    result.energy_wh = round(result.energy_wh, 1)
    result.energy_exported_wh = round(result.energy_exported_wh, 1)
    return result


async def run_fleet(config: FleetConfig, chargers: list[SimulatedCharger] | None = None) -> FleetReport:
    """Start the fleet at ``connect_rate`` per second, run ``duration`` seconds (or until cancelled)."""
    fleet = chargers if chargers is not None else build_fleet(config)
    loop = asyncio.get_running_loop()
    started_at = loop.time()
    try:
        async with asyncio.timeout(config.duration):
            for n, cp in enumerate(fleet):
                delay = started_at + n / max(config.connect_rate, 1e-6) - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                await cp.start()
            logger.info("fleet of %d chargers started", len(fleet))
            await asyncio.Event().wait()
    except TimeoutError:
        pass
    finally:
        result = report(fleet)
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*(cp.stop() for cp in fleet))
    return result
