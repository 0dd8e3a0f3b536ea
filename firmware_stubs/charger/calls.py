"""OCPP-J call discipline: one CALL outstanding at a time, an offline queue for transactional calls, and
answers to the central system's CALLs (validated, dispatched to the dialect, replied to).
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from typing import Any

from websockets.asyncio.client import ClientConnection

from firmware_stubs import rpc, schemas
from firmware_stubs.charger.base import ChargerBase
from firmware_stubs.charger.state import RECEIVED_CALLS_KEPT, OutboundCall, Transaction


class CallsMixin(ChargerBase):
    """What travels over the link: queueing, sending and retrying CALLs, answering the CSMS's."""

    __slots__ = ()

    @property
    def queued(self) -> int:
        return len(self._queue) + (self._outstanding is not None)

    def _retry(self, item: OutboundCall, now: float) -> None:
        """A call timed out or was refused: a boot backs off; a transactional call goes back to the head of
        the queue until ``TransactionMessageAttempts`` are used up; anything else is given up."""
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

    # ------------------------------------------------------------------ sending
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
                action, payload = self.dialect.boot_request(self._whole, self._boot_reason)
                await self._send_call(ws, OutboundCall(action, payload, on_result=self._on_boot_result), now)
            return
        if queue:
            await self._send_call(ws, queue.pop(0), now)

    async def _send_call(self, ws: ClientConnection, item: OutboundCall, now: float) -> None:
        self._msg_seq += 1
        item.uid = str(self._msg_seq)
        item.deadline = now + self.env.call_timeout
        payload = self.dialect.finalize(self._whole, item)
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

    # ------------------------------------------------------------------ receiving
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
            response = handler(self._whole, payload)
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
