"""The `chargeops` command line (SPEC §3). Every flag has a CHARGEOPS_* environment twin, read by
`chargeops.settings` alone (`ops.cli_options`)."""

from __future__ import annotations

import asyncio
import json
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer

from chargeops.settings import Settings
from ops import cli_ca, cli_demo, cli_fleet, cli_simulate
from ops.cli_loop import run as _run
from ops.cli_options import (
    DatabaseUrl,
    LogFormat,
    LogLevel,
    Opt,
    given_settings,
    start_logging,
)

app = typer.Typer(help="chargeops: operations backend for EV charging operators.", no_args_is_help=True)
db_app = typer.Typer(help="Database maintenance.", no_args_is_help=True)
chargers_app = typer.Typer(help="Charger registry.", no_args_is_help=True)
fleet_app = typer.Typer(
    help="Fleet registry: sites, depots, parts, charger models, stock.", no_args_is_help=True
)
app.add_typer(db_app, name="db")
app.add_typer(chargers_app, name="chargers")
app.add_typer(fleet_app, name="fleet")
ops_app = typer.Typer(help="Operations tools: the supply early warning's back-test.", no_args_is_help=True)
app.add_typer(ops_app, name="ops")


@app.command()
def serve(
    roles: Annotated[
        str | None, Opt("roles", "comma-separated: gateway, ingest, ops, api (default: all)")
    ] = None,
    ocpp_host: Annotated[str | None, Opt("ocpp_host", "OCPP WebSocket bind address")] = None,
    ocpp_port: Annotated[int | None, Opt("ocpp_port", "OCPP WebSocket port (default 9000)")] = None,
    http_host: Annotated[str | None, Opt("http_host", "HTTP API / metrics bind address")] = None,
    http_port: Annotated[int | None, Opt("http_port", "HTTP API / metrics port (default 8000)")] = None,
    metrics_port: Annotated[
        int | None, Opt("metrics_port", "serve /metrics on its own port instead of the HTTP port")
    ] = None,
    access_log: Annotated[
        bool | None, Opt("access_log", "one log line per API request (chargeops.access; default on)")
    ] = None,
    api_db_pool: Annotated[
        int | None, Opt("api_db_pool", "database connections the HTTP API may hold, apart from ingest (4)")
    ] = None,
    api_process: Annotated[
        bool | None,
        Opt("api_process", "the HTTP API in its own worker process when serve runs other roles (default on)"),
    ] = None,
    api_rate_limit: Annotated[
        str | None,
        Opt("api_rate_limit", "requests per API token, e.g. 20/second;600/minute (default), or off"),
    ] = None,
    database_url: DatabaseUrl = None,
    mqtt_url: Annotated[str | None, Opt("mqtt_url", "mqtt:// or mqtts://, user:pass@host:port/root")] = None,
    mqtt_username: Annotated[str | None, Opt("mqtt_username", "broker user (its password: env only)")] = None,
    mqtt_ca_file: Annotated[Path | None, Opt("mqtt_ca_file", "CA (PEM) of the broker (mqtts://)")] = None,
    mqtt_cert_file: Annotated[Path | None, Opt("mqtt_cert_file", "client cert (PEM) for mqtts://")] = None,
    mqtt_key_file: Annotated[Path | None, Opt("mqtt_key_file", "its key (PEM), unless in the cert")] = None,
    trusted_proxies: Annotated[
        str | None, Opt("trusted_proxies", "CIDRs of load balancers whose X-Forwarded-For is believed")
    ] = None,
    accept_unknown: Annotated[
        bool | None, Opt("accept_unknown", "accept chargers that are not registered")
    ] = None,
    registration_policy: Annotated[
        str | None,
        Opt("registration_policy", "unknown chargers: reject (refused at handshake) or pending"),
    ] = None,
    heartbeat_interval: Annotated[int | None, Opt("heartbeat_interval", "seconds, told at boot")] = None,
    call_timeout: Annotated[
        float | None, Opt("call_timeout", "seconds to wait for a charger's answer")
    ] = None,
    max_frame_bytes: Annotated[int | None, Opt("max_frame_bytes", "larger frames close with 1009")] = None,
    tls_cert: Annotated[Path | None, Opt("tls_cert", "server certificate (PEM) for wss://")] = None,
    tls_key: Annotated[Path | None, Opt("tls_key", "server key (PEM)")] = None,
    tls_second_cert: Annotated[
        Path | None, Opt("tls_second_cert", "second server certificate, other key type (RSA / ECDSA)")
    ] = None,
    tls_second_key: Annotated[Path | None, Opt("tls_second_key", "its key (PEM)")] = None,
    tls_reload_interval: Annotated[
        float | None,
        Opt(
            "tls_reload_interval",
            "seconds between looks for changed TLS / contract root files (30; 0: never)",
        ),
    ] = None,
    tls_client_ca: Annotated[
        Path | None, Opt("tls_client_ca", "CA for client certificates (profile 3)")
    ] = None,
    ca_dir: Annotated[
        Path | None, Opt("ca_dir", "built-in CA directory, made on first use (./chargeops-ca)")
    ] = None,
    ca_organization: Annotated[
        str | None, Opt("ca_organization", "organization (O) a station's CSR must name (chargeops)")
    ] = None,
    ca_certificate_days: Annotated[
        int | None, Opt("ca_certificate_days", "days a certificate the built-in CA signs is valid (365)")
    ] = None,
    certificate_renewal_days: Annotated[
        float | None,
        Opt("certificate_renewal_days", "days before expiry a station is asked to renew its certificate"),
    ] = None,
    allow_private_urls: Annotated[
        bool | None, Opt("allow_private_urls", "allow loopback/private firmware and log URLs")
    ] = None,
    ocsp_responder_url: Annotated[
        str | None, Opt("ocsp_responder_url", "OCSP responder asked instead of the one the charger names")
    ] = None,
    contract_roots: Annotated[
        Path | None, Opt("contract_roots", "V2G / MO root certificates (PEM file or directory) for C07")
    ] = None,
    contract_roots_ca: Annotated[
        bool | None, Opt("contract_roots_ca", "trust the built-in CA's root as a V2G root too")
    ] = None,
    contract_cert_service_url: Annotated[
        str | None, Opt("contract_cert_service_url", "service Get15118EVCertificate is forwarded to")
    ] = None,
    contract_cert_test_pool: Annotated[
        bool | None, Opt("contract_cert_test_pool", "labs: Get15118EVCertificate from the test pool")
    ] = None,
    pki_timeout: Annotated[
        float | None, Opt("pki_timeout", "seconds an OCSP responder or certificate service may take (5)")
    ] = None,
    gateway_id: Annotated[str | None, Opt("gateway_id", "this gateway process's name on the bus")] = None,
    node_id: Annotated[str | None, Opt("node_id", "stable name for this process's MQTT session")] = None,
    boot_retry_interval: Annotated[
        int | None, Opt("boot_retry_interval", "seconds a Pending/Rejected charger waits to boot again")
    ] = None,
    login_failures_allowed: Annotated[
        int | None,
        Opt("login_failures_allowed", "failed logins per id / address per minute before back-off"),
    ] = None,
    login_backoff_seconds: Annotated[
        float | None, Opt("login_backoff_seconds", "seconds logins stay refused after too many failures")
    ] = None,
    handshake_concurrency: Annotated[
        int | None, Opt("handshake_concurrency", "handshakes checked against the database at once")
    ] = None,
    spool_dir: Annotated[
        Path | None, Opt("spool_dir", "gateway event spool while the broker is away (./chargeops-spool)")
    ] = None,
    spool_max_events: Annotated[
        int | None, Opt("spool_max_events", "events the gateway spools; beyond it calls get InternalError")
    ] = None,
    command_ack_timeout: Annotated[
        float | None,
        Opt("command_ack_timeout", "s a gateway may take to pick up an API command (2; none: not_connected)"),
    ] = None,
    bus_linger_ms: Annotated[
        float | None,
        Opt("bus_linger_ms", "ms a gateway gathers events per MQTT message (0: one loop turn)"),
    ] = None,
    sample_retention_days: Annotated[
        int | None, Opt("sample_retention_days", "days of raw meter samples and 1-minute rollups kept")
    ] = None,
    event_retention_days: Annotated[
        int | None, Opt("event_retention_days", "days of high-volume raw events kept (180; 0: all)")
    ] = None,
    fleet_metrics_interval: Annotated[
        float | None, Opt("fleet_metrics_interval", "seconds between fleet gauge refreshes (ops role)")
    ] = None,
    handshake_backlog: Annotated[
        int | None, Opt("handshake_backlog", "handshakes allowed to wait; beyond it chargers get 503")
    ] = None,
    ws_ping_interval: Annotated[
        float | None, Opt("ws_ping_interval", "seconds between WebSocket pings to each charger (20)")
    ] = None,
    ws_ping_timeout: Annotated[
        float | None,
        Opt("ws_ping_timeout", "seconds to answer a ping before the link counts as dead (20)"),
    ] = None,
    rules_file: Annotated[
        Path | None, Opt("rules_file", "fault rules (YAML) replacing the built-in ops/rules.yaml")
    ] = None,
    site_margin_pct: Annotated[
        float | None, Opt("site_margin_pct", "% of each site's grid limit the site planner keeps unused")
    ] = None,
    site_plan_interval: Annotated[
        float | None, Opt("site_plan_interval", "seconds between full re-plans of the site power budgets")
    ] = None,
    ops_interval: Annotated[
        float | None, Opt("ops_interval", "seconds between ops scans (offline, stalled energy) and gauges")
    ] = None,
    supply_interval: Annotated[
        float | None,
        Opt("supply_interval", "seconds between supply reviews: reorders, stock-out risk, stored warnings"),
    ] = None,
    meter_max_power_kw: Annotated[
        float | None,
        Opt("meter_max_power_kw", "kW a meter may rise at most when the charger's model has no rated power"),
    ] = None,
    meter_max_clock_skew: Annotated[
        float | None, Opt("meter_max_clock_skew", "seconds a meter reading may be stamped ahead (300)")
    ] = None,
    tariff_refresh: Annotated[
        float | None, Opt("tariff_refresh", "seconds a gateway prices by the tariffs it read (5)")
    ] = None,
    cost_update_interval: Annotated[
        float | None, Opt("cost_update_interval", "seconds between CostUpdated calls (60, 0: off)")
    ] = None,
    local_list_groups: Annotated[
        str | None,
        Opt("local_list_groups", "comma-separated token groups put on local lists (default: every token)"),
    ] = None,
    local_list_sync_interval: Annotated[
        float | None,
        Opt("local_list_sync_interval", "seconds between automatic syncs of stale local lists (0: off)"),
    ] = None,
    log_level: LogLevel = None,
    log_format: LogFormat = None,
) -> None:
    """Run the backend: OCPP gateway, telemetry ingest, ops engine, HTTP API and /metrics."""
    flags = {k: v for k, v in locals().items() if k in Settings.model_fields}
    settings = None
    try:
        start_logging(log_level, log_format)
        settings = given_settings(**flags)
        from ops.runtime import Runtime
        from ops.startup import probe_ports

        runtime = Runtime(settings)
        probe_ports(settings, runtime.roles)  # before any role writes anywhere
        _run(runtime.run_forever())
    except Exception as exc:
        from ops.startup import fail

        fail(exc, settings)


@db_app.command("upgrade")
def db_upgrade(database_url: DatabaseUrl = None) -> None:
    """Apply database migrations; says from which revision to which (or that there was nothing to do)."""
    from chargeops.db.engine import make_engine
    from ops.progress import migrate
    from ops.startup import fail

    async def run(url: str) -> str:
        engine = make_engine(url)
        try:
            return await migrate(engine)
        finally:
            await engine.dispose()

    settings = None
    try:
        settings = given_settings(database_url=database_url)
        done = asyncio.run(run(settings.database_url))
    except Exception as exc:
        fail(exc, settings)
    typer.echo(f"database {done}")


class Kind(StrEnum):
    charger = "charger"
    swap_station = "swap_station"


@chargers_app.command("add")
def chargers_add(
    charger_id: Annotated[str, typer.Argument(metavar="ID", help="charge point id (as in the OCPP URL)")],
    password: Annotated[
        str | None,
        typer.Option(help="Basic-auth password (security profile 1); prompt with -", show_default=False),
    ] = None,
    site: Annotated[str | None, typer.Option(help="site the charger belongs to")] = None,
    kind: Annotated[Kind, typer.Option(help="charger or swap_station")] = Kind.charger,
    database_url: DatabaseUrl = None,
) -> None:
    """Register a charger."""
    from chargeops.db.engine import make_engine, make_sessionmaker
    from chargeops.db.migrate import is_empty, upgrade
    from ops.fleet import ChargerExists, InvalidRegistration, add_charger

    if password == "-":
        password = typer.prompt("password", hide_input=True, confirmation_prompt=True)
    settings = given_settings(database_url=database_url)

    async def run() -> None:
        engine = make_engine(settings.database_url)
        try:
            if await is_empty(engine):
                await upgrade(engine)
            async with make_sessionmaker(engine)() as session, session.begin():
                await add_charger(session, charger_id, password=password, site=site, kind=kind.value)
        finally:
            await engine.dispose()

    try:
        asyncio.run(run())
    except ChargerExists:
        typer.echo(f"error: charger {charger_id} already exists", err=True)
        raise typer.Exit(1) from None
    except InvalidRegistration as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    typer.echo(f"registered {charger_id}")


@fleet_app.command("load")
def fleet_load(
    path: Annotated[Path, typer.Argument(metavar="FILE", help="fleet document (YAML or JSON)", exists=True)],
    database_url: DatabaseUrl = None,
) -> None:
    """Load regions, depots, sites, parts, charger models, chargers and stock from a file (upsert by id)."""
    from pydantic import ValidationError

    from chargeops.db.engine import make_engine, make_sessionmaker
    from chargeops.db.migrate import is_empty
    from ops.progress import migrate
    from ops.registry import UnknownReference, apply_fleet, read_fleet_file, seed_catalogue

    settings = given_settings(database_url=database_url)
    done: list[str] = []  # what it took besides the upsert, said before the counts

    async def run() -> dict[str, int]:
        engine = make_engine(settings.database_url)
        try:
            if await is_empty(engine):
                done.append(f"database {await migrate(engine)}")
            sessions = make_sessionmaker(engine)
            # a fleet file may name catalogue SKUs without listing them
            if await seed_catalogue(sessions):
                done.append("seeded the default spare-parts catalogue and charger models")
            async with sessions() as session, session.begin():
                return await apply_fleet(session, read_fleet_file(path), actor=f"file:{path.name}")
        finally:
            await engine.dispose()

    try:
        counts = asyncio.run(run())
    except (ValidationError, UnknownReference) as exc:
        typer.echo(f"error: {path}: {exc}", err=True)
        raise typer.Exit(2) from None
    for line in done:
        typer.echo(line)
    upserted = ", ".join(f"{n} {name}" for name, n in counts.items() if n)
    typer.echo(f"upserted by id: {upserted}" if upserted else f"{path} holds nothing to load")


@ops_app.command("backtest")
def ops_backtest(
    scenario: Annotated[
        Path | None,
        typer.Option(metavar="FILE", help="scenario (YAML or JSON, README 'Back-test'); default: generated"),
    ] = None,
    days: Annotated[int | None, typer.Option(min=1, max=3650, help="days to replay (default 365)")] = None,
    seed: Annotated[int | None, typer.Option(help="random seed of the generated world (default 0)")] = None,
    database_url: Annotated[
        str | None, typer.Option(help="an EMPTY database to replay on (default: a temporary SQLite file)")
    ] = None,
    rule: Annotated[
        str, typer.Option(help="replenishment rule: model (the product's) or legacy (the baseline it beats)")
    ] = "model",
) -> None:
    """Replay the real ops code (tickets, stock, supply, warnings) over a simulated year; print the score."""
    from chargeops.db.engine import make_engine
    from chargeops.db.migrate import is_empty
    from ops.backtest import ScenarioError, generated, read_scenario, run

    try:
        chosen = read_scenario(scenario) if scenario is not None else generated(seed or 0, days or 365)
    except ScenarioError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    chosen = chosen.model_copy(
        update={k: v for k, v in (("days", days), ("seed", seed)) if v is not None and scenario is not None}
    )

    async def replay() -> dict[str, Any]:
        if database_url is not None:
            engine = make_engine(database_url)
            try:
                if not await is_empty(engine):
                    raise ScenarioError(
                        "--database-url must name an empty database: a back-test writes into it"
                    )
            finally:
                await engine.dispose()
        return await run(chosen, database_url, rule)

    try:
        result = asyncio.run(replay())
    except ScenarioError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    typer.echo(json.dumps(result, indent=2))


cli_fleet.register(app, chargers_app)
cli_demo.register(app)
cli_ca.register(app)
cli_simulate.register(app)


def main() -> None:
    app(prog_name="chargeops")


if __name__ == "__main__":
    main()
