"""`chargeops simulate`: a simulated fleet (`firmware_stubs`) against any OCPP central system. Its flags are
the twins of `CHARGEOPS_SIM_*` (`chargeops.settings.SimSettings`)."""

from __future__ import annotations

import dataclasses
import json
from enum import StrEnum
from typing import Annotated, Any

import typer

from chargeops.settings import SimSettings
from ops.cli_loop import run as _run
from ops.cli_options import EnvOpt, LogFormat, LogLevel, env_name, given, start_logging


def register(app: typer.Typer) -> None:
    app.command("simulate")(simulate)


class Protocol(StrEnum):
    v16 = "ocpp1.6"
    v201 = "ocpp2.0.1"
    v21 = "ocpp2.1"
    mixed = "mixed"


def SimOpt(field: str, help: str) -> Any:
    """A `simulate` flag, twin of `CHARGEOPS_SIM_<FIELD>` (`chargeops.settings.SimSettings`)."""
    return EnvOpt(env_name(field, "CHARGEOPS_SIM_"), help)


def simulate(
    csms: Annotated[str | None, SimOpt("csms", "central system URL, e.g. ws://127.0.0.1:9000/ocpp")] = None,
    chargers: Annotated[int | None, SimOpt("chargers", "number of simulated chargers (1)")] = None,
    protocol: Annotated[
        Protocol | None, SimOpt("protocol", "ocpp1.6 (default), ocpp2.0.1, ocpp2.1 or mixed")
    ] = None,
    swap_stations: Annotated[
        int | None, SimOpt("swap_stations", "simulated battery-swap stations (0)")
    ] = None,
    v2x_chargers: Annotated[
        int | None, SimOpt("v2x_chargers", "simulated bidirectional OCPP 2.1 chargers (DER control; 0)")
    ] = None,
    duration: Annotated[float | None, SimOpt("duration", "seconds to run (default: until stopped)")] = None,
    fault_rate: Annotated[
        float | None, SimOpt("fault_rate", "faults per charger per simulated hour (0)")
    ] = None,
    seed: Annotated[int | None, SimOpt("seed", "random seed (same seed, same run; 0)")] = None,
    id_prefix: Annotated[str | None, SimOpt("id_prefix", "charger ids are PREFIX00001, ... (SIM)")] = None,
    password: Annotated[str | None, SimOpt("password", "Basic-auth password for every charger")] = None,
    time_scale: Annotated[float | None, SimOpt("time_scale", "simulated seconds per real second (1)")] = None,
    swap_rate: Annotated[
        float | None, SimOpt("swap_rate", "swaps per station per simulated hour (6)")
    ] = None,
    session_rate: Annotated[
        float | None, SimOpt("session_rate", "EV arrivals per free connector per simulated minute (0.02)")
    ] = None,
    sample_interval: Annotated[
        float | None, SimOpt("sample_interval", "simulated seconds between meter values (60)")
    ] = None,
    connect_rate: Annotated[float | None, SimOpt("connect_rate", "new connections per second (500)")] = None,
    strict: Annotated[
        bool | None, SimOpt("strict", "validate all traffic against the OCPP schemas (off)")
    ] = None,
    log_level: LogLevel = None,
    log_format: LogFormat = None,
) -> None:
    """Run a simulated fleet against any OCPP central system."""
    flags = {k: v for k, v in locals().items() if k in SimSettings.model_fields}
    try:
        start_logging(log_level, log_format)
        sim = given(SimSettings, **flags)
    except Exception as exc:
        from ops.startup import fail

        fail(exc, None)
    from firmware_stubs.fleet import FleetConfig, run_fleet

    config = FleetConfig(
        csms_url=sim.csms,
        chargers=sim.chargers,
        protocol=sim.protocol,
        swap_stations=sim.swap_stations,
        swap_rate=sim.swap_rate,
        v2x_chargers=sim.v2x_chargers,
        duration=sim.duration,
        fault_rate=sim.fault_rate,
        seed=sim.seed,
        id_prefix=sim.id_prefix,
        password=sim.password,
        sample_interval=sim.sample_interval,
        session_rate=sim.session_rate,
        time_scale=sim.time_scale,
        connect_rate=sim.connect_rate,
        strict=sim.strict,
    )
    _run(_simulate(config, run_fleet))


async def _simulate(config: Any, run_fleet: Any) -> None:
    """Run the fleet and print its report as JSON."""
    report = await run_fleet(config)
    typer.echo(json.dumps(dataclasses.asdict(report), indent=2))
