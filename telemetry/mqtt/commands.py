"""Operator commands over the bus: which gateway holds a charger (hold notices), running a command on that
gateway exactly once, and the asking side (request/reply). The protocol: docs/bus.md, "Commands".

Exactly one executor per command, even while a charger moves between gateway processes: a gateway runs a
charger's commands only while the newest hold notice it has seen on the command topic, ordered by
`(at, holder)`, is its own. The broker delivers one topic's messages to every subscriber in the same order,
so a command is run by the old holder (it came before the new notice) or the new one (after), never both.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
import uuid
from collections import OrderedDict
from dataclasses import asdict, dataclass
from typing import Any

import orjson

from chargeops.commands import CommandReply
from chargeops.logs import ChargerLog, for_charger
from telemetry.bus import CommandExecutor
from telemetry.mqtt.client import Connection, Link, Spawn, publish_properties
from telemetry.mqtt.topics import Topics

log = logging.getLogger(__name__)

_SEEN_REQUESTS = 10_000  # request ids remembered against QoS 1 redelivery


def _clog(charger_id: str) -> ChargerLog:
    return for_charger(log, charger_id)


@dataclass(slots=True)
class Hold:
    """A charger this process holds. `mine` is this hold's notice key, `best` the newest one seen."""

    executor: CommandExecutor
    mine: tuple[float, str]
    best: tuple[float, str] | None = None
    announced: bool = False
    superseded: bool = False

    @property
    def holding(self) -> bool:
        return self.best == self.mine


class Holds:
    """The chargers this process holds and their hold notices: which command topics it wants, which
    notices it still has to publish (`{type: hold, holder, at}`, retained) or delete (on release).

    Changes set `dirty`; the bus then brings its subscriptions in line and calls `announce`."""

    def __init__(self, bus_id: str, topics: Topics, dirty: asyncio.Event) -> None:
        self._bus_id = bus_id
        self._topics = topics
        self._dirty = dirty
        self.held: dict[str, Hold] = {}
        self._clear: set[str] = set()  # released chargers whose retained notice is ours to delete

    def hold(self, charger_id: str, executor: CommandExecutor) -> None:
        current = self.held.get(charger_id)
        if current is not None and not current.superseded:
            current.executor = executor  # a takeover inside this process: same hold, new session
            return
        self.held[charger_id] = Hold(executor, (time.time(), self._bus_id))
        self._clear.discard(charger_id)
        self._dirty.set()

    def release(self, charger_id: str, executor: CommandExecutor) -> None:
        current = self.held.get(charger_id)
        if current is None or current.executor != executor:  # bound methods: equal, not identical
            return
        del self.held[charger_id]
        if current.holding:
            self._clear.add(charger_id)
        self._dirty.set()

    def topics(self) -> set[str]:
        """The command topics this process must be subscribed to."""
        return {self._topics.commands(cid) for cid, h in self.held.items() if not h.superseded}

    def reconnected(self) -> None:
        """A clean session: notices are published again."""
        for hold in self.held.values():
            hold.announced = False

    def seen(self, charger_id: str, hold: Hold, doc: Any) -> None:
        """A hold notice on the charger's command topic (ours or another gateway's)."""
        key = (float(doc["at"]), str(doc["holder"]))
        if hold.best is None or key > hold.best:
            hold.best = key
        if key > hold.mine and not hold.superseded:
            hold.superseded = True
            self._dirty.set()  # unsubscribe: the newer holder executes from now on
            _clog(charger_id).info("command topic taken over by bus %s", key[1])

    async def announce(self, conn: Connection, subscribed: set[str]) -> None:
        """Publishes the notices of new holds whose topic is subscribed, deletes those of released ones."""
        announce = [
            (cid, hold)
            for cid, hold in self.held.items()
            if not hold.announced and not hold.superseded and self._topics.commands(cid) in subscribed
        ]
        cleared, self._clear = self._clear, set()
        notices = [
            conn.send(
                self._topics.commands(cid),
                orjson.dumps({"type": "hold", "holder": hold.mine[1], "at": hold.mine[0]}),
                retain=True,
            )
            for cid, hold in announce
        ]
        notices += [conn.send(self._topics.commands(c), b"", retain=True) for c in cleared]
        try:
            await conn.confirm(notices)
        except ConnectionError:
            self._clear |= cleared - self.held.keys()
            raise
        for cid, hold in announce:
            hold.announced = True
            _clog(cid).info("holding command topic as bus %s", self._bus_id)


class Executions:
    """The gateway side: runs each command for a charger this process holds, once, and answers it —
    `accepted` at once, then the executor's `CommandReply` — on the asker's reply topic."""

    def __init__(self, bus_id: str, holds: Holds, link: Link, spawn: Spawn) -> None:
        self._bus_id = bus_id
        self._holds = holds
        self._link = link
        self._spawn = spawn
        self._seen: OrderedDict[str, None] = OrderedDict()

    def on_message(self, conn: Connection, charger_id: str, raw: bytes) -> None:
        """Anything on the command topic of a held charger: a hold notice or a command."""
        hold = self._holds.held.get(charger_id)
        if hold is None or not raw:
            return
        clog = _clog(charger_id)
        try:
            doc = orjson.loads(raw)
            kind = doc["type"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            clog.error("malformed message on the command topic ignored")
            return
        if kind == "hold":
            self._holds.seen(charger_id, hold, doc)
            return
        if kind != "command" or not hold.holding:
            return
        request_id = str(doc["request_id"])
        if request_id in self._seen:
            return  # QoS 1 redelivery of a command already run
        self._seen[request_id] = None
        if len(self._seen) > _SEEN_REQUESTS:
            self._seen.popitem(last=False)
        if float(doc.get("expires_at", math.inf)) < time.time():
            clog.warning("command %s arrived after its requester stopped waiting; dropped", request_id)
            return
        self._spawn(self._execute(conn, charger_id, hold.executor, doc), f"mqtt-command-{request_id}")

    async def _execute(self, conn: Connection, charger_id: str, executor: CommandExecutor, doc: Any) -> None:
        clog = _clog(charger_id)
        request_id, action, reply_to = str(doc["request_id"]), str(doc["action"]), str(doc["reply_to"])
        props = publish_properties(CorrelationData=request_id.encode())
        try:
            ack = orjson.dumps({"type": "accepted", "request_id": request_id, "holder": self._bus_id})
            await conn.confirm([conn.send(reply_to, ack, properties=props)])
            clog.info("%s (request %s) accepted", action, request_id)
            try:
                reply = await executor(action, doc["payload"], float(doc["timeout"]))
            except Exception as exc:
                clog.exception("%s (request %s) failed in the gateway", action, request_id)
                reply = CommandReply("error", error_code="InternalError", description=str(exc))
            body = orjson.dumps({"type": "reply", "request_id": request_id, **asdict(reply)})
            conn = self._link.conn or conn  # the charger may have been slow across a reconnect
            await conn.confirm([conn.send(reply_to, body, properties=props)])
            clog.info("%s (request %s) answered: %s", action, request_id, reply.outcome)
        except ConnectionError as exc:
            clog.warning(
                "%s (request %s): reply lost with the broker connection: %s", action, request_id, exc
            )


@dataclass(slots=True)
class _Pending:
    accepted: asyncio.Future[None]
    reply: asyncio.Future[CommandReply]


class Requests:
    """The asking side: publishes `{type: command, ...}` on the charger's command topic and waits for the
    holder's `accepted` (none within `ack_timeout`: no gateway holds the charger, `not_connected`), then for
    its reply (none within the call's timeout plus `reply_margin`: `timeout`)."""

    def __init__(
        self, topics: Topics, reply_topic: str, link: Link, ack_timeout: float, reply_margin: float
    ) -> None:
        self._topics = topics
        self._reply_topic = reply_topic
        self._link = link
        self._ack_timeout = ack_timeout
        self._reply_margin = reply_margin
        self._pending: dict[str, _Pending] = {}

    def on_reply(self, raw: bytes) -> None:
        try:
            doc = orjson.loads(raw)
            pending = self._pending.get(str(doc["request_id"]))
        except (orjson.JSONDecodeError, KeyError, TypeError):
            log.error("malformed reply ignored")
            return
        if pending is None:
            return  # a late reply to a request that already gave up
        if not pending.accepted.done():
            pending.accepted.set_result(None)
        if doc.get("type") == "reply" and not pending.reply.done():
            fields = {k: doc[k] for k in ("outcome", "payload", "error_code", "description", "details")}
            pending.reply.set_result(CommandReply(**fields))

    async def request(
        self, charger_id: str, action: str, payload: dict[str, Any], timeout: float
    ) -> CommandReply:
        clog = _clog(charger_id)
        conn = self._link.conn
        if conn is None:
            return CommandReply("not_connected", description="message bus unavailable")
        loop = asyncio.get_running_loop()
        request_id = uuid.uuid4().hex
        pending = _Pending(loop.create_future(), loop.create_future())
        self._pending[request_id] = pending
        doc = {
            "type": "command",
            "request_id": request_id,
            "action": action,
            "payload": payload,
            "timeout": timeout,
            "reply_to": self._reply_topic,
            "expires_at": time.time() + self._ack_timeout,
        }
        props = publish_properties(
            ResponseTopic=self._reply_topic,
            CorrelationData=request_id.encode(),
            MessageExpiryInterval=max(1, math.ceil(self._ack_timeout)),
        )
        try:
            topic = self._topics.commands(charger_id)
            await conn.confirm([conn.send(topic, orjson.dumps(doc), properties=props)])
            try:
                await asyncio.wait_for(asyncio.shield(pending.accepted), self._ack_timeout)
            except TimeoutError:
                clog.info("%s (request %s): no gateway holds the charger", action, request_id)
                return CommandReply("not_connected", description=f"charger {charger_id} is not connected")
            try:
                return await asyncio.wait_for(asyncio.shield(pending.reply), timeout + self._reply_margin)
            except TimeoutError:
                clog.warning("%s (request %s): no reply within %.0f s", action, request_id, timeout)
                return CommandReply("timeout", description=f"no answer within {timeout:g} s")
        except ConnectionError as exc:
            clog.warning("%s (request %s): bus unavailable: %s", action, request_id, exc)
            return CommandReply("not_connected", description="message bus unavailable")
        finally:
            del self._pending[request_id]
