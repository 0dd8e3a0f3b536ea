"""The charger's link to its central system: one task, one websocket, back-off, boot and reboot.

The single task multiplexes the socket and all timers: it awaits ``ws.recv()`` inside an
``asyncio.timeout_at`` whose deadline is the next timer; external commands (``plug_in`` ...) mutate
state and "poke" that timeout so the loop wakes immediately. ``recv()`` is cancellation-safe.
"""

from __future__ import annotations

import asyncio
import base64
import math
from collections.abc import Callable
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI
from websockets.typing import Subprotocol

from firmware_stubs.charger.base import ChargerBase


async def _poll(predicate: Callable[[], bool], timeout: float) -> None:
    """Poll instead of keeping an asyncio.Event per charger (rarely used, would cost memory x 10k)."""
    async with asyncio.timeout(timeout):
        while True:
            if predicate():
                return
            await asyncio.sleep(0.02)


class LinkMixin(ChargerBase):
    """Connection lifecycle and the main loop's timers; what travels over the link is ``CallsMixin``'s."""

    __slots__ = ()

    @property
    def connected(self) -> bool:
        return self._ws is not None

    @property
    def accepted(self) -> bool:
        return self._ws is not None and self.registration == "Accepted"

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
        for job in list(self._jobs.tasks if self._jobs is not None else ()):
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

    def _heartbeat_interval(self) -> float:
        interval = self.config.get_int("HeartbeatInterval", 300)
        return float(interval) if interval > 0 else math.inf

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
            self.dialect.after_boot(self._whole)
            return
        self.registration = status
        self._boot_failures += 1
        delay = interval if interval > 0 else self._backoff(self._boot_failures)
        self._boot_due = now + delay
        self.log.info("boot %s; retry in %.1fs", status, delay)

    def trigger_boot(self) -> None:
        """TriggerMessage(BootNotification): a boot with reason Triggered, even when already accepted."""
        action, payload = self.dialect.boot_request(self._whole, "Triggered")
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

    # ------------------------------------------------------------------ configuration
    def config_changed(self, key: str) -> None:
        """Apply a CSMS configuration change to running timers."""
        now = asyncio.get_running_loop().time()
        if key == "HeartbeatInterval" and self.accepted:
            self._heartbeat_due = now + self._heartbeat_interval()
        elif key == "MeterValueSampleInterval" and not math.isinf(self._sample_due):
            self._sample_due = now + self._sample_interval()
