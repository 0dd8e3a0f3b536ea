"""The bus between the socket-holding gateway and everything else.

Two jobs, as in MaEVe's per-charger topics: events flow out of the gateway to subscribers, and operator
commands flow to whichever gateway holds the charger and their replies flow back. `InProcessBus` does both
inside one process (the embedded default); the MQTT bus does the same across processes.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol

from chargeops.commands import CommandReply
from chargeops.events import Event
from chargeops.settings import Settings
from telemetry.metrics import events_published

log = logging.getLogger(__name__)

EventHandler = Callable[[Sequence[Event]], Awaitable[None]]


CommandExecutor = Callable[[str, dict[str, Any], float], Awaitable[CommandReply]]


class Bus(Protocol):
    instance_id: str  # this process's bus

    @property
    def run_id(self) -> str:
        """This run of the gateway as its presence and its `Connected` events name it (docs/bus.md,
        "Gateway presence"): the bus instance and, after a dot, its broker connection."""

    def on_presence_restored(self, callback: Callable[[], Awaitable[None]]) -> None:
        """`callback` runs after every reconnect of a gateway's broker connection (its Will may have been
        applied meanwhile): the gateway announces again the chargers it holds."""

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def ready(self, timeout: float) -> None:
        """Return once subscriptions made so far are live (raise TimeoutError after `timeout`)."""

    async def publish(self, events: Sequence[Event]) -> None: ...

    def subscribe(self, handler: EventHandler, *, durable: bool = False) -> None: ...

    def hold(self, charger_id: str, executor: CommandExecutor) -> None: ...

    def release(self, charger_id: str, executor: CommandExecutor) -> None: ...

    async def request(
        self, charger_id: str, action: str, payload: dict[str, Any], timeout: float
    ) -> CommandReply: ...


class InProcessBus:
    """Events and commands within one process.

    `publish` returns once every durable subscriber (ingest) has stored the events, so the gateway answers a
    charger only after what it reported is durable. Other subscribers get them through a bounded queue each,
    so a slow consumer never slows the chargers; what piled up while a subscriber was busy is handed to it in
    one call (up to `max_batch` events, as the MQTT bus does), so one that does a query per call catches up
    instead of falling further behind at one call per publish (`bench.soak`: a listener's queue grew
    to its bound in 22 minutes at 100 calls/s, then events were dropped).
    """

    def __init__(self, listener_queue: int = 100_000, max_batch: int = 20_000) -> None:
        self.instance_id = uuid.uuid4().hex[:12]
        self._durable: list[EventHandler] = []
        self._listeners: list[asyncio.Queue[Sequence[Event]]] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._holders: dict[str, CommandExecutor] = {}
        self._queue_size = listener_queue
        self._max_batch = max_batch

    @property
    def run_id(self) -> str:
        return f"{self.instance_id}.0"

    def on_presence_restored(self, callback: Callable[[], Awaitable[None]]) -> None:
        """No broker connection to lose."""

    async def start(self) -> None:
        """Nothing to connect to."""

    async def ready(self, timeout: float) -> None:
        """In-process subscriptions are live at once."""

    async def publish(self, events: Sequence[Event]) -> None:
        if not events:
            return
        for handler in self._durable:
            await handler(events)
        for q in self._listeners:
            if q.full():
                log.warning("event listener queue full; dropping %d events", len(events))
                continue
            q.put_nowait(events)
        for ev in events:
            events_published(ev.kind.value).inc()

    def subscribe(self, handler: EventHandler, *, durable: bool = False) -> None:
        if durable:
            self._durable.append(handler)
            return
        q: asyncio.Queue[Sequence[Event]] = asyncio.Queue(self._queue_size)
        self._listeners.append(q)
        self._tasks.append(asyncio.get_running_loop().create_task(self._pump(q, handler)))

    async def _pump(self, q: asyncio.Queue[Sequence[Event]], handler: EventHandler) -> None:
        while True:
            events = list(await q.get())
            while not q.empty() and len(events) < self._max_batch:
                events.extend(q.get_nowait())
            try:
                await handler(events)
            except Exception:
                log.exception("event listener failed on %d events", len(events))

    def hold(self, charger_id: str, executor: CommandExecutor) -> None:
        self._holders[charger_id] = executor

    def release(self, charger_id: str, executor: CommandExecutor) -> None:
        if self._holders.get(charger_id) == executor:  # bound methods: equal, not identical
            del self._holders[charger_id]

    async def request(
        self, charger_id: str, action: str, payload: dict[str, Any], timeout: float
    ) -> CommandReply:
        executor = self._holders.get(charger_id)
        if executor is None:
            return CommandReply("not_connected", description=f"charger {charger_id} is not connected")
        return await executor(action, payload, timeout)

    async def close(self) -> None:
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()


def make_bus(settings: Settings, durable_group: str = "ingest") -> Bus:
    """MQTT when `CHARGEOPS_MQTT_URL` is set (roles in several processes), else in-process.

    `durable_group` names the MQTT consumer group of the bus's durable subscription: every group gets each
    event once, shared among that group's processes."""
    if settings.mqtt_url:
        from telemetry.mqtt import MqttBus

        return MqttBus(settings, durable_group=durable_group)
    return InProcessBus()
