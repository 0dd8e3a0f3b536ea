"""The version-neutral charger session over the `ocpp` library's ChargePoint.

One subclass per OCPP version supplies its route table (`routes`) and thin handlers that map payloads to
events and answers; everything else — framing, central schema validation both ways, the registration gate,
CALLERROR spelling, one outstanding outgoing call, metrics and logs — happens here, once, as do the handlers
every version shares.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from datetime import datetime
from typing import Any, ClassVar

from ocpp.charge_point import ChargePoint
from sqlalchemy.exc import SQLAlchemyError
from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from chargeops import clock
from chargeops.commands import SEND_LOCAL_LIST, CommandReply
from chargeops.events import (
    Authorization,
    Body,
    Booted,
    Event,
    FirmwareStatus,
    Heartbeat,
    LogStatus,
    MeterImplausible,
    MeterValues,
    RebootRequested,
    SecurityEvent,
    TransactionEnded,
    TransactionStarted,
    utcnow,
)
from chargeops.logs import LineBudget, for_charger
from chargeops.passwords import hash_password
from ocpp_gateway import passwords
from ocpp_gateway.batching import SPLITS
from ocpp_gateway.certificate_commands import COMMANDS as CERTIFICATE_COMMANDS
from ocpp_gateway.commands import Unsupported, from_ocpp, reboot_requested, to_ocpp
from ocpp_gateway.context import GatewayContext
from ocpp_gateway.message_limits import MessageLimits
from ocpp_gateway.network_profiles import profile_agreed
from ocpp_gateway.plausibility import MeterLimits, Reading, flag_events
from ocpp_gateway.routes import NotSupported, Payload, Route, RouteTable
from ocpp_gateway.rpc import (
    Call,
    CallError,
    CallResult,
    RpcError,
    pack_call,
    pack_error,
    pack_result,
    parse_frame,
    validate,
)
from ocpp_gateway.split_calls import call_fitted, call_in_parts
from ocpp_gateway.store import ChargerAuth, TokenStatus, TxRecord
from ocpp_gateway.times import ocpp_time, parse_time
from ocpp_gateway.urls import url_problem
from ocpp_gateway.versions import V16, OcppVersion
from telemetry.metrics import (
    FRAMES_REJECTED,
    OCPP_CALL_ERRORS,
    OCPP_MESSAGES,
    OCPP_OUTGOING_SECONDS,
    TRANSACTION_CONFLICTS,
    handling_seconds,
    label,
    messages_in,
)

logger = logging.getLogger("chargeops.gateway")

REMOTE_TOKEN_ACTIONS = frozenset({"RequestStartTransaction", "RequestBatterySwap"})  # 2.x: idToken.idToken
BAD_FRAME_LOG_BURST = 5  # bad frames logged per charger and minute; the rest are counted
REMOTE_TOKENS_KEPT = 16  # per session: the latest remote starts (a charger runs a handful of EVSEs)


class ChargerSession(ChargePoint):
    """One connected charger. Subclasses set `version` and `ROUTES` (see `routes`)."""

    version: ClassVar[OcppVersion]
    ROUTES: ClassVar[RouteTable] = {}

    def __init__(self, charger_id: str, connection: ServerConnection, ctx: GatewayContext, auth: ChargerAuth):
        super().__init__(charger_id, connection, response_timeout=ctx.settings.call_timeout, logger=logger)
        self.ctx = ctx
        self.auth = auth
        self.session_id = str(uuid.uuid4())
        # A registration accepted before a restart still holds, unless the operator has since withdrawn it.
        self.registration = auth.registration_status if auth.admission == "accepted" else None
        self.log = for_charger(logger, charger_id)
        self.current_action = ""
        self._waiting: tuple[str, str, asyncio.Future[CallResult | CallError]] | None = None
        self._booted = False  # a BootNotification was answered on this connection
        self._bad_frame_lines = LineBudget(BAD_FRAME_LOG_BURST)
        # Id tokens we asked this charger to start (or swap) with; created on the first remote start.
        self._remote_tokens: dict[str, None] | None = None
        self._max_power_w: float | None = None  # what a meter may rise by; looked up after each boot
        self.message_limits = MessageLimits(ctx.store, charger_id, self.log)  # 2.x: Items/BytesPerMessage

    # -- receiving ------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Serve the connection until it closes."""
        try:
            async for message in self._connection:
                await self.route_message(message)
        except ConnectionClosed:
            pass
        finally:
            if self._waiting and not self._waiting[2].done():
                self._waiting[2].set_exception(ConnectionError("charger disconnected"))

    async def route_message(self, raw: str | bytes) -> None:
        try:
            frame = parse_frame(raw, self.version)
        except RpcError as err:
            FRAMES_REJECTED.labels(err.code).inc()
            self._log_bad_frame(err)
            await self._send_error(err)
            return
        if isinstance(frame, Call):
            await self._handle_call(frame)
        elif frame is not None:
            waiting = self._waiting
            if waiting and waiting[0] == frame.unique_id and not waiting[2].done():
                waiting[2].set_result(frame)
            else:
                self.log.warning(
                    "ignoring %s for unknown message id %s", type(frame).__name__, frame.unique_id
                )

    def _log_bad_frame(self, err: RpcError) -> None:
        """The first `BAD_FRAME_LOG_BURST` bad frames of a minute each get a line, then one line says how
        many more were answered (all are counted in `chargeops_ocpp_frames_rejected_total`): a charger
        sending garbage in a loop must not flood the log."""
        write, held = self._bad_frame_lines.spend(time.monotonic())
        if held:
            self.log.warning("%d more bad frames answered in the last minute", held)
        if write:
            self.log.warning("bad frame answered with %s: %s", err.code, err.description)

    async def _handle_call(self, call: Call) -> None:
        started = time.perf_counter()
        action = call.action
        route = self.ROUTES.get(action)
        handler = None if isinstance(route, NotSupported) else route
        try:
            if handler is None:
                raise self._refusal(action, route, call.unique_id)
            messages_in(action, "in").inc()
            if action != "BootNotification" and self.registration != "Accepted":
                raise RpcError(
                    "SecurityError", f"registration is {self.registration or 'not accepted'}", call.unique_id
                )
            validate(self.version, action, call.payload, response=False, unique_id=call.unique_id)
            self.current_action = action
            response = await handler(self, call.payload)
            try:
                validate(self.version, action, response, response=True, unique_id=call.unique_id)
            except RpcError as bug:
                self.log.error("our %s response breaks the schema: %s", action, bug.description)
                raise RpcError(
                    "InternalError", "the central system built an invalid response", call.unique_id
                ) from None
            await self._send(pack_result(call.unique_id, response))
        except RpcError as err:
            err.unique_id = call.unique_id
            self.log.info("%s answered with %s: %s", action, err.code, err.description)
            await self._send_error(err)
        except (SQLAlchemyError, ConnectionError, OSError) as exc:
            self.log.error("%s failed, storage unavailable: %s", action, exc)
            await self._send_error(
                RpcError("InternalError", "storage temporarily unavailable; retry later", call.unique_id)
            )
        except Exception:
            self.log.exception("%s handler failed", action)
            await self._send_error(RpcError("InternalError", "unexpected error", call.unique_id))
        finally:
            if handler is not None:
                handling_seconds(action).observe(time.perf_counter() - started)

    def _refusal(self, action: str, route: Route | None, unique_id: str) -> RpcError:
        if isinstance(route, NotSupported):
            return RpcError("NotSupported", f"{action}: {route.why}", unique_id)
        if action in self.version.known_actions():
            return RpcError("NotSupported", f"{action} is not supported from a charger", unique_id)
        return RpcError("NotImplemented", f"unknown action {action!r}", unique_id)

    async def _send_error(self, err: RpcError) -> None:
        OCPP_CALL_ERRORS.labels(err.code, "out").inc()
        await self._send(pack_error(err))

    async def _send(self, message: str) -> None:
        try:
            await self._connection.send(message)
        except ConnectionClosed:
            self.log.info("connection closed before the answer could be sent")

    # -- what handlers share ----------------------------------------------------------------------------

    async def emit(self, *bodies: Body, reported_at: datetime | None = None) -> None:
        """Publish events; returns once they are durable (or safely queued)."""
        now = utcnow()
        await self.ctx.bus.publish(
            [
                Event(self.id, body, reported_at=reported_at or _body_time(body), received_at=now)
                for body in bodies
            ]
        )

    async def register_boot(self, boot: Booted) -> dict[str, Any]:
        """Decide Accepted / Pending / Rejected from the operator's admission; the BootNotification answer
        (the same three fields in every version). The first boot of a connection goes by what the handshake
        just read; a later one (a Pending station retrying) reads the admission again, so an operator's accept
        or reject reaches a station that never disconnected (B02/B03)."""
        if self._booted:
            self.auth = await self.ctx.store.charger(self.id) or self.auth
        self._booted = True
        self._max_power_w = None  # the charger may boot as another model
        status = {"accepted": "Accepted", "pending": "Pending"}.get(self.auth.admission, "Rejected")
        boot.registration = status
        now = utcnow()
        await self.ctx.store.record_boot(self.id, boot, now)
        self.message_limits.forget()  # the store forgets them if its firmware changed: read them again
        await self.emit(boot, reported_at=now)
        self.registration = status
        settings = self.ctx.settings
        interval = settings.heartbeat_interval if status == "Accepted" else settings.boot_retry_interval
        self.log.info("boot %s (%s %s, firmware %s)", status, boot.vendor, boot.model, boot.firmware_version)
        return {"status": status, "currentTime": ocpp_time(), "interval": interval}

    async def record_start(self, start: TransactionStarted, *, issue_id: bool = False) -> TxRecord:
        """Store a transaction start, once; `issue_id`: the charger has no id for it (1.6), we issue one."""
        return await self.ctx.store.start_transaction(
            self.id,
            transaction_id=None if issue_id else start.transaction_id,
            evse_id=start.evse_id,
            connector_id=start.connector_id,
            id_token=start.id_token,
            started_at=start.started_at,
            meter_start_wh=start.meter_start_wh,
        )

    async def record_end(
        self,
        end: TransactionEnded,
        id_token: str | None,
        evse_id: int | None = None,
        connector_id: int | None = None,
        *,
        issued_here: bool = False,
    ) -> TxRecord | None:
        """Store a transaction end, once (also of a transaction whose start we never saw). None: the id is
        another charger's (`issued_here`: ids we issue are unique over the fleet); nothing was written."""
        tx = await self.ctx.store.end_transaction(
            self.id,
            end.transaction_id,
            stopped_at=end.stopped_at,
            meter_stop_wh=end.meter_stop_wh,
            reason=end.reason,
            id_token=id_token,
            evse_id=evse_id,
            connector_id=connector_id,
            issued_here=issued_here,
        )
        if tx is None:
            TRANSACTION_CONFLICTS.labels("foreign_transaction").inc()
            self.log.warning("end of transaction %s ignored: it is another charger's", end.transaction_id)
        elif tx.second_stop:
            TRANSACTION_CONFLICTS.labels("second_stop").inc()
            self.log.warning(
                "transaction %s already ended; a different end (%s, %s Wh, %s) is not applied",
                end.transaction_id, end.stopped_at.isoformat(), end.meter_stop_wh, end.reason,
            )  # fmt: skip
        return tx

    async def judge_meter(
        self, transaction_id: str, evse_id: int | None, connector_id: int | None, readings: list[Reading]
    ) -> list[Body]:
        """A transaction's register readings judged (`ocpp_gateway.plausibility`) in the order the charger
        sent them; the implausible ones as events to store beside the samples. Billing counts the others."""
        if not readings:
            return []
        limits, now = await self.meter_limits(), clock.now()
        flags = await self.ctx.store.check_meter(self.id, transaction_id, readings, limits, now, evse_id)
        return flag_events(flags, transaction_id, evse_id, connector_id, self.log)

    async def meter_limits(self) -> MeterLimits:
        """How far the meter may rise: the model's rated power (read once per boot) or the ceiling."""
        settings = self.ctx.settings
        if self._max_power_w is None:
            rated = await self.ctx.store.max_power_kw(self.id)
            self._max_power_w = (rated or settings.meter_max_power_kw) * 1000
        return MeterLimits(self._max_power_w, settings.meter_max_clock_skew)

    async def authorize(self, id_token: str, *, record: bool = True) -> TokenStatus:
        """Every token is looked up, whatever its type (2.0.1 C01-C05). One we do not know but asked this
        charger to start with ourselves (a remote start from the API or a relayed call) is Accepted: the
        operator authorised it by sending it. `record=False`: answering a copy of a message already stored,
        so no second Authorization event."""
        token = await self.ctx.store.id_token(id_token, utcnow())
        if token.status == "Invalid" and self._remote_tokens is not None and id_token in self._remote_tokens:
            token = TokenStatus("Accepted")
        if record:
            await self.emit(Authorization(id_token, token.status))
        return token

    # -- handlers every version shares (the same payload fields in 1.6 and 2.x) ----------------------------

    async def on_heartbeat(self, p: Payload) -> Payload:
        """Refreshes last_seen, tells the time."""
        await self.emit(Heartbeat())
        return {"currentTime": ocpp_time()}

    async def on_firmware_status(self, p: Payload) -> Payload:
        """FirmwareStatusNotification (1.6 has no requestId)."""
        await self.emit(FirmwareStatus(p["status"], p.get("requestId")))
        return {}

    async def on_log_status(self, p: Payload) -> Payload:
        """LogStatusNotification (1.6 security extension and 2.x)."""
        await self.emit(LogStatus(p["status"], p.get("requestId")))
        return {}

    async def on_security_event(self, p: Payload) -> Payload:
        """SecurityEventNotification (1.6 security extension and 2.x)."""
        await self.emit(SecurityEvent(p["type"], p.get("techInfo")), reported_at=parse_time(p["timestamp"]))
        return {}

    # -- sending ------------------------------------------------------------------------------------------

    def _remember_remote_token(self, action: str, payload: dict[str, Any]) -> None:
        if action == "RemoteStartTransaction":
            token = payload.get("idTag")
        elif action in REMOTE_TOKEN_ACTIONS:
            token = (payload.get("idToken") or {}).get("idToken")
        else:
            return
        if isinstance(token, str):
            kept = self._remote_tokens = self._remote_tokens or {}
            kept.pop(token, None)
            kept[token] = None
            while len(kept) > REMOTE_TOKENS_KEPT:
                del kept[next(iter(kept))]

    async def execute(self, action: str, payload: dict[str, Any], timeout: float) -> CommandReply:
        """Send one CSMS-initiated call (OCPP field names in and out) and wait for the charger's answer.
        Neutral `chargeops.*` commands are first turned into this version's OCPP call, and where they have
        neutral answers (DER) the answer back into neutral words (`ocpp_gateway.commands`; certificate
        commands are calls of their own, `ocpp_gateway.certificate_commands`). A list request
        too big for the station's message limits goes out in parts, answered as one (`split_calls`)."""
        command = action
        if (certificate_command := CERTIFICATE_COMMANDS.get(action)) is not None:
            return await certificate_command(self.version, payload, lambda a, p: self.execute(a, p, timeout))
        try:
            action, payload = to_ocpp(self.version, action, payload)
        except Unsupported as err:
            return CommandReply("invalid", error_code="NotSupported", description=str(err))
        except ValueError as err:
            return CommandReply("invalid", error_code=self.version.format_violation, description=str(err))
        if action not in self.version.csms_actions():
            return CommandReply(
                "invalid",
                error_code="NotImplemented",
                description=f"{action} is not a CSMS-initiated OCPP {self.version.name} action",
            )
        try:
            validate(self.version, action, payload, response=False, unique_id="-")
        except RpcError as err:
            return CommandReply(
                "invalid", error_code=err.code, description=err.description, details=err.details
            )
        problem = await url_problem(action, payload, self.ctx.settings.allow_private_urls)
        if problem:
            return CommandReply("invalid", error_code="UrlRefused", description=problem)
        if (bad_key := passwords.call_problem(self.version, action, payload)) is not None:
            return CommandReply("invalid", error_code="PropertyConstraintViolation", description=bad_key)
        self._remember_remote_token(action, payload)
        if action in SPLITS:
            reply = await call_in_parts(self._call, self.message_limits, action, payload, timeout, self.log)
        elif command == SEND_LOCAL_LIST and self.version is not V16:
            reply = await call_fitted(self._call, self.message_limits, action, payload, timeout, self.log)
        else:
            reply = await self._call(action, payload, timeout)
        if reply.outcome != "result":
            return reply
        if (reboot := reboot_requested(action, payload, reply.payload)) is not None:
            await self.emit(RebootRequested(reboot))
        if (profile := profile_agreed(action, payload, reply.payload)) is not None:
            await self.ctx.store.set_pending_profile(self.id, profile)
        new_password = passwords.password_set_by(action, payload)
        if new_password is not None and passwords.accepted(action, reply.payload):
            hashed = await asyncio.to_thread(hash_password, new_password)
            await self.ctx.store.set_pending_password(self.id, hashed)
            self.log.info("accepted a new password; the old one works until it connects with the new one")
        return CommandReply("result", payload=from_ocpp(command, reply.payload))

    async def _call(self, action: str, payload: dict[str, Any], timeout: float) -> CommandReply:
        """One call on the wire, its answer checked against the schema and given as the charger sent it."""
        async with self._call_lock:
            unique_id = str(uuid.uuid4())
            fut: asyncio.Future[CallResult | CallError] = asyncio.get_running_loop().create_future()
            self._waiting = (unique_id, action, fut)
            started = time.perf_counter()
            OCPP_MESSAGES.labels(action, "out").inc()
            try:
                await self._connection.send(pack_call(unique_id, action, payload))
                answer = await asyncio.wait_for(fut, timeout)
            except TimeoutError:
                self.log.warning("%s: no answer within %.0f s", action, timeout)
                return CommandReply("timeout", description=f"no answer within {timeout:g} s")
            except (ConnectionClosed, ConnectionError):
                return CommandReply("not_connected", description="charger disconnected")
            finally:
                self._waiting = None
                OCPP_OUTGOING_SECONDS.labels(action).observe(time.perf_counter() - started)
        if isinstance(answer, CallError):
            OCPP_CALL_ERRORS.labels(label(answer.code), "in").inc()
            return CommandReply(
                "error", error_code=answer.code, description=answer.description, details=answer.details
            )
        try:
            validate(self.version, action, answer.payload, response=True, unique_id=unique_id)
        except RpcError as err:
            self.log.warning("%s answer breaks the schema: %s", action, err.description)
            return CommandReply(
                "bad_response", payload=answer.payload, error_code=err.code, description=err.description
            )
        return CommandReply("result", payload=answer.payload)

    async def close(self, code: int = 1000, reason: str = "") -> None:
        await self._connection.close(code, reason)


def _body_time(body: Body) -> datetime | None:
    """Meter values carry their own sample time."""
    if isinstance(body, MeterValues) and body.samples:
        return body.samples[0].sampled_at
    if isinstance(body, MeterImplausible):
        return body.sampled_at
    return None
