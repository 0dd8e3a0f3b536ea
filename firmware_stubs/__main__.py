"""``python -m firmware_stubs --csms ws://host:port/ocpp --chargers N``: run a simulated fleet standalone."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import logging

from firmware_stubs.fleet import FleetConfig, run_fleet


def parse_args(argv: list[str] | None = None) -> tuple[FleetConfig, str]:
    parser = argparse.ArgumentParser(prog="python -m firmware_stubs", description=__doc__)
    parser.add_argument(
        "--csms", required=True, help="central system base URL, e.g. ws://127.0.0.1:9000/ocpp"
    )
    parser.add_argument("--chargers", type=int, default=1)
    parser.add_argument("--protocol", choices=("ocpp1.6", "ocpp2.0.1", "ocpp2.1", "mixed"), default="ocpp1.6")
    parser.add_argument("--swap-stations", type=int, default=0, help="battery-swap stations (OCPP 2.1)")
    parser.add_argument(
        "--v2x-chargers", type=int, default=0, help="bidirectional OCPP 2.1 chargers with DER control"
    )
    parser.add_argument(
        "--swap-rate", type=float, default=FleetConfig.swap_rate, help="swaps per station per simulated hour"
    )
    parser.add_argument("--duration", type=float, default=None, help="seconds (default: until Ctrl-C)")
    parser.add_argument("--fault-rate", type=float, default=0.0, help="faults per charger per simulated hour")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--id-prefix", default="SIM")
    parser.add_argument("--password", default=None, help="HTTP Basic auth password for every charger")
    parser.add_argument("--sample-interval", type=float, default=60.0)
    parser.add_argument("--session-rate", type=float, default=FleetConfig.session_rate)
    parser.add_argument("--time-scale", type=float, default=1.0)
    parser.add_argument("--connect-rate", type=float, default=500.0)
    parser.add_argument("--strict", action="store_true", help="validate all traffic against the OCPP schemas")
    parser.add_argument("--log-level", default="WARNING")
    ns = parser.parse_args(argv)
    config = FleetConfig(
        csms_url=ns.csms,
        chargers=ns.chargers,
        protocol=ns.protocol,
        swap_stations=ns.swap_stations,
        swap_rate=ns.swap_rate,
        v2x_chargers=ns.v2x_chargers,
        duration=ns.duration,
        fault_rate=ns.fault_rate,
        seed=ns.seed,
        id_prefix=ns.id_prefix,
        password=ns.password,
        sample_interval=ns.sample_interval,
        session_rate=ns.session_rate,
        time_scale=ns.time_scale,
        connect_rate=ns.connect_rate,
        strict=ns.strict,
    )
    return config, ns.log_level


def main(argv: list[str] | None = None) -> None:
    config, level = parse_args(argv)
    logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        result = asyncio.run(run_fleet(config))
    except KeyboardInterrupt:
        return
    print(json.dumps(dataclasses.asdict(result), indent=2))


if __name__ == "__main__":
    main()
