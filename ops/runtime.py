"""Composition root: builds the roles a process runs (gateway, ingest, ops, api) around one bus."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from chargeops.broker import redact
from chargeops.db.engine import make_engine, make_sessionmaker
from chargeops.db.migrate import is_empty
from chargeops.events import utcnow
from chargeops.settings import ROLES, Settings
from ocpp_gateway.certificates import GatewayCertificates
from ocpp_gateway.context import GatewayContext
from ocpp_gateway.contract_chain import ContractRootsError, load_roots
from ocpp_gateway.pricing import Pricing
from ocpp_gateway.server import GatewayServer
from ocpp_gateway.store import GatewayStore
from ocpp_gateway.tls import ReloadingTls, TlsFilesError, files_from
from ops import progress
from ops.api import create_app
from ops.api.context import Commands
from ops.api.metrics import add_metrics, metrics_app
from ops.api.process import ApiProcess
from ops.api.worker import ApiThread, LoopBus
from ops.certificates import CertificateRenewal, builtin_ca
from ops.cli_loop import tune_interpreter
from ops.engine import OpsEngine
from ops.ev_charging import EvChargingPlanner
from ops.local_list.job import LocalListJob
from ops.running_cost import CostUpdater
from ops.site_power import SitePlanner
from ops.startup import StartupError
from ops.webhooks import WebhookDispatcher
from telemetry.bus import Bus, make_bus
from telemetry.fleet_metrics import FleetMetrics
from telemetry.gateway_presence import GatewayPresenceSubscriber, apply_presence
from telemetry.heap import HeapKeeper, LoopLag, YoungCollector, observe_gc
from telemetry.mqtt.presence import GatewayPresence
from telemetry.retention import Maintenance
from telemetry.site_telemetry import SiteTelemetrySubscriber
from telemetry.writer import BatchWriter

log = logging.getLogger("chargeops")
_BROKER_SETTINGS = ("mqtt_username", "mqtt_password", "mqtt_ca_file", "mqtt_cert_file", "mqtt_key_file")
STOP_SECONDS = 25.0  # the whole shutdown; an orchestrator's SIGKILL usually follows SIGTERM after 30 s


class Runtime:
    """Everything one `chargeops serve` process runs; start() returns once all listeners are up."""

    def __init__(self, settings: Settings, roles: set[str] | None = None) -> None:
        self.settings = settings
        self.roles = roles if roles is not None else settings.role_set()
        if self.roles != set(ROLES) and not settings.mqtt_url:
            raise StartupError(
                "running a subset of roles needs a shared bus: set CHARGEOPS_MQTT_URL "
                "(the in-process bus only joins roles inside one process)"
            )
        stray = [name for name in _BROKER_SETTINGS if getattr(settings, name) is not None]
        if stray and not settings.mqtt_url:  # the operator meant a broker (TLS?) and would get none
            raise StartupError(
                f"CHARGEOPS_{stray[0].upper()} is set but CHARGEOPS_MQTT_URL is not: "
                "set the broker's URL (e.g. mqtts://host:8883) or unset it"
            )
        self._tls: ReloadingTls | None = None
        if "gateway" in self.roles:
            try:  # certificates that do not load stop the start before anything runs
                files = files_from(settings)
                self._tls = ReloadingTls(files) if files else None
            except TlsFilesError as exc:
                raise StartupError(f"cannot serve wss://: {exc}") from None
            try:
                load_roots([settings.contract_roots] if settings.contract_roots is not None else [])
            except ContractRootsError as exc:
                raise StartupError(f"cannot load --contract-roots: {exc}") from None
        self.engine = make_engine(settings.database_url)
        self.sessions = make_sessionmaker(self.engine)
        # bad MQTT settings raise BrokerConfigError here, before anything started
        self.bus = make_bus(settings)
        self.gateway: GatewayServer | None = None
        self.writer: BatchWriter | None = None
        self.fleet_metrics: FleetMetrics | None = None
        self.maintenance: Maintenance | None = None
        self.ops: OpsEngine | None = None
        self.webhooks: WebhookDispatcher | None = None
        self.site_planner: SitePlanner | None = None
        self.certificate_renewal: CertificateRenewal | None = None
        self.ev_charging: EvChargingPlanner | None = None
        self.cost_updater: CostUpdater | None = None
        self.site_telemetry: SiteTelemetrySubscriber | None = None
        self.gateway_presence: GatewayPresenceSubscriber | None = None
        self.local_lists: LocalListJob | None = None
        self._ops_bus: Bus | None = None
        self._http: ApiThread | ApiProcess | None = None
        self._http_port: int | None = None
        self._metrics: ApiThread | None = None
        self._metrics_port: int | None = None
        self._failed: asyncio.Future[None] | None = None
        self._lag: LoopLag | None = None
        self._young: YoungCollector | None = None
        self._heap: HeapKeeper | None = None

    async def start(self) -> None:
        """Says each step on `chargeops.startup` (`ops.progress`)."""
        self._failed = asyncio.get_running_loop().create_future()
        if self.settings.mqtt_url:
            progress.log.info("connecting to the MQTT broker at %s", redact(self.settings.mqtt_url))
        await self.bus.start()
        await progress.check_database(self.engine, empty=await is_empty(self.engine))
        if "ingest" in self.roles:
            progress.log.info("starting ingest (batched writes, rollups, retention)")
            self.writer = BatchWriter(self.sessions)
            self.writer.start()
            self.bus.subscribe(self.writer.write, durable=True)
            self.maintenance = Maintenance(self.sessions, self.settings)
            self.maintenance.start()
            if self.settings.mqtt_url:  # site controllers publish there (without a broker: the API)
                self.site_telemetry = SiteTelemetrySubscriber(self.sessions, self.settings)
                self.site_telemetry.start()
                # gateways lost or restarted: their chargers left `connected` are disconnected
                self.gateway_presence = GatewayPresenceSubscriber(
                    self.sessions, self.settings, self.bus.publish
                )
                self.gateway_presence.start()
            await self.bus.ready(timeout=30)
        if "ops" in self.roles:
            progress.log.info("starting ops (fault rules, supply reviews, webhooks, site power, EV charging)")
            self.fleet_metrics = FleetMetrics(self.sessions, self.settings.fleet_metrics_interval)
            self.fleet_metrics.start()
            await self._start_ops()
        if "gateway" in self.roles:
            progress.log.info("starting the OCPP gateway")
            pricing = Pricing(self.sessions, self.settings.tariff_refresh)
            ctx = GatewayContext(
                self.settings,
                GatewayStore(self.sessions),
                self.bus,
                self.settings.gateway_id,
                GatewayCertificates(builtin_ca(self.settings), self.sessions),
                pricing,
            )
            if not self.settings.mqtt_url:  # no broker, no Will: this run clears what a crashed one left
                await self._clear_previous_runs()
            self.gateway = GatewayServer(ctx, self._tls)
            self.bus.on_presence_restored(self.gateway.announce_sessions)
            await self.gateway.start()
        progress.log.info("starting the HTTP %s", "API and /metrics" if "api" in self.roles else "/metrics")
        await self._start_http()
        progress.log.info("started: %s", ", ".join(r for r in ROLES if r in self.roles))

    async def _start_ops(self) -> None:
        """On MQTT the engine is its own durable consumer group (a second connection); in one process it
        listens through a bounded queue, off the path of the chargers' answers."""
        self.ops = OpsEngine(
            self.sessions, self.settings.rules_file, self.settings.ops_interval, self.settings.supply_interval
        )
        await self.ops.prepare()
        if self.settings.mqtt_url:
            self._ops_bus = make_bus(self.settings, durable_group="ops")
            await self._ops_bus.start()
            self._ops_bus.subscribe(self.ops.handle, durable=True)
            await self._ops_bus.ready(timeout=30)
        else:
            self.bus.subscribe(self.ops.handle)
        self.ops.start()
        self.webhooks = WebhookDispatcher(self.sessions, self.settings)
        self.webhooks.start()
        every = self.settings.site_plan_interval
        self.site_planner = SitePlanner(
            self.sessions, self.bus, self.settings, interval=min(5.0, every), full_interval=every
        )
        self.bus.subscribe(self.site_planner.handle)
        self.site_planner.start()
        self.certificate_renewal = CertificateRenewal(self.sessions, self.bus, self.settings)
        self.certificate_renewal.start()
        self.ev_charging = EvChargingPlanner(self.sessions, self.bus, self.settings)
        self.site_planner.before_limit = self.ev_charging.renegotiate
        self.bus.subscribe(self.ev_charging.handle)
        self.ev_charging.start()
        if self.settings.cost_update_interval > 0:
            self.cost_updater = CostUpdater(self.sessions, self.bus, self.settings)
            self.cost_updater.start()
        if self.settings.local_list_sync_interval > 0:
            self.local_lists = LocalListJob(self.sessions, self.bus, self.settings)
            self.bus.subscribe(self.local_lists.handle)
            self.local_lists.start()

    def http_app(self, sessions: async_sessionmaker[AsyncSession], bus: Commands) -> FastAPI:
        """The API (if this process runs that role) and, unless it has a listener of its own, `/metrics`."""
        app = create_app(sessions, bus, self.settings) if "api" in self.roles else FastAPI(title="chargeops")
        if self.settings.metrics_port is None:
            add_metrics(app, self.settings)
        return app

    def metrics_app(self) -> FastAPI:
        return metrics_app(self.settings)

    @property
    def api_in_process(self) -> bool:
        """Whether the API runs in a worker process of its own (`ops/api/process.py`): by default when this
        process runs it alongside other roles."""
        return self.settings.api_process and "api" in self.roles and len(self.roles) > 1

    async def _start_http(self) -> None:
        """The API and `/metrics` in a worker process (`api_in_process`), else on their own thread, loop and
        database pool (`ops/api/worker.py`): heavy reads cannot hold up the chargers' answers, nor take the
        connections ingest commits through. With `metrics_port`, `/metrics` has a listener of its own (a
        deployment publishes the API's port and keeps that one internal)."""
        s = self.settings
        if self.api_in_process:
            self._http = process = ApiProcess(s, self.bus, self._fail)
            self._http_port, self._metrics_port = await process.start()
            where = (s.http_host, self.http_port, process.pid)
            log.info("HTTP API on http://%s:%s (docs /docs; API process %s)", *where)
            log.info("metrics on http://%s:%s/metrics", s.http_host, self.metrics_port)
            return
        engine = make_engine(s.database_url, pool_size=s.api_db_pool, max_overflow=0, pool_timeout=5)
        loop = asyncio.get_running_loop()
        bus = LoopBus(self.bus, loop)
        self._http = ApiThread(
            lambda: self.http_app(make_sessionmaker(engine), bus),
            engine,
            s.http_host,
            s.http_port,
            loop_factory=type(loop),
        )
        self._http_port = await self._http.start()
        log.info("HTTP API on http://%s:%s (docs /docs)", s.http_host, self.http_port)
        if s.metrics_port is not None:
            self._metrics = ApiThread(self.metrics_app, None, s.http_host, s.metrics_port, type(loop))
            self._metrics_port = await self._metrics.start()
        log.info("metrics on http://%s:%s/metrics", s.http_host, self.metrics_port)

    @property
    def metrics_port(self) -> int:
        """The port `/metrics` answers on (the HTTP port unless it has its own)."""
        return self._metrics_port if self._metrics_port is not None else self.http_port

    @property
    def http_port(self) -> int:
        assert self._http_port is not None
        return self._http_port

    @property
    def api_loop(self) -> asyncio.AbstractEventLoop:
        """The event loop the HTTP API runs on (not the gateway's), when it runs in this process."""
        assert isinstance(self._http, ApiThread) and self._http.loop is not None
        return self._http.loop

    @property
    def api_pid(self) -> int | None:
        """The API process's pid (None: the API runs in this process)."""
        return self._http.pid if isinstance(self._http, ApiProcess) else None

    async def _clear_previous_runs(self) -> None:
        """One process with every role: chargers a crashed earlier run left `connected` are disconnected as
        the `online` presence of a gateway does it over MQTT (docs/bus.md, "Gateway presence")."""
        now = GatewayPresence(self.settings.gateway_id, self.bus.run_id, utcnow())
        cleared = await apply_presence(self.sessions, now, self.bus.publish)
        if cleared:
            log.info("%d chargers a previous run left connected marked disconnected", cleared)

    def _fail(self, exc: BaseException) -> None:
        """A part that cannot go on stops the whole process (`run_forever` raises `exc`)."""
        if self._failed is not None and not self._failed.done():
            self._failed.set_exception(exc)

    async def stop(self) -> None:
        """Shut down in the order that loses nothing acknowledged: stop taking API requests, stop accepting
        chargers and close them (1001) letting in-flight calls finish, stop the ops roles, commit what ingest
        was handed, then close the bus and the database. Each step is bounded (`STOP_SECONDS` in all), so a
        stuck part cannot hold the process: SIGTERM under load exits."""
        deadline = time.monotonic() + STOP_SECONDS
        steps: list[tuple[str, Callable[[], Awaitable[None]] | None]] = [
            ("loop lag", self._lag.stop if self._lag is not None else None),
            ("young collector", self._young.stop if self._young is not None else None),
            ("heap keeper", self._heap.stop if self._heap is not None else None),
            ("http", self._http.stop if self._http is not None else None),
            ("metrics listener", self._metrics.stop if self._metrics is not None else None),
            ("gateway", self.gateway.stop if self.gateway is not None else None),
            ("fleet metrics", self.fleet_metrics.stop if self.fleet_metrics is not None else None),
            ("ops", self.ops.stop if self.ops is not None else None),
            ("webhooks", self.webhooks.stop if self.webhooks is not None else None),
            ("site planner", self.site_planner.stop if self.site_planner is not None else None),
            ("certificate renewal", self.certificate_renewal.stop if self.certificate_renewal else None),
            ("ev charging", self.ev_charging.stop if self.ev_charging is not None else None),
            ("cost updates", self.cost_updater.stop if self.cost_updater is not None else None),
            ("local lists", self.local_lists.stop if self.local_lists is not None else None),
            ("site telemetry", self.site_telemetry.stop if self.site_telemetry is not None else None),
            ("gateway presence", self.gateway_presence.stop if self.gateway_presence is not None else None),
            ("ops bus", self._ops_bus.close if self._ops_bus is not None else None),
            ("maintenance", self.maintenance.stop if self.maintenance is not None else None),
            ("ingest", self.writer.stop if self.writer is not None else None),
            ("bus", self.bus.close),
            ("database", self.engine.dispose),
        ]
        for name, step in steps:
            if step is None:
                continue
            left = max(0.5, deadline - time.monotonic())
            try:
                await asyncio.wait_for(step(), left)
            except TimeoutError:
                log.warning("shutdown: %s did not stop within %.1f s; going on", name, left)
            except Exception as exc:  # one part failing to stop must not keep the others running
                log.warning("shutdown: stopping %s failed: %s", name, exc)

    def _watch_heap(self) -> None:
        """A long-running `serve`: GC pauses and loop lag measured; the gateway's connections frozen out of
        the collector once each wave of them has settled (`telemetry.heap`)."""
        observe_gc()
        self._lag = LoopLag()
        self._lag.start()
        self._young = YoungCollector()
        self._young.start()
        gateway = self.gateway
        if gateway is not None:
            self._heap = HeapKeeper(lambda: gateway.opened)
            self._heap.start()

    async def run_forever(self) -> None:
        """Start, serve until cancelled, stop; a failed start stops what had started."""
        try:
            await self.start()
            tune_interpreter()
            self._watch_heap()
            assert self._failed is not None
            await self._failed
        finally:
            await self.stop()
