"""The WebSocket side of the gateway: handshake (path, subprotocol, authentication, rate limits),
the registry of live sessions with takeover, and command routing from the bus to the right session."""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Sequence
from dataclasses import replace
from http import HTTPStatus
from typing import Any
from urllib.parse import unquote

from sqlalchemy.exc import SQLAlchemyError
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.http11 import Request, Response

from chargeops import audit
from chargeops.events import Connected, Disconnected, Event
from chargeops.ids import CHARGER_ID_RE
from chargeops.logs import for_charger
from chargeops.settings import parse_networks
from ocpp_gateway.auth import FailureLimiter, Verifier, parse_basic
from ocpp_gateway.client_address import client_address, forwarded_proto
from ocpp_gateway.context import GatewayContext
from ocpp_gateway.network_profiles import proves
from ocpp_gateway.rpc import warm_up
from ocpp_gateway.session import ChargerSession
from ocpp_gateway.store import ChargerAuth
from ocpp_gateway.tls import ReloadingTls
from ocpp_gateway.v16 import Session16
from ocpp_gateway.v21 import Session21
from ocpp_gateway.v201 import Session201
from telemetry.metrics import CHARGERS_CONNECTED, CONNECTION_TAKEOVERS, GATEWAY_INFO, HANDSHAKES_REFUSED

log = logging.getLogger("chargeops.gateway")
HANDSHAKE_WAIT = 5.0  # s a handshake may wait for a slot and a hash turn (websockets drops it at 10)
RETRY_AFTER_MIN, RETRY_AFTER_SPREAD = 5, 25  # 503s say: retry in 5-29 s
CLOSE_TIMEOUT = 2.0  # seconds a closing connection gets to answer the close before its socket is dropped
# Connections the kernel queues before they are accepted (asyncio's default, 100, made a storm's SYNs beyond
# it wait a second for their retry); the kernel caps it at net.core.somaxconn.
LISTEN_BACKLOG = 4096

SESSION_CLASSES: dict[str, type[ChargerSession]] = {
    cls.version.subprotocol: cls for cls in (Session16, Session201, Session21)
}
SUBPROTOCOLS = tuple(SESSION_CLASSES)
PATH_PREFIX = "/ocpp/"


def offered_subprotocols(headers: Headers) -> list[str]:
    return [
        p.strip()
        for value in headers.get_all("Sec-WebSocket-Protocol")
        for p in value.split(",")
        if p.strip()
    ]


class GatewayServer:
    """Holds charger connections for one gateway process."""

    def __init__(self, ctx: GatewayContext, tls: ReloadingTls | None = None) -> None:
        self.ctx = ctx
        self.tls = tls  # wss:// with certificates reloaded while running (ocpp_gateway.tls)
        s = ctx.settings
        self.sessions: dict[str, ChargerSession] = {}
        self._verifier = Verifier()
        self._by_id = FailureLimiter(s.login_failures_allowed, backoff=s.login_backoff_seconds)
        self._by_addr = FailureLimiter(s.login_failures_allowed, backoff=s.login_backoff_seconds)
        self._proxies = parse_networks(s.trusted_proxies)
        self._server: Server | None = None
        self._auth: dict[int, ChargerAuth] = {}
        self._closing: set[asyncio.Task[None]] = set()  # replaced connections being closed
        # Admission control for reconnect storms: a bounded number of handshakes touch the database at
        # once, a bounded number wait, and the rest are told 503 at once (chargers retry with back-off)
        # instead of queueing until every one of them times out.
        self._handshake_slots = asyncio.Semaphore(s.handshake_concurrency)
        self.opened = 0  # connections accepted so far (`telemetry.heap.HeapKeeper` freezes after a wave)
        self._handshakes_waiting = 0

    # -- lifecycle ------------------------------------------------------------------------------------

    async def start(self) -> None:
        s = self.ctx.settings
        await asyncio.to_thread(lambda: [warm_up(cls.version) for cls in SESSION_CLASSES.values()])
        self._server = await serve(
            self._handle,
            s.ocpp_host,
            s.ocpp_port,
            subprotocols=list(SUBPROTOCOLS),  # type: ignore[arg-type]
            select_subprotocol=self._select_subprotocol,  # type: ignore[arg-type]
            process_request=self._process_request,
            compression=None,  # permessage-deflate costs ~40 KiB per idle connection
            max_size=s.max_frame_bytes,
            max_queue=4,
            ping_interval=s.ws_ping_interval,  # a silently dead link is noticed within interval + timeout
            ping_timeout=s.ws_ping_timeout,
            close_timeout=CLOSE_TIMEOUT,  # a dead link does not answer a close either: don't wait 10 s for it
            ssl=self.tls.listening if self.tls else None,
            server_header="chargeops",
            backlog=LISTEN_BACKLOG,
        )
        if self.tls:
            self.tls.start(s.tls_reload_interval)
        if s.contract_roots is not None:
            self.ctx.pki.root_files.start(s.tls_reload_interval)
        GATEWAY_INFO.labels(self.ctx.gateway_id).set(1)
        log.info(
            "OCPP gateway listening on %s://%s:%s%s{chargePointId}%s",
            "wss" if self.tls else "ws",
            s.ocpp_host,
            self.port,
            PATH_PREFIX,
            f" ({' and '.join(self.tls.kinds)} certificates)" if self.tls else "",
        )

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        if self.tls:
            await self.tls.stop()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        await self.ctx.pki.close()

    # -- handshake ------------------------------------------------------------------------------------

    @staticmethod
    def _select_subprotocol(connection: ServerConnection, offered: Sequence[str]) -> str | None:
        """The charger's first choice that we speak (its list is in order of preference)."""
        return next((p for p in offered if p in SESSION_CLASSES), None)

    def _address(self, connection: ServerConnection) -> str:
        """The charger's address: the peer's, or what a trusted load balancer says it was."""
        peer = str((connection.remote_address or ("?",))[0])
        request = connection.request
        if not self._proxies or request is None:
            return peer
        return client_address(peer, request.headers.raw_items(), self._proxies)

    def _tls_at_balancer(self, connection: ServerConnection) -> bool:
        """A trusted TLS-terminating load balancer says the charger came over TLS (security profile 2)."""
        peer = str((connection.remote_address or ("?",))[0])
        request = connection.request
        if not self._proxies or request is None:
            return False
        return forwarded_proto(peer, request.headers.raw_items(), self._proxies) == "https"

    def _refuse(
        self, connection: ServerConnection, status: HTTPStatus, reason: str, text: str, charger_id: str = ""
    ) -> Response:
        """The HTTP answer to a refused handshake, counted by reason and written to the audit trail (limited
        per address; what the charger sent as a password is never logged)."""
        HANDSHAKES_REFUSED.labels(reason).inc()
        address = self._address(connection)
        audit.refused(
            address,
            "handshake %d refused for %s from %s: %s",
            status.value, charger_id or "?", address, reason,
            status=status.value, reason=reason, charge_point_id=charger_id or None,
        )  # fmt: skip
        response = connection.respond(status, text + "\n")
        if status == HTTPStatus.UNAUTHORIZED:
            response.headers["WWW-Authenticate"] = 'Basic realm="chargeops", charset="UTF-8"'
        if status == HTTPStatus.SERVICE_UNAVAILABLE:  # spread the retries of a storm over half a minute
            response.headers["Retry-After"] = str(RETRY_AFTER_MIN + secrets.randbelow(RETRY_AFTER_SPREAD))
        return response

    async def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        path = request.path.split("?", 1)[0]
        charger_id = unquote(path[len(PATH_PREFIX) :]) if path.startswith(PATH_PREFIX) else ""
        if not CHARGER_ID_RE.match(charger_id):
            return self._refuse(
                connection, HTTPStatus.NOT_FOUND, "bad_path", f"use {PATH_PREFIX}{{chargePointId}}"
            )
        if not any(p in SESSION_CLASSES for p in offered_subprotocols(request.headers)):
            why = f"offer one of {', '.join(SUBPROTOCOLS)}"
            return self._refuse(connection, HTTPStatus.BAD_REQUEST, "subprotocol", why, charger_id)
        address = self._address(connection)
        creds = parse_basic(request.headers.get("Authorization"))
        # The charger presenting the password it last proved with goes past the limiter (still checked
        # against the stored hash below): an attacker who knows its id cannot keep it off.
        known = (
            creds is not None and creds[0] == charger_id and self._verifier.last_good(charger_id, creds[1])
        )
        if not known and self._limited(charger_id, address):
            return self._refuse(
                connection, HTTPStatus.TOO_MANY_REQUESTS, "rate_limited", "too many failed logins", charger_id
            )
        if self._handshakes_waiting >= self.ctx.settings.handshake_backlog:
            return self._refuse(
                connection, HTTPStatus.SERVICE_UNAVAILABLE, "busy", "busy; retry later", charger_id
            )
        self._handshakes_waiting += 1
        deadline = time.monotonic() + HANDSHAKE_WAIT
        try:
            # Shed before websockets' own open timeout would drop the connection with a bare TCP reset.
            async with asyncio.timeout(HANDSHAKE_WAIT):  # (no task per handshake, as wait_for makes)
                await self._handshake_slots.acquire()
        except TimeoutError:
            why = "overloaded; retry later"
            return self._refuse(connection, HTTPStatus.SERVICE_UNAVAILABLE, "overloaded", why, charger_id)
        finally:
            self._handshakes_waiting -= 1
        try:
            return await self._admit(connection, request, charger_id, address, deadline)
        finally:
            self._handshake_slots.release()

    async def _admit(
        self, connection: ServerConnection, request: Request, charger_id: str, address: str, deadline: float
    ) -> Response | None:
        """Registration and authentication of one handshake (holding a handshake slot)."""
        clog = for_charger(log, charger_id)
        try:
            auth = await self.ctx.store.charger(charger_id)
            if auth is None:
                auth = await self._admit_unknown(charger_id)
        except (SQLAlchemyError, OSError) as exc:
            clog.error("handshake refused, storage unavailable: %s", exc)
            return self._refuse(
                connection, HTTPStatus.SERVICE_UNAVAILABLE, "unavailable", "try again later", charger_id
            )
        if auth is None:
            self._failed(charger_id, address)
            return self._refuse(
                connection, HTTPStatus.NOT_FOUND, "unknown_charger", "unknown charge point", charger_id
            )
        refusal = await self._authenticate(connection, request, auth, address, deadline)
        if refusal == "rate_limited":
            return self._refuse(
                connection, HTTPStatus.TOO_MANY_REQUESTS, "rate_limited", "too many failed logins", charger_id
            )
        if refusal == "overloaded":
            why = "overloaded; retry later"
            return self._refuse(connection, HTTPStatus.SERVICE_UNAVAILABLE, "overloaded", why, charger_id)
        if refusal is not None:
            if refusal != "bad_credentials":  # a bad password was counted when its check settled
                self._failed(charger_id, address)
            return self._refuse(
                connection, HTTPStatus.UNAUTHORIZED, refusal, "authentication failed", charger_id
            )
        self._by_id.succeed(charger_id)
        self._auth[id(connection)] = auth
        return None

    async def _admit_unknown(self, charger_id: str) -> ChargerAuth | None:
        s = self.ctx.settings
        if s.accept_unknown:
            return await self.ctx.store.admit_unknown(charger_id, "accepted")
        if s.registration_policy == "pending":
            return await self.ctx.store.admit_unknown(charger_id, "pending")
        return None

    def _limited(self, charger_id: str, address: str) -> bool:
        return self._by_id.blocked(charger_id) or self._by_addr.blocked(address)

    def _failed(self, charger_id: str, address: str) -> None:
        self._by_id.fail(charger_id)
        self._by_addr.fail(address)

    async def _authenticate(
        self, connection: ServerConnection, request: Request, auth: ChargerAuth, address: str, deadline: float
    ) -> str | None:
        """None if the charger proved who it is for its security profile, else the refusal reason. A
        charger moving to a higher profile (`network_profiles`) that proves it gets it from now on."""
        tls = connection.transport.get_extra_info("ssl_object") is not None or self._tls_at_balancer(
            connection
        )
        cert = connection.transport.get_extra_info("peercert") or {}
        names = [v for rdn in cert.get("subject", ()) for k, v in rdn if k == "commonName"]
        pending = auth.pending_security_profile
        if pending is not None and pending > auth.security_profile and proves(pending, tls, names, auth.id):
            upgraded = replace(auth, security_profile=pending)
            refusal = await self._prove(connection, request, upgraded, address, deadline, tls, names)
            if refusal is None:
                await self.ctx.store.promote_profile(auth.id, pending)
                for_charger(log, auth.id).info(
                    "now on security profile %d; the lower one is refused", pending
                )
            return refusal
        return await self._prove(connection, request, auth, address, deadline, tls, names)

    async def _prove(
        self,
        connection: ServerConnection,
        request: Request,
        auth: ChargerAuth,
        address: str,
        deadline: float,
        tls: bool,
        names: list[str],
    ) -> str | None:
        if auth.security_profile >= 2 and not tls:
            return "tls_required"
        if auth.security_profile >= 3:
            return None if auth.id in names else "client_certificate"
        if auth.password_hash is None:
            return None
        creds = parse_basic(request.headers.get("Authorization"))
        if creds is None:
            return "no_credentials"
        user, password = creds
        if user != auth.id:
            return "user_mismatch"
        if self._verifier.cached(auth.id, auth.password_hash, password):
            return None
        # A place against both limits before hashing (others may have filled them while this one waited).
        refusal = await self._hash_turn(auth.id, address, deadline)
        if refusal is not None:
            return refusal
        ok = False
        try:
            ok = await asyncio.to_thread(self._verifier.verify, auth.id, auth.password_hash, password)
            # A rotated password the charger accepted: its first connection with it retires the old one.
            pending = auth.pending_password_hash
            if not ok and pending is not None:
                ok = await asyncio.to_thread(self._verifier.verify, auth.id, pending, password)
                if ok:
                    await self.ctx.store.promote_password(auth.id, pending)
                    for_charger(log, auth.id).info("connected with its new password; the old one is retired")
        finally:
            self._by_id.end(auth.id, ok)
            self._by_addr.end(address, ok)
        return None if ok else "bad_credentials"

    async def _hash_turn(self, charger_id: str, address: str, deadline: float) -> str | None:
        """Takes a place for one password check against the id's and the address's limits (waiting for one
        until the handshake's deadline): None, or why not ("rate_limited", "overloaded")."""
        if not await self._by_id.turn(charger_id, deadline - time.monotonic()):
            return "rate_limited" if self._by_id.blocked(charger_id) else "overloaded"
        if not await self._by_addr.turn(address, deadline - time.monotonic()):
            self._by_id.end(charger_id, True)  # nothing was checked: the id's place is given back
            return "rate_limited" if self._by_addr.blocked(address) else "overloaded"
        return None

    # -- sessions -------------------------------------------------------------------------------------

    async def _handle(self, connection: ServerConnection) -> None:
        auth = self._auth.pop(id(connection))
        protocol = connection.subprotocol or ""
        session = SESSION_CLASSES[protocol](auth.id, connection, self.ctx, auth)
        self.opened += 1
        old = self.sessions.get(auth.id)
        self.sessions[auth.id] = session
        self.ctx.bus.hold(auth.id, session.execute)
        if old is not None:
            CONNECTION_TAKEOVERS.inc()
            session.log.warning("new authenticated connection replaces the live one")
            # Closed beside the new session, not before it: the old link is often half-open and would hold
            # the new one unread until its close times out (a command accepted at once came back as 504).
            closing = asyncio.create_task(old.close(1000, "replaced by a new connection"))
            self._closing.add(closing)
            closing.add_done_callback(self._closing.discard)
        CHARGERS_CONNECTED.labels(protocol).inc()
        session.log.info("connected (%s) from %s", protocol, self._address(connection))
        gw = self.ctx.gateway_id
        await self._presence(session, Connected(protocol, gw, session.session_id, self.ctx.bus.run_id))
        try:
            await session.start()
        finally:
            CHARGERS_CONNECTED.labels(protocol).dec()
            if self.sessions.get(auth.id) is session:
                del self.sessions[auth.id]
                self.ctx.bus.release(auth.id, session.execute)
            session.log.info("disconnected (code %s)", connection.close_code)
            await self._presence(session, Disconnected(gw, session.session_id, str(connection.close_code)))

    async def announce_sessions(self) -> None:
        """After the bus's broker connection came back (its Will may have marked them disconnected meanwhile):
        a `Connected` for every charger held, under the new connection's run id (docs/bus.md, "Gateway
        presence")."""
        protocols = {cls: name for name, cls in SESSION_CLASSES.items()}
        run_id, gw = self.ctx.bus.run_id, self.ctx.gateway_id
        held = list(self.sessions.values())
        events = [Event(s.id, Connected(protocols[type(s)], gw, s.session_id, run_id)) for s in held]
        if not events:
            return
        try:
            await self.ctx.bus.publish(events)
            log.info("broker connection back: %d chargers announced again", len(events))
        except Exception as exc:  # best effort, as every presence event
            log.warning("could not announce the %d chargers held again: %s", len(events), exc)

    async def _presence(self, session: ChargerSession, body: Any) -> None:
        """Presence is best effort: a database hiccup must not cost the charger its connection."""
        try:
            await self.ctx.bus.publish([Event(session.id, body)])
        except Exception as exc:
            session.log.warning("could not record %s: %s", body.kind.value, exc)
