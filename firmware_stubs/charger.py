"""Version-neutral simulated charger: connection, OCPP-J call discipline, boot, sessions, faults, jobs.

One instance is one charging station with one websocket and one long-lived task. Everything that
depends on the OCPP version (message shapes, enum spellings) is delegated to ``self.dialect``.

The single task multiplexes the socket and all timers: it awaits ``ws.recv()`` inside an
``asyncio.timeout_at`` whose deadline is the next timer; external commands (``plug_in`` ...) mutate
state and "poke" that timeout so the loop wakes immediately. ``recv()`` is cancellation-safe.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import hashlib
import logging
import math
import random
import uuid
from collections.abc import Callable, Coroutine, MutableMapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI
from websockets.typing import Subprotocol

from firmware_stubs import rpc, schemas, transfer
from firmware_stubs.der import GRID_TRIPS
from firmware_stubs.model import (
    AC_PHASE_VOLTAGE,
    EV,
    MEASURANDS,
    V2X_MEASURANDS,
    ChargingProfile,
    ConfigStore,
    Period,
    SimClock,
    charging_power,
    dc_voltage,
    utc_now,
)

if TYPE_CHECKING:
    from firmware_stubs.dialects.base import Dialect

logger = logging.getLogger("firmware_stubs")

FAULT_CODES = (
    "ConnectorLockFailure",
    "EVCommunicationError",
    "GroundFailure",
    "HighTemperature",
    "InternalError",
    "LocalListConflict",
    "OtherError",
    "OverCurrentFailure",
    "OverVoltage",
    "PowerMeterFailure",
    "PowerSwitchFailure",
    "ReaderFailure",
    "ResetFailure",
    "UnderVoltage",
    "WeakSignal",
)
RECEIVED_CALLS_KEPT = 200


class _CpLogger(logging.LoggerAdapter):  # type: ignore[type-arg]
    """Prefixes messages with the charge point id and adds it as ``extra['charge_point_id']``."""

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, MutableMapping[str, Any]]:
        extra = dict(self.extra or {})
        extra.update(kwargs.get("extra") or {})
        kwargs["extra"] = extra
        return f"[{extra['charge_point_id']}] {msg}", kwargs


@dataclass(slots=True)
class SimEnvironment:
    """Settings shared by all chargers of a fleet: one object instead of one copy per charger."""

    time_scale: float = 1.0
    sample_interval: float = 60.0
    session_rate: float = 0.0  # probability a free connector gets an EV per simulated minute
    fault_rate: float = 0.0  # probability of a random fault per charger per simulated hour
    strict: bool = False
    call_timeout: float = 30.0
    tick: float = 1.0  # wall seconds between physics/arrival/fault ticks
    reboot_delay: float = 1.0
    firmware_step: float = 0.5  # wall seconds between firmware status steps
    transfer_timeout: float = 10.0
    backoff_base: float = 1.0
    backoff_cap: float = 60.0
    queue_limit: int = 1000
    seed: int = 0
    id_tags: tuple[str, ...] = tuple(f"SIMTAG{n:04d}" for n in range(100))
    clock: SimClock = field(init=False)
    jitter: random.Random = field(init=False)  # shared: jitter must not disturb per-charger seeded streams

    def __post_init__(self) -> None:
        self.clock = SimClock(self.time_scale)
        self.jitter = random.Random(self.seed ^ 0x5EED)


class Reservation:
    __slots__ = ("expiry", "id", "id_tag")

    def __init__(self, reservation_id: int, id_tag: str, expiry: dt.datetime) -> None:
        self.id = reservation_id
        self.id_tag = id_tag
        self.expiry = expiry


class Transaction:
    """One charging session; ``local_id`` is the 2.0.1 id, ``server_id`` the CSMS-issued 1.6 id."""

    __slots__ = (
        "charging_state",
        "cost",
        "id_tag",
        "local_id",
        "meter_start",
        "remote_start_id",
        "reservation_id",
        "seq",
        "server_id",
        "started",
    )

    def __init__(self, local_id: str, id_tag: str, meter_start: float) -> None:
        self.local_id = local_id
        self.server_id: int | None = None
        self.id_tag = id_tag
        self.meter_start = meter_start
        self.started = utc_now()
        self.seq = 0
        self.remote_start_id: int | None = None
        self.reservation_id: int | None = None
        self.charging_state = ""
        self.cost: float | None = None

    def matches(self, transaction_id: object) -> bool:
        return str(transaction_id) in (self.local_id, str(self.server_id))

    def next_seq(self) -> int:
        seq = self.seq
        self.seq += 1
        return seq


class Connector:
    """Connector ``index`` (0 = the whole station, used for station-wide status/faults/availability)."""

    __slots__ = (
        "depart_at",
        "ev",
        "export_w",
        "export_wh",
        "fault",
        "fault_clear_at",
        "finished",
        "index",
        "last_sim",
        "meter_wh",
        "operative",
        "pending_operative",
        "pending_tag",
        "power_w",
        "reservation",
        "status",
        "tx",
        "vendor_fault",
    )

    def __init__(self, index: int) -> None:
        self.index = index
        self.status = ""
        self.operative = True
        self.pending_operative: bool | None = None
        self.fault: str | None = None
        self.vendor_fault: str | None = None
        self.fault_clear_at: float | None = None
        self.ev: EV | None = None
        self.tx: Transaction | None = None
        self.finished = False
        self.reservation: Reservation | None = None
        self.pending_tag: str | None = None
        self.meter_wh = 0.0
        self.power_w = 0.0
        self.export_w = 0.0  # V2X: power discharged from the EV into the site (Power.Active.Export)
        self.export_wh = 0.0
        self.last_sim = 0.0
        self.depart_at: float | None = None


class OutboundCall:
    """A queued CALL. Transactional calls survive disconnects and are retried; others are dropped."""

    __slots__ = (
        "action",
        "attempts",
        "deadline",
        "droppable",
        "on_result",
        "payload",
        "transactional",
        "triggered",
        "tx",
        "uid",
    )

    def __init__(
        self,
        action: str,
        payload: dict[str, Any],
        *,
        tx: Transaction | None = None,
        transactional: bool = False,
        triggered: bool = False,
        droppable: bool = False,
        on_result: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        self.action = action
        self.payload = payload
        self.tx = tx
        self.transactional = transactional
        self.triggered = triggered
        self.droppable = droppable
        self.on_result = on_result
        self.attempts = 0
        self.uid = ""
        self.deadline = 0.0


Sample = tuple[str, float, str, str | None]  # measurand, value, unit, phase


def _chance(rate: float, periods: float) -> float:
    """Probability of at least one arrival in `periods` at `rate` arrivals per period (Poisson), so any
    non-negative rate works, including more than one per period."""
    return 1.0 - math.exp(-rate * periods)


async def _poll(predicate: Callable[[], bool], timeout: float) -> None:
    """Poll instead of keeping an asyncio.Event per charger (rarely used, would cost memory x 10k)."""
    async with asyncio.timeout(timeout):
        while True:
            if predicate():
                return
            await asyncio.sleep(0.02)


class SimulatedCharger:
    """One simulated charging station speaking OCPP 1.6J or 2.0.1 to any central system."""

    fault_codes: tuple[str, ...] = FAULT_CODES  # what inject_fault and random faults may raise

    __slots__ = (
        "_auth_cache",
        "_boot_due",
        "_boot_failures",
        "_boot_reason",
        "_connect_at",
        "_extras",
        "_failures",
        "_heartbeat_due",
        "_hold_until",
        "_jobs",
        "_last_tick_sim",
        "_local_list",
        "_msg_seq",
        "_outstanding",
        "_profiles",
        "_queue",
        "_reboot",
        "_reset_on_idle",
        "_sample_due",
        "_task",
        "_tick_due",
        "_waiter",
        "_ws",
        "boots_accepted",
        "call_errors",
        "calls_received",
        "calls_sent",
        "config",
        "connected_count",
        "connectors",
        "dc",
        "dialect",
        "energy_wh",
        "env",
        "faults",
        "firmware_version",
        "id",
        "local_list_version",
        "max_discharge_w",
        "max_power_w",
        "model",
        "password",
        "received_calls",
        "registration",
        "rng",
        "schema_violations",
        "serial",
        "sessions_completed",
        "sessions_started",
        "url",
        "vendor",
    )

    def __init__(
        self,
        charge_point_id: str,
        csms_url: str,
        *,
        protocol: str = "ocpp1.6",
        password: str | None = None,
        connectors: int = 1,
        max_power_w: float = 22_000.0,
        dc: bool = False,
        rng: random.Random | None = None,
        env: SimEnvironment | None = None,
        vendor: str = "ChargeOps",
        model: str = "SimCharger",
        firmware_version: str = "1.0.0",
        max_discharge_w: float = 0.0,
    ) -> None:
        from firmware_stubs.dialects import dialect_for

        if connectors < 1:
            raise ValueError("a charger needs at least one connector")
        if max_discharge_w > 0 and protocol != "ocpp2.1":
            raise ValueError("a bidirectional (V2X) charger speaks ocpp2.1: DER control needs it")
        self.id = charge_point_id
        self.url = f"{csms_url.rstrip('/')}/{charge_point_id}"
        self.password = password
        self.dialect: Dialect = dialect_for(protocol)
        self.env = env or SimEnvironment()
        self.rng = rng or random.Random(charge_point_id)
        self.connectors = [Connector(i) for i in range(connectors + 1)]
        self.max_power_w = max_power_w
        self.max_discharge_w = max_discharge_w  # > 0: bidirectional, rated discharge power
        self.dc = dc
        self.vendor = vendor
        self.model = model
        self.serial = f"SN-{charge_point_id}"
        self.firmware_version = firmware_version
        overrides = {"NumberOfConnectors": str(connectors)}
        if self.env.sample_interval != 60.0:
            # fractional seconds are allowed here so tests and demos can sample faster than 1 Hz
            overrides["MeterValueSampleInterval"] = f"{max(0.0, self.env.sample_interval):g}"
        if max_discharge_w > 0:
            overrides["MeterValuesSampledData"] = ",".join(MEASURANDS + V2X_MEASURANDS)
            overrides["StopTxnSampledData"] = "Energy.Active.Import.Register,Energy.Active.Export.Register"
        self.config = ConfigStore(self.dialect.config_defs, overrides)
        self.registration = "Unknown"
        self.received_calls: list[tuple[str, dict[str, Any]]] = []
        self.schema_violations: list[str] = []
        self.calls_sent = self.calls_received = self.call_errors = 0
        self.boots_accepted = self.sessions_started = self.sessions_completed = 0
        self.faults = self.connected_count = 0
        self.energy_wh = 0.0
        self.local_list_version = 0
        self._local_list: dict[str, str] | None = None
        self._auth_cache: dict[str, str] | None = None
        self._profiles: list[ChargingProfile] | None = None
        self._extras: dict[str, Any] | None = None
        self._jobs: set[asyncio.Task[None]] | None = None
        self._task: asyncio.Task[None] | None = None
        self._ws: ClientConnection | None = None
        self._waiter: asyncio.Timeout | None = None
        self._queue: list[OutboundCall] = []
        self._outstanding: OutboundCall | None = None
        self._msg_seq = 0
        self._failures = 0
        self._boot_failures = 0
        self._boot_reason = "PowerUp"
        self._connect_at = self._boot_due = self._hold_until = 0.0
        self._heartbeat_due = self._sample_due = self._tick_due = math.inf
        self._last_tick_sim = 0.0
        self._reboot: tuple[str, float] | None = None
        self._reset_on_idle: str | None = None

    # ------------------------------------------------------------------ observable state
    @property
    def log(self) -> _CpLogger:
        """Created on demand: a stored adapter per charger would cost memory for 10k chargers."""
        return _CpLogger(logger, {"charge_point_id": self.id})

    @property
    def connected(self) -> bool:
        return self._ws is not None

    @property
    def accepted(self) -> bool:
        return self._ws is not None and self.registration == "Accepted"

    @property
    def queued(self) -> int:
        return len(self._queue) + (self._outstanding is not None)

    def status(self, connector: int) -> str:
        """Neutral (1.6 spelling) status of a connector, e.g. 'Charging', 'Faulted'."""
        return self.connectors[connector].status

    def transaction(self, connector: int) -> Transaction | None:
        return self.connectors[connector].tx

    @property
    def transactions(self) -> list[Transaction]:
        return [c.tx for c in self.connectors if c.tx is not None]

    @property
    def charging_profiles(self) -> list[ChargingProfile]:
        return list(self._profiles or ())

    @property
    def local_list(self) -> dict[str, str]:
        return dict(self._local_list or {})

    def extras(self) -> dict[str, Any]:
        """Rarely used state (monitors, display messages, certificates ...) allocated on first use."""
        if self._extras is None:
            self._extras = {}
        return self._extras

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        """Start the charger's single task (connect, boot, run)."""
        if self._task is None:
            for c in self.connectors:
                c.status = self.derive_status(c)
            self._task = asyncio.create_task(self._run(), name=f"charger-{self.id}")

    async def stop(self) -> None:
        """Cancel the task and background jobs and close the socket."""
        task, self._task = self._task, None
        for job in list(self._jobs or ()):
            job.cancel()
        if task is not None:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass

    async def wait_until_accepted(self, timeout: float) -> None:
        """Wait until BootNotification was Accepted on the current connection (TimeoutError otherwise)."""
        await _poll(lambda: self.accepted, timeout)

    async def drop_connection(self, offline_for: float = 0.0) -> None:
        """Abruptly kill the TCP connection (no close handshake) and stay offline ``offline_for`` s."""
        loop = asyncio.get_running_loop()
        self._hold_until = loop.time() + offline_for
        ws = self._ws
        if ws is None:
            return
        ws.transport.abort()
        await _poll(lambda: self._ws is not ws, 5.0)

    # ------------------------------------------------------------------ driver-side actions
    async def plug_in(self, connector: int, id_tag: str | None, *, ev: EV | None = None) -> None:
        """EV plugged in and (optionally) id tag presented: authorize, then start a session."""
        self._plug(self._connector(connector), id_tag, ev)

    async def unplug(self, connector: int) -> None:
        """EV unplugged: ends the session (EVDisconnected) and frees the connector."""
        self._unplug(self._connector(connector))

    async def present_id_tag(self, connector: int, id_tag: str) -> None:
        """Badge swipe: stops the running session with the same tag, or authorizes a plugged-in EV."""
        self._present_tag(self._connector(connector), id_tag)

    def inject_fault(
        self, connector: int, code: str, *, vendor_code: str | None = None, clear_after: float | None = None
    ) -> None:
        """Raise a hardware fault (one of ``fault_codes``); ends any session on it."""
        if code not in self.fault_codes:
            raise ValueError(f"unknown fault code {code!r}; use one of {self.fault_codes}")
        c = self._connector(connector, allow_station=True)
        c.fault = code
        c.vendor_fault = vendor_code
        c.fault_clear_at = self.env.clock.now() + clear_after if clear_after else None
        self.faults += 1
        self.log.warning("fault %s on connector %d (vendor code %s)", code, connector, vendor_code)
        for victim in self.connectors[1:] if connector == 0 else [c]:
            if victim.tx is not None:
                self._end_tx(victim, "Fault")
        self.dialect.fault_changed(self, c, True)
        self._refresh_all()

    def clear_fault(self, connector: int) -> None:
        """Clear a fault; the connector returns to its normal status."""
        c = self._connector(connector, allow_station=True)
        if c.fault is None:
            return
        self.log.info("fault %s on connector %d cleared", c.fault, connector)
        self.dialect.fault_changed(self, c, False)
        c.fault = c.vendor_fault = None
        c.fault_clear_at = None
        self._refresh_all()

    def _connector(self, index: int, allow_station: bool = False) -> Connector:
        if not (0 if allow_station else 1) <= index < len(self.connectors):
            raise ValueError(f"no connector {index} on {self.id}")
        return self.connectors[index]

    # ------------------------------------------------------------------ main loop
    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        self._tick_due = loop.time() + self.env.tick
        self._last_tick_sim = self.env.clock.now()
        for c in self.connectors:
            c.last_sim = self._last_tick_sim
        try:
            while True:
                if self._ws is None and loop.time() >= self._connect_at:
                    await self._connect()
                self._on_timers(loop.time())
                ws = self._ws
                try:
                    if ws is not None:
                        await self._pump(ws, loop.time())
                        if self._reboot is not None and self._reboot_ready(loop.time()):
                            await self._do_reboot(ws)
                            continue
                    elif self._reboot is not None:
                        self._boot_reason = self._reboot[0]
                        self._reboot = None
                    raw = await self._wait(self._next_deadline(loop.time()), ws)
                    if raw is not None and ws is not None:
                        await self._on_frame(ws, raw)
                except ConnectionClosed as exc:
                    self._lost(f"connection closed: {exc}")
        finally:
            ws, self._ws = self._ws, None
            if ws is not None:
                try:
                    async with asyncio.timeout(1.0):
                        await ws.close()
                except (TimeoutError, OSError):
                    ws.transport.abort()

    async def _wait(self, deadline: float, ws: ClientConnection | None) -> str | bytes | None:
        """Receive one frame or return None when the next timer is due / the loop was poked."""
        try:
            async with asyncio.timeout_at(None if math.isinf(deadline) else deadline) as waiter:
                self._waiter = waiter
                if ws is None:
                    await asyncio.sleep(3600.0)
                    return None
                return await ws.recv()
        except TimeoutError:
            return None
        finally:
            self._waiter = None

    def _poke(self) -> None:
        """Wake the loop now (state changed from outside it)."""
        waiter = self._waiter
        if waiter is not None and not waiter.expired():
            waiter.reschedule(asyncio.get_running_loop().time())

    def _backoff(self, failures: int) -> float:
        base = min(self.env.backoff_cap, self.env.backoff_base * 2 ** max(0, failures - 1))
        return base * (0.5 + 0.5 * self.env.jitter.random())

    async def _connect(self) -> None:
        loop = asyncio.get_running_loop()
        headers = {}
        if self.password is not None:
            token = base64.b64encode(f"{self.id}:{self.password}".encode()).decode()
            headers["Authorization"] = f"Basic {token}"
        proto = self.dialect.subprotocol
        try:
            ws = await connect(
                self.url,
                subprotocols=[Subprotocol(proto)],
                additional_headers=headers,
                compression=None,
                ping_interval=None,
                open_timeout=min(10.0, self.env.call_timeout),
                close_timeout=1.0,
                max_queue=4,
            )
        except (OSError, TimeoutError, InvalidHandshake, InvalidURI) as exc:
            self._failures += 1
            delay = self._backoff(self._failures)
            self._connect_at = loop.time() + delay
            self.log.info("connect to %s failed (%s); retry in %.1fs", self.url, exc, delay)
            return
        if ws.subprotocol != proto:
            self.log.warning("server did not accept subprotocol %s (got %s)", proto, ws.subprotocol)
            await ws.close()
            self._failures += 1
            self._connect_at = loop.time() + self._backoff(self._failures)
            return
        self._ws = ws
        self._failures = 0
        self.connected_count += 1
        self.registration = "Unknown"
        self._boot_due = loop.time()
        self.log.info("connected to %s (%s)", self.url, proto)

    def _lost(self, why: str) -> None:
        """Connection gone: keep transactional calls for later, forget everything else."""
        loop = asyncio.get_running_loop()
        self.log.info("offline: %s", why)
        self._ws = None
        self.registration = "Unknown"
        item, self._outstanding = self._outstanding, None
        if item is not None and item.transactional:
            self._queue.insert(0, item)
        self._queue = [q for q in self._queue if q.transactional]
        self._heartbeat_due = math.inf
        self._failures = max(self._failures, 1)
        self._connect_at = max(loop.time() + self._backoff(self._failures), self._hold_until)

    def _next_deadline(self, now: float) -> float:
        deadline = min(self._tick_due, self._sample_due)
        if self._ws is None:
            return min(deadline, self._connect_at)
        if self._reboot is not None:
            deadline = min(deadline, self._reboot[1], now + 0.1)
        if self._outstanding is not None:
            return min(deadline, self._outstanding.deadline)
        if self.registration != "Accepted":
            return min(deadline, self._boot_due)
        return min(deadline, self._heartbeat_due)

    def _on_timers(self, now: float) -> None:
        item = self._outstanding
        if item is not None and now >= item.deadline:
            self._outstanding = None
            self.call_errors += 1
            self.log.warning("%s timed out after %.0fs", item.action, self.env.call_timeout)
            self._retry(item, now)
        if self.accepted and now >= self._heartbeat_due:
            self.emit("Heartbeat", {})
            self._heartbeat_due = now + self._heartbeat_interval()
        if now >= self._sample_due:
            self._sample_periodic(now)
        if now >= self._tick_due:
            self._tick_due = now + self.env.tick
            self._sim_tick()

    def _retry(self, item: OutboundCall, now: float) -> None:
        if item.action == "BootNotification":
            self._boot_failures += 1
            self._boot_due = now + self._backoff(self._boot_failures)
            return
        item.attempts += 1
        if item.transactional and item.attempts < max(
            1, self.config.get_int("TransactionMessageAttempts", 3)
        ):
            self._queue.insert(0, item)
        else:
            self.log.warning("giving up on %s after %d attempt(s)", item.action, item.attempts)

    def _heartbeat_interval(self) -> float:
        interval = self.config.get_int("HeartbeatInterval", 300)
        return float(interval) if interval > 0 else math.inf

    # ------------------------------------------------------------------ CALL discipline
    def emit(
        self,
        action: str,
        payload: dict[str, Any],
        *,
        tx: Transaction | None = None,
        transactional: bool = False,
        triggered: bool = False,
        droppable: bool = False,
        on_result: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        """Queue a CALL. Non-transactional calls raised while offline are dropped (boot re-reports state)."""
        if not transactional and self._ws is None:
            return
        queue = self._queue
        if transactional and len(queue) >= self.env.queue_limit:
            victim = next((i for i, q in enumerate(queue) if q.droppable), 0)
            self.log.warning("offline queue full: dropping queued %s", queue[victim].action)
            del queue[victim]
        queue.append(
            OutboundCall(
                action,
                payload,
                tx=tx,
                transactional=transactional,
                triggered=triggered,
                droppable=droppable,
                on_result=on_result,
            )
        )
        self._poke()

    async def _pump(self, ws: ClientConnection, now: float) -> None:
        """Send the next CALL if none is outstanding; before Accepted only boot (or triggered) calls."""
        if self._outstanding is not None:
            return
        queue = self._queue
        if self.registration != "Accepted":
            if self.registration == "Pending":
                for i, item in enumerate(queue):
                    if item.triggered:
                        del queue[i]
                        await self._send_call(ws, item, now)
                        return
            if now >= self._boot_due:
                self._boot_due = math.inf
                action, payload = self.dialect.boot_request(self, self._boot_reason)
                await self._send_call(ws, OutboundCall(action, payload, on_result=self._on_boot_result), now)
            return
        if queue:
            await self._send_call(ws, queue.pop(0), now)

    async def _send_call(self, ws: ClientConnection, item: OutboundCall, now: float) -> None:
        self._msg_seq += 1
        item.uid = str(self._msg_seq)
        item.deadline = now + self.env.call_timeout
        payload = self.dialect.finalize(self, item)
        if self.env.strict:
            self._check(item.action, payload, response=False, sent=True)
        self._outstanding = item
        await ws.send(rpc.dumps([rpc.CALL, item.uid, item.action, payload]), text=True)
        self.calls_sent += 1

    def _check(self, action: str, payload: Any, *, response: bool, sent: bool) -> bool:
        """Strict-mode schema check; records and logs violations, returns True when valid."""
        err = schemas.validate(self.dialect.version, action, payload, response=response)
        if err is None:
            return True
        kind = schemas.schema_name(self.dialect.version, action, response)
        text = f"{'sent' if sent else 'received'} {kind}: {schemas.describe(err)}"
        self.schema_violations.append(text)
        self.log.warning("schema violation: %s", text)
        return False

    async def _on_frame(self, ws: ClientConnection, raw: str | bytes) -> None:
        try:
            frame = rpc.parse(raw)
        except rpc.FrameError as exc:
            self.log.warning("bad frame from CSMS: %s", exc.description)
            if self.env.strict:
                self.schema_violations.append(f"received bad frame: {exc.description}")
            code = self.dialect.error_name(exc.code)
            await ws.send(rpc.dumps([rpc.CALLERROR, exc.unique_id, code, exc.description, {}]), text=True)
            return
        if frame[0] == rpc.CALL:
            await self._answer(ws, frame[1], frame[2], frame[3])
        else:
            self._on_reply(frame)

    def _on_reply(self, frame: list[Any]) -> None:
        item = self._outstanding
        if item is None or frame[1] != item.uid:
            self.log.warning("unexpected reply %r (no matching outstanding call)", frame[1])
            return
        self._outstanding = None
        if frame[0] == rpc.CALLERROR:
            self.call_errors += 1
            self.log.warning("%s rejected with CALLERROR %s %s", item.action, frame[2], frame[3])
            self._retry(item, asyncio.get_running_loop().time())
            return
        payload = frame[2]
        if self.env.strict:
            self._check(item.action, payload, response=True, sent=False)
        if item.on_result is not None:
            try:
                item.on_result(payload)
            except (KeyError, TypeError, ValueError, AttributeError) as exc:
                self.log.warning("could not use %s response %r: %r", item.action, payload, exc)

    async def _answer(self, ws: ClientConnection, uid: str, action: str, payload: dict[str, Any]) -> None:
        """Answer a CSMS-initiated CALL: validate, run the dialect handler, reply, then effects follow."""
        self.calls_received += 1
        self.received_calls.append((action, payload))
        if len(self.received_calls) > RECEIVED_CALLS_KEPT:
            del self.received_calls[0]
        self.log.info("CSMS called %s %s", action, payload)
        version = self.dialect.version
        handler = self.dialect.handler(action)
        frame: list[Any]
        try:
            if handler is None:
                code = "NotSupported" if schemas.has_schema(version, action) else "NotImplemented"
                raise rpc.CallError(code, f"{action} is not supported by this charger")
            err = schemas.validate(version, action, payload, response=False)
            if err is not None:
                if self.env.strict:
                    self._check(action, payload, response=False, sent=False)
                raise rpc.CallError(schemas.error_code(err), schemas.describe(err)[:255])
            response = handler(self, payload)
        except rpc.CallError as exc:
            self.log.warning("answering %s with CALLERROR %s: %s", action, exc.code, exc.description)
            frame = [rpc.CALLERROR, uid, self.dialect.error_name(exc.code), exc.description, exc.details]
        except Exception:
            self.log.exception("handler for %s failed", action)
            frame = [rpc.CALLERROR, uid, "InternalError", f"{action} handler failed", {}]
        else:
            if self.env.strict:
                self._check(action, response, response=True, sent=True)
            frame = [rpc.CALLRESULT, uid, response]
        await ws.send(rpc.dumps(frame), text=True)

    # ------------------------------------------------------------------ boot & reboot
    def _on_boot_result(self, payload: dict[str, Any]) -> None:
        now = asyncio.get_running_loop().time()
        status = payload.get("status", "Rejected")
        interval = int(payload.get("interval") or 0)
        if status == "Accepted":
            self.registration = "Accepted"
            self.boots_accepted += 1
            self._boot_failures = 0
            if interval > 0:
                self.config.put("HeartbeatInterval", str(interval))
            self._heartbeat_due = now + self._heartbeat_interval()
            self.log.info("boot accepted (heartbeat %ss)", self.config.get("HeartbeatInterval"))
            self._boot_reason = "PowerUp"
            self.dialect.after_boot(self)
            return
        self.registration = status
        self._boot_failures += 1
        delay = interval if interval > 0 else self._backoff(self._boot_failures)
        self._boot_due = now + delay
        self.log.info("boot %s; retry in %.1fs", status, delay)

    def trigger_boot(self) -> None:
        """TriggerMessage(BootNotification): a boot with reason Triggered, even when already accepted."""
        action, payload = self.dialect.boot_request(self, "Triggered")
        self.emit(action, payload, triggered=True, on_result=self._on_boot_result)

    def request_reboot(self, boot_reason: str, *, hard: bool, stop_reason: str) -> None:
        """Stop all sessions, then close and reconnect; soft reboots first flush queued messages (≤5 s)."""
        for c in self.connectors:
            if c.tx is not None:
                self._end_tx(c, stop_reason)
        self._reboot = (boot_reason, asyncio.get_running_loop().time() + (0.0 if hard else 5.0))
        self._poke()

    def reboot_when_idle(self, boot_reason: str) -> bool:
        """Reset OnIdle: reboot now if no session runs, else after the last one ends (returns True if now)."""
        if any(c.tx for c in self.connectors):
            self._reset_on_idle = boot_reason
            return False
        self.request_reboot(boot_reason, hard=False, stop_reason="Reboot")
        return True

    def _reboot_ready(self, now: float) -> bool:
        assert self._reboot is not None
        return now >= self._reboot[1] or (not self._queue and self._outstanding is None)

    async def _do_reboot(self, ws: ClientConnection) -> None:
        assert self._reboot is not None
        reason = self._reboot[0]
        self._reboot = None
        self.log.info("rebooting (%s)", reason)
        await ws.close()
        self._lost("reboot")
        self._failures = 0
        self._boot_reason = reason
        self._connect_at = asyncio.get_running_loop().time() + self.env.reboot_delay

    # ------------------------------------------------------------------ sessions
    def _plug(self, c: Connector, id_tag: str | None, ev: EV | None) -> None:
        if c.ev is not None:
            raise RuntimeError(f"connector {c.index} of {self.id} already has an EV plugged in")
        c.ev = ev or EV.random(self.rng, self.dc)
        c.finished = False
        c.depart_at = None
        c.last_sim = self.env.clock.now()
        self.log.info("EV plugged into connector %d (SoC %.0f%%)", c.index, c.ev.soc)
        self._refresh(c)
        if id_tag:
            self._present_tag(c, id_tag)

    def _unplug(self, c: Connector) -> None:
        if c.tx is not None:
            self._end_tx(c, "EVDisconnected")
        c.ev = None
        c.finished = False
        c.pending_tag = None
        c.depart_at = None
        self.log.info("EV unplugged from connector %d", c.index)
        self._refresh(c)

    def _present_tag(self, c: Connector, tag: str) -> None:
        if c.tx is not None:
            if c.tx.id_tag == tag:
                self._end_tx(c, "Local")
            return
        if c.fault or not c.operative or not self.connectors[0].operative:
            self.log.info("connector %d cannot charge now (status %s)", c.index, c.status)
            return
        if c.reservation is not None and c.reservation.id_tag != tag:
            self.log.info("connector %d reserved for another id tag", c.index)
            return
        self._authorize(c, tag)

    def _authorize(self, c: Connector, tag: str) -> None:
        c.pending_tag = tag
        if self.accepted:
            self.dialect.authorize(self, c, tag)
            return
        status = (self._local_list or {}).get(tag) or (self._auth_cache or {}).get(tag)
        if status == "Accepted" and self.config.get_bool("LocalAuthorizeOffline"):
            self.log.info("offline: id tag %s authorized locally", tag)
            c.pending_tag = None
            self._begin_tx(c, tag)
        else:
            self.log.info("offline: id tag %s unknown locally, cannot authorize", tag)

    def authorized(self, c: Connector, tag: str, status: str) -> None:
        """Authorize result from the CSMS: only an Accepted id tag leads to charging."""
        if self.config.get_bool("AuthorizationCacheEnabled"):
            if self._auth_cache is None:
                self._auth_cache = {}
            self._auth_cache[tag] = status
        if c.pending_tag != tag:
            return
        c.pending_tag = None
        if status == "Accepted" and c.ev is not None and c.tx is None and not c.fault:
            self._begin_tx(c, tag)
        else:
            self.log.info("id tag %s not accepted (%s): no charge on connector %d", tag, status, c.index)

    def _begin_tx(self, c: Connector, tag: str, remote_start_id: int | None = None) -> Transaction:
        tx = Transaction(str(uuid.UUID(int=self.rng.getrandbits(128))), tag, c.meter_wh)
        tx.remote_start_id = remote_start_id
        if c.reservation is not None and c.reservation.id_tag == tag:
            tx.reservation_id = c.reservation.id
            c.reservation = None
        c.tx = tx
        self.sessions_started += 1
        self._advance(c)
        self.log.info("session %s started on connector %d for %s", tx.local_id, c.index, tag)
        self.dialect.tx_started(self, c, tx)
        if math.isinf(self._sample_due):
            self._sample_due = asyncio.get_running_loop().time() + self._sample_interval()
        self._refresh(c)
        return tx

    def tx_confirmed(self, c: Connector, tx: Transaction, id_status: str | None) -> None:
        """Start confirmation: an id tag the CSMS does not accept ends the session (DeAuthorized)."""
        if id_status not in (None, "Accepted") and c.tx is tx:
            if self.config.get_bool("StopTransactionOnInvalidId"):
                self.log.info("CSMS rejected id tag %s (%s): stopping", tx.id_tag, id_status)
                self._end_tx(c, "DeAuthorized")

    def _end_tx(self, c: Connector, reason: str) -> None:
        tx = c.tx
        if tx is None:
            return
        self._advance(c)
        c.tx = None
        c.power_w = 0.0
        c.finished = c.ev is not None
        self.sessions_completed += 1
        self.log.info(
            "session %s on connector %d ended (%s), %.0f Wh",
            tx.local_id,
            c.index,
            reason,
            c.meter_wh - tx.meter_start,
        )
        self.dialect.tx_ended(self, c, tx, reason)
        if c.pending_operative is not None:
            c.operative, c.pending_operative = c.pending_operative, None
        self._refresh(c)
        if not any(x.tx for x in self.connectors):
            self._sample_due = math.inf
            if self._reset_on_idle is not None:
                reason_boot, self._reset_on_idle = self._reset_on_idle, None
                self.request_reboot(reason_boot, hard=False, stop_reason="Reboot")

    def stop_transaction(self, transaction_id: object, reason: str = "Remote") -> bool:
        """RemoteStop/RequestStop: True if a running session with this id was stopped."""
        for c in self.connectors:
            if c.tx is not None and c.tx.matches(transaction_id):
                self._end_tx(c, reason)
                return True
        return False

    def remote_start(
        self,
        connector: int | None,
        tag: str,
        *,
        remote_start_id: int | None = None,
        profile: ChargingProfile | None = None,
    ) -> Connector | None:
        """RemoteStart/RequestStart: pick a free connector, plug a driver's EV in if none, start.

        Returns the connector used, or None (Rejected).
        """
        candidates = self.connectors[1:] if not connector else [self.connectors[connector]]
        if connector and connector >= len(self.connectors):
            return None
        for c in candidates:
            if c.tx is None and c.fault is None and c.operative and c.pending_tag is None:
                if c.reservation is not None and c.reservation.id_tag != tag:
                    continue
                if c.ev is None:
                    c.ev = EV.random(self.rng, self.dc)
                    c.finished = False
                    c.last_sim = self.env.clock.now()
                if self.config.get_bool("AuthorizeRemoteTxRequests") and self.accepted:
                    self._authorize(c, tag)
                else:
                    tx = self._begin_tx(c, tag, remote_start_id)
                    if profile is not None:
                        profile.connector = c.index
                        profile.transaction_id = tx.local_id
                        self.set_profile(profile)
                return c
        return None

    def unlock(self, connector: int, *, stop_running: bool) -> str:
        """'Unlocked', 'UnlockFailed' (lock fault), 'Ongoing' (session, may not stop) or 'Unknown'."""
        if not 1 <= connector < len(self.connectors):
            return "Unknown"
        c = self.connectors[connector]
        if c.fault == "ConnectorLockFailure":
            return "UnlockFailed"
        if c.tx is not None:
            if not stop_running:
                return "Ongoing"
            self._end_tx(c, "UnlockCommand")
        return "Unlocked"

    def change_availability(self, connector: int, operative: bool) -> str:
        """'Accepted', 'Scheduled' (after the running session) or 'Rejected' (no such connector)."""
        if not 0 <= connector < len(self.connectors):
            return "Rejected"
        scheduled = False
        for c in self.connectors if connector == 0 else [self.connectors[connector]]:
            if c.tx is not None and not operative:
                c.pending_operative = False
                scheduled = True
            else:
                c.operative = operative
                c.pending_operative = None
        self._refresh_all()
        return "Scheduled" if scheduled else "Accepted"

    # ------------------------------------------------------------------ physics
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
        if self._extras is None:
            return self.max_discharge_w
        if self._extras.get("grid_events"):
            return 0.0
        controls = self._extras.get("der")
        pct = controls.max_discharge_pct(utc_now()) if controls is not None else None
        return self.max_discharge_w if pct is None else self.max_discharge_w * pct / 100.0

    def grid_event(self, fault: str, *, clear_after: float | None = None) -> None:
        """A grid event at the charger (e.g. OverVoltage): its trip curve stops any discharge and it sends
        NotifyDERAlarm; cleared after ``clear_after`` simulated seconds or by ``end_grid_event``."""
        if fault not in GRID_TRIPS:
            raise ValueError(f"unknown grid event {fault!r}; use one of {sorted(GRID_TRIPS)}")
        events: dict[str, float | None] = self.extras().setdefault("grid_events", {})
        if fault not in events:
            self.dialect.der_alarm(self, GRID_TRIPS[fault], fault, ended=False)
        events[fault] = None if clear_after is None else self.env.clock.now() + clear_after
        self._profiles_changed()

    def end_grid_event(self, fault: str) -> None:
        events: dict[str, float | None] = self.extras().get("grid_events", {})
        if events.pop(fault, "absent") != "absent":
            self.dialect.der_alarm(self, GRID_TRIPS[fault], fault, ended=True)
            self._profiles_changed()

    def _grid_tick(self, now_sim: float) -> None:
        """Grid events that cleared by themselves; scheduled DER controls that started or ended."""
        if self._extras is None:
            return
        for fault, clear_at in list(self._extras.get("grid_events", {}).items()):
            if clear_at is not None and now_sim >= clear_at:
                self.end_grid_event(fault)
        if self._extras.get("der") is not None:
            self.dialect.der_tick(self)

    def _sample_interval(self) -> float:
        interval = self.config.get_float("MeterValueSampleInterval", 60.0)
        return interval if interval > 0 else math.inf

    def _sample_periodic(self, now: float) -> None:
        self._sample_due = now + self._sample_interval()
        for c in self.connectors:
            if c.tx is not None:
                self._advance(c)
                self.dialect.tx_periodic(self, c, c.tx)
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
                self.dialect.reservation_ended(self, c, res, "Expired")
            if c.fault_clear_at is not None and now_sim >= c.fault_clear_at:
                self.clear_fault(c.index)
            self._refresh(c)
        self._grid_tick(now_sim)
        self._arrivals(elapsed)
        if env.fault_rate > 0 and self.rng.random() < _chance(env.fault_rate, elapsed / 3600.0):
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
            if c.status == "Available" and self.rng.random() < _chance(env.session_rate, elapsed / 60.0):
                ev = EV.random(self.rng, self.dc)
                if self.max_discharge_w > 0 and self.rng.random() < 0.5:  # half the V2X drivers offer energy
                    ev.discharge_w = self.max_discharge_w
                self._plug(c, self.rng.choice(env.id_tags), ev)

    # ------------------------------------------------------------------ status
    def derive_status(self, c: Connector) -> str:
        if c.fault is not None or (c.index and self.connectors[0].fault is not None):
            return "Faulted"
        if c.index == 0:
            return "Available" if c.operative else "Unavailable"
        tx, ev = c.tx, c.ev
        if tx is not None:
            if ev is None or ev.soc >= min(ev.target_soc, 100.0):
                return "SuspendedEV"
            return "Charging" if c.power_w > 0 else "SuspendedEVSE"
        if not c.operative or not self.connectors[0].operative:
            return "Unavailable"
        if ev is not None:
            return "Finishing" if c.finished else "Preparing"
        return "Reserved" if c.reservation is not None else "Available"

    def _refresh(self, c: Connector) -> None:
        new = self.derive_status(c)
        if new != c.status:
            old, c.status = c.status, new
            self.log.info("connector %d: %s -> %s", c.index, old, new)
            self.dialect.status_changed(self, c, old)

    def _refresh_all(self) -> None:
        for c in self.connectors:
            self._refresh(c)

    # ------------------------------------------------------------------ configuration
    def config_changed(self, key: str) -> None:
        """Apply a CSMS configuration change to running timers."""
        now = asyncio.get_running_loop().time()
        if key == "HeartbeatInterval" and self.accepted:
            self._heartbeat_due = now + self._heartbeat_interval()
        elif key == "MeterValueSampleInterval" and not math.isinf(self._sample_due):
            self._sample_due = now + self._sample_interval()

    # ------------------------------------------------------------------ authorization lists
    def clear_cache(self) -> None:
        self._auth_cache = None

    def send_local_list(self, version: int, full: bool, entries: list[tuple[str, str | None]]) -> str:
        """'Accepted' or 'VersionMismatch'; ``entries`` status None removes the tag."""
        if not full and version <= self.local_list_version:
            return "VersionMismatch"
        local = {} if full or self._local_list is None else self._local_list
        for tag, status in entries:
            if status is None:
                local.pop(tag, None)
            else:
                local[tag] = status
        self._local_list = local or None
        self.local_list_version = version
        return "Accepted"

    def forget_id_tag(self, tag: str) -> None:
        """CustomerInformation clear: remove a tag from the cache and local list."""
        (self._auth_cache or {}).pop(tag, None)
        (self._local_list or {}).pop(tag, None)

    # ------------------------------------------------------------------ reservations
    def reserve(self, connector: int | None, reservation_id: int, tag: str, expiry: dt.datetime) -> str:
        """Neutral ReserveNow: 'Accepted', 'Faulted', 'Occupied', 'Unavailable' or 'Rejected'."""
        self.cancel_reservation(reservation_id)
        if connector is not None and not 1 <= connector < len(self.connectors):
            return "Rejected"
        candidates = self.connectors[1:] if connector is None else [self.connectors[connector]]
        for c in candidates:
            if c.status == "Available":
                c.reservation = Reservation(reservation_id, tag, expiry)
                self._refresh(c)
                return "Accepted"
        c = candidates[0]
        if c.fault:
            return "Faulted"
        if not c.operative:
            return "Unavailable"
        return "Occupied"

    def cancel_reservation(self, reservation_id: int) -> bool:
        for c in self.connectors:
            if c.reservation is not None and c.reservation.id == reservation_id:
                c.reservation = None
                self._refresh(c)
                return True
        return False

    # ------------------------------------------------------------------ smart charging
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

    # ------------------------------------------------------------------ certificates
    def install_certificate(self, kind: str, pem: str) -> dict[str, str]:
        """Store a certificate; returns its (synthetic but stable) CertificateHashData."""
        digest = hashlib.sha256(pem.encode()).hexdigest()
        hash_data = {
            "hashAlgorithm": "SHA256",
            "issuerNameHash": digest[:64],
            "issuerKeyHash": hashlib.sha256(digest.encode()).hexdigest()[:64],
            "serialNumber": digest[:16],
        }
        certs: list[tuple[str, dict[str, str]]] = self.extras().setdefault("certificates", [])
        certs[:] = [(k, h) for k, h in certs if h != hash_data]
        certs.append((kind, hash_data))
        return hash_data

    def certificates(self, kinds: list[str] | None) -> list[tuple[str, dict[str, str]]]:
        certs: list[tuple[str, dict[str, str]]] = self.extras().get("certificates", [])
        return [(k, h) for k, h in certs if not kinds or k in kinds]

    def delete_certificate(self, hash_data: dict[str, Any]) -> bool:
        certs: list[tuple[str, dict[str, str]]] = self.extras().get("certificates", [])
        keep = [(k, h) for k, h in certs if h.get("serialNumber") != hash_data.get("serialNumber")]
        self.extras()["certificates"] = keep
        return len(keep) != len(certs)

    def csr(self) -> str:
        """A PEM-shaped placeholder CSR for SignCertificate (no real key material is generated)."""
        body = base64.b64encode(f"CSR for {self.id} {self.serial}".encode()).decode()
        return f"-----BEGIN CERTIFICATE REQUEST-----\n{body}\n-----END CERTIFICATE REQUEST-----\n"

    # ------------------------------------------------------------------ background jobs
    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        """Short-lived task for slow I/O (HTTP transfers) so the charger loop keeps answering."""
        if self._jobs is None:
            self._jobs = set()
        task = asyncio.create_task(coro)
        self._jobs.add(task)
        task.add_done_callback(self._jobs.discard)

    def start_firmware_update(
        self, location: str, retrieve_at: dt.datetime | None, request_id: int | None, signed: bool = False
    ) -> None:
        """Download → install → reboot with the new version, reporting each step to the CSMS."""
        self._spawn(self._firmware_job(location, retrieve_at, request_id, signed))

    def _firmware_status(self, status: str, request_id: int | None, signed: bool) -> None:
        self.extras()["firmware"] = (status, request_id, signed)
        self.dialect.firmware_status(self, status, request_id, signed)

    async def _firmware_job(
        self, location: str, retrieve_at: dt.datetime | None, request_id: int | None, signed: bool
    ) -> None:
        if retrieve_at is not None:
            await asyncio.sleep(max(0.0, (retrieve_at - utc_now()).total_seconds()))
        self._firmware_status("Downloading", request_id, signed)
        try:
            image = await transfer.download(location, self.env.transfer_timeout)
        except Exception as exc:
            self.log.warning("firmware download from %s failed: %r", location, exc)
            self._firmware_status("DownloadFailed", request_id, signed)
            return
        self._firmware_status("Downloaded", request_id, signed)
        await asyncio.sleep(self.env.firmware_step)
        self._firmware_status("Installing", request_id, signed)
        await asyncio.sleep(self.env.firmware_step)
        self.firmware_version = transfer.firmware_version(location, image)
        self._firmware_status("Installed", request_id, signed)
        self.log.info("firmware %s installed, rebooting", self.firmware_version)
        self.request_reboot("FirmwareUpdate", hard=False, stop_reason="Reboot")

    def firmware_state(self) -> tuple[str, int | None, bool]:
        """Last firmware status, for TriggerMessage ('Idle' if no update ran)."""
        state: tuple[str, int | None, bool] = self.extras().get("firmware", ("Idle", None, False))
        return state

    def upload_state(self, kind: str) -> tuple[str, int | None]:
        """Last diagnostics/log upload status, for TriggerMessage ('Idle' if none ran)."""
        state: tuple[str, int | None] = self.extras().get(f"upload-{kind}", ("Idle", None))
        return state

    def start_upload(self, kind: str, location: str, request_id: int | None) -> str:
        """Upload a diagnostics/log text file in the background; returns the file name."""
        filename = f"{self.id}-{kind}-{utc_now():%Y%m%dT%H%M%S}.log"
        self._spawn(self._upload_job(kind, location, filename, request_id))
        return filename

    def _upload_status(self, kind: str, status: str, request_id: int | None) -> None:
        self.extras()[f"upload-{kind}"] = (status, request_id)
        self.dialect.upload_status(self, kind, status, request_id)

    async def _upload_job(self, kind: str, location: str, filename: str, request_id: int | None) -> None:
        self._upload_status(kind, "Uploading", request_id)
        lines = [f"{kind} for {self.id} ({self.vendor} {self.model} fw {self.firmware_version})"]
        lines += [f"connector {c.index}: {c.status} meter={c.meter_wh:.0f}Wh" for c in self.connectors]
        lines += [f"config {k}={v}" for k, v, _ in self.config.items()]
        lines += [f"received {action}" for action, _ in self.received_calls[-20:]]
        try:
            await transfer.upload(location, filename, "\n".join(lines).encode(), self.env.transfer_timeout)
        except Exception as exc:
            self.log.warning("%s upload to %s failed: %r", kind, location, exc)
            self._upload_status(kind, "UploadFailed", request_id)
            return
        self._upload_status(kind, "Uploaded", request_id)
