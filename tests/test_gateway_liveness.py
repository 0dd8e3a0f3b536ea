"""Gateway liveness (issue 14.4; docs/bus.md, "Gateway presence"): a gateway process that dies or is replaced
leaves no charger recorded `connected` on it.

Real processes (`serve --roles ingest` and `--roles gateway`), the machine's Mosquitto under a fresh topic
root, a fresh Postgres database, raw OCPP chargers on loopback. The broker announces a SIGKILLed gateway
through its Will; ingest turns it into `Disconnected(reason="gateway_lost")` events for the sessions the
lost run still holds.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiomqtt
import asyncpg
import orjson
import pytest
from sqlalchemy import select, update

from chargeops.db.engine import make_engine, make_sessionmaker
from chargeops.db.migrate import upgrade
from chargeops.db.models import Charger, StoredEvent
from chargeops.events import Connected, Event
from telemetry.gateway_presence import REASON, stranded
from telemetry.ingest import store_events
from telemetry.mqtt.presence import GatewayPresence
from tests.conftest import migrated_sessions
from tests.mqtt_brokers import SharedMosquitto
from tests.ocpp_client import RawCharger, raw_charger
from tests.server_process import ROOT, Server
from tests.waiting import until

pytestmark = pytest.mark.timeout(120)

BROKER = SharedMosquitto()


class Fleet:
    """An ingest process and gateways on one fresh topic root and database; raw chargers held open."""

    def __init__(self, pg_url: str, workdir: Path) -> None:
        self.root = f"liveness-{uuid.uuid4().hex[:10]}"
        self.dsn = pg_url.replace("postgresql+asyncpg://", "postgresql://")
        self.workdir = workdir
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("CHARGEOPS_")},
            "CHARGEOPS_MQTT_URL": BROKER.url(self.root),
            "CHARGEOPS_DATABASE_URL": pg_url,
            "CHARGEOPS_SPOOL_DIR": str(workdir / "spool"),
            "PYTHONPATH": str(ROOT),
        }
        self.servers: list[Server] = []
        self.ports: dict[str, int] = {}
        self._chargers = contextlib.AsyncExitStack()

    async def ingest(self) -> Server:
        env = {**self.env, "CHARGEOPS_NODE_ID": "ingest-1"}
        server = await Server.start("ingest", "ingest", env, ROOT)
        self.servers.append(server)
        await server.wait_for_line("gateway presence: durable shared subscription")
        return server

    async def gateway(self, gateway_id: str, mqtt_port: int | None = None) -> Server:
        env = {**self.env, "CHARGEOPS_GATEWAY_ID": gateway_id, "CHARGEOPS_NODE_ID": gateway_id}
        if mqtt_port is not None:  # through a link the test can cut
            env["CHARGEOPS_MQTT_URL"] = f"mqtt://127.0.0.1:{mqtt_port}/{self.root}"
        server = await Server.start(
            gateway_id, "gateway", env, self.workdir, ocpp_port=0, accept_unknown=True
        )
        self.servers.append(server)
        self.ports[gateway_id] = await server.port_after("OCPP gateway listening on")
        return server

    async def connect(self, gateway_id: str, charger_id: str) -> RawCharger:
        charger = await self._chargers.enter_async_context(raw_charger(self.ports[gateway_id], charger_id))
        await charger.boot()
        return charger

    async def rows(self, *charger_ids: str) -> dict[str, tuple[bool, str | None]]:
        """(connected, gateway_id) per charger."""
        conn = await asyncpg.connect(self.dsn)
        try:
            found = await conn.fetch(
                "SELECT id, connected, gateway_id FROM chargers WHERE id = ANY($1)", list(charger_ids)
            )
        finally:
            await conn.close()
        return {r["id"]: (r["connected"], r["gateway_id"]) for r in found}

    async def wait_rows(self, expected: dict[str, tuple[bool, str | None]], timeout: float = 15.0) -> None:
        async def matches() -> bool:
            return await self.rows(*expected) == expected

        try:
            await until(matches, timeout=timeout, what=f"rows {expected}", interval=0.1)
        except AssertionError:
            raise AssertionError(f"{await self.rows(*expected)} != {expected}\n{self.logs()}") from None

    async def lost_events(self) -> dict[str, str]:
        """charger → session of each stored `gateway_lost` disconnect."""
        conn = await asyncpg.connect(self.dsn)
        try:
            found = await conn.fetch(
                "SELECT charger_id, data FROM events WHERE kind = 'disconnected' "
                "AND (data::jsonb)->>'reason' = $1",
                REASON,
            )
        finally:
            await conn.close()
        return {r["charger_id"]: orjson.loads(r["data"])["session_id"] for r in found}

    async def retained_presence(self, gateway_id: str) -> dict[str, Any]:
        """What a newcomer subscribing to the gateway's presence topic is told (the retained message)."""
        topic = f"{self.root}/v2/gateways/{gateway_id}"
        async with aiomqtt.Client(BROKER.host, BROKER.port, protocol=aiomqtt.ProtocolVersion.V5) as client:
            await client.subscribe(topic, qos=1)
            async with asyncio.timeout(5):
                async for msg in client.messages:
                    assert msg.retain
                    return dict(orjson.loads(bytes(msg.payload)))  # type: ignore[arg-type]
        raise AssertionError("no retained presence")

    def logs(self) -> str:
        return "\n".join(f"--- {s.name}\n" + "\n".join(s.lines[-40:]) for s in self.servers)

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self._chargers.aclose()
        for server in self.servers:
            if server.proc.returncode is None and server.proc.pid:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(server.proc.pid, signal.SIGCONT)
        await asyncio.gather(*(s.stop() for s in self.servers), return_exceptions=True)


class CuttableLink:
    """A TCP relay to the broker: `cut()` drops every connection through it (no MQTT DISCONNECT, as when a
    network fails) and refuses new ones until `mend()`."""

    def __init__(self) -> None:
        self.port = 0
        self.blocked = False
        self._pipes: set[asyncio.StreamWriter] = set()
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.blocked:
            writer.transport.abort()
            return
        up_reader, up_writer = await asyncio.open_connection(BROKER.host, BROKER.port)
        self._pipes |= {writer, up_writer}

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(ConnectionError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.transport.abort()

        await asyncio.gather(pump(reader, up_writer), pump(up_reader, writer))
        self._pipes -= {writer, up_writer}

    def cut(self) -> None:
        self.blocked = True
        for pipe in list(self._pipes):
            pipe.transport.abort()

    def mend(self) -> None:
        self.blocked = False

    async def close(self) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


@pytest.fixture
async def fleet(pg_url: str, tmp_path: Path) -> AsyncIterator[Fleet]:
    engine = make_engine(pg_url)
    try:
        await upgrade(engine)
    finally:
        await engine.dispose()
    f = Fleet(pg_url, tmp_path)
    try:
        yield f
    finally:
        await f.close()


@pytest.mark.postgres
async def test_a_sigkilled_gateways_chargers_are_disconnected_by_its_will(fleet: Fleet) -> None:
    ingest = await fleet.ingest()
    gw_a = await fleet.gateway("gw-a")
    await fleet.gateway("gw-b")
    for n in range(3):
        await fleet.connect("gw-a", f"LIVE-A{n}")
    await fleet.connect("gw-a", "LIVE-MOVER")
    await fleet.connect("gw-b", "LIVE-B0")
    on_a = {f"LIVE-A{n}": (True, "gw-a") for n in range(3)}
    await fleet.wait_rows({**on_a, "LIVE-MOVER": (True, "gw-a"), "LIVE-B0": (True, "gw-b")})
    online = await fleet.retained_presence("gw-a")
    assert online["state"] == "online" and online["gateway_id"] == "gw-a", online

    # Ingest is held while gw-a dies and LIVE-MOVER reconnects to gw-b: the Will and the move wait for it
    # together, in whatever order it takes them.
    os.kill(ingest.proc.pid, signal.SIGSTOP)
    try:
        os.kill(gw_a.proc.pid, signal.SIGKILL)
        await gw_a.proc.wait()
        await fleet.connect("gw-b", "LIVE-MOVER")
        await asyncio.sleep(0.5)
    finally:
        os.kill(ingest.proc.pid, signal.SIGCONT)

    lost = await fleet.retained_presence("gw-a")
    assert lost == {**online, "state": "offline"}, (online, lost)  # the broker published the Will
    await fleet.wait_rows(
        {**{c: (False, "gw-a") for c in on_a}, "LIVE-MOVER": (True, "gw-b"), "LIVE-B0": (True, "gw-b")}
    )
    await until(lambda: ingest.saw("gateway gw-a run"), what="the presence applied", timeout=10)
    # the disconnects went the way a normal one goes: as events, stored by ingest
    stored = await fleet.lost_events()
    assert set(on_a) <= set(stored) <= {*on_a, "LIVE-MOVER"}, stored
    await asyncio.sleep(1.0)
    assert (await fleet.rows("LIVE-MOVER"))["LIVE-MOVER"] == (True, "gw-b")


@pytest.mark.postgres
async def test_a_gateway_restarted_with_the_same_id_clears_what_its_previous_run_left(fleet: Fleet) -> None:
    """Leftovers a lost Will would leave (a broker crash, a database from before migration 0022): rows
    connected on gw-a under another run. The new run's `online` clears them; its own chargers stay; a clean
    stop says `offline` itself."""
    await fleet.ingest()
    conn = await asyncpg.connect(fleet.dsn)
    try:
        await conn.executemany(
            "INSERT INTO chargers (id, security_profile, kind, admission, connected, gateway_id, "
            "gateway_instance, session_id, created_at, updated_at) "
            "VALUES ($1, 0, 'charger', 'accepted', true, $2, $3, $4, now(), now())",
            [
                ("LIVE-OLD1", "gw-a", "previousrun1", str(uuid.uuid4())),
                ("LIVE-OLD2", "gw-a", None, str(uuid.uuid4())),  # connected before migration 0022
                ("LIVE-ELSEWHERE", "gw-z", "otherrun0001", str(uuid.uuid4())),
            ],
        )
    finally:
        await conn.close()
    gw_a = await fleet.gateway("gw-a")
    await fleet.connect("gw-a", "LIVE-NEW")
    await fleet.wait_rows(
        {
            "LIVE-OLD1": (False, "gw-a"),
            "LIVE-OLD2": (False, "gw-a"),
            "LIVE-ELSEWHERE": (True, "gw-z"),
            "LIVE-NEW": (True, "gw-a"),
        }
    )
    assert set(await fleet.lost_events()) == {"LIVE-OLD1", "LIVE-OLD2"}
    online = await fleet.retained_presence("gw-a")
    assert online["state"] == "online"

    await gw_a.stop()  # SIGTERM
    assert await fleet.retained_presence("gw-a") == {**online, "state": "offline"}
    await fleet.wait_rows({"LIVE-NEW": (False, "gw-a")})


@pytest.mark.postgres
async def test_a_gateway_cut_off_from_the_broker_announces_its_chargers_again(fleet: Fleet) -> None:
    """The gateway lives and keeps its chargers, but its broker link fails: the broker publishes its Will and
    ingest marks them disconnected; once the link is back the gateway announces them again, under its new
    broker connection, which a late Will of the old one cannot undo."""
    link = CuttableLink()
    await link.start()
    try:
        await fleet.ingest()
        gateway = await fleet.gateway("gw-p", mqtt_port=link.port)
        charger = await fleet.connect("gw-p", "LIVE-P0")
        await fleet.wait_rows({"LIVE-P0": (True, "gw-p")})
        before = await fleet.retained_presence("gw-p")

        link.cut()
        await fleet.wait_rows({"LIVE-P0": (False, "gw-p")})  # the Will, applied
        assert "LIVE-P0" in await fleet.lost_events()
        link.mend()
        await fleet.wait_rows({"LIVE-P0": (True, "gw-p")}, timeout=30)
        await until(lambda: gateway.saw("chargers announced again"), what="the announcement", timeout=10)
        after = await fleet.retained_presence("gw-p")
        assert after["state"] == "online", after
        run = before["instance"].rsplit(".", 1)[0]
        assert after["instance"].rsplit(".", 1)[0] == run and after["instance"] != before["instance"]
        assert (await charger.boot())["status"] == "Accepted"  # the charger never noticed
        await asyncio.sleep(1.0)
        assert await fleet.rows("LIVE-P0") == {"LIVE-P0": (True, "gw-p")}
    finally:
        await link.close()


@pytest.mark.postgres
async def test_a_lost_runs_disconnect_leaves_a_charger_that_reconnected_first(pg_url: str) -> None:
    """The race the conditional update settles: the lost run's chargers are read, the charger's Connected
    from another gateway is stored, then the lost run's disconnect arrives. It names the old session, so the
    new one stays connected."""
    engine = make_engine(pg_url)
    try:
        await upgrade(engine)
        sessions = make_sessionmaker(engine)
        old, new = str(uuid.uuid4()), str(uuid.uuid4())
        async with sessions() as s, s.begin():
            s.add(Charger(id="RACE1", admission="accepted"))
        await store_events(sessions, [Event("RACE1", Connected("ocpp1.6", "gw-a", old, "run-a.1"))])
        pending = await stranded(
            sessions, GatewayPresence("gw-a", "run-a.1", datetime.now(UTC), online=False)
        )
        assert [(e.charger_id, e.body.session_id) for e in pending] == [("RACE1", old)]  # type: ignore[attr-defined]
        await store_events(sessions, [Event("RACE1", Connected("ocpp1.6", "gw-b", new, "run-b.1"))])
        await store_events(sessions, pending)
        await store_events(sessions, pending)  # redelivered: stored once, changes nothing
        async with sessions() as s:
            row = await s.get(Charger, "RACE1")
            assert row is not None
            assert (row.connected, row.gateway_id, row.gateway_instance, row.session_id) == (
                True,
                "gw-b",
                "run-b.1",
                new,
            )
        # without the reconnect, the same disconnect does clear it
        async with sessions() as s, s.begin():
            await s.execute(update(Charger).values(session_id=old, gateway_id="gw-a"))
        await store_events(sessions, pending)
        async with sessions() as s:
            row = await s.get(Charger, "RACE1")
            assert row is not None and row.connected is False
        # announced again under the run's next broker connection: a late Will of the old one finds nothing,
        # nor does the run's own `online`; the next run's `online` does
        await store_events(sessions, [Event("RACE1", Connected("ocpp1.6", "gw-a", old, "run-a.2"))])
        at = datetime.now(UTC)
        assert await stranded(sessions, GatewayPresence("gw-a", "run-a.1", at, online=False)) == []
        assert await stranded(sessions, GatewayPresence("gw-a", "run-a.3", at, online=True)) == []
        assert len(await stranded(sessions, GatewayPresence("gw-a", "run-c.1", at, online=True))) == 1
    finally:
        await engine.dispose()


async def test_one_process_without_a_broker_clears_what_a_crashed_run_left(
    start_runtime: Any, sqlite_url: str
) -> None:
    """No broker, no Will: `serve` with every role in one process clears, on start, the chargers an earlier
    run of its gateway id left connected (it crashed: nobody stored their disconnects)."""
    async with migrated_sessions(sqlite_url) as sessions, sessions.begin() as s:
        for cid, gw in (("EMB-LEFT", "gw-1"), ("EMB-OTHER", "gw-9")):
            s.add(
                Charger(
                    id=cid, connected=True, gateway_id=gw, gateway_instance="crashedrun01", session_id=cid
                )
            )
    runtime = await start_runtime()
    async with runtime.sessions() as s:
        left, other = await s.get(Charger, "EMB-LEFT"), await s.get(Charger, "EMB-OTHER")
        assert left is not None and other is not None
        assert (left.connected, other.connected) == (False, True)
        reasons = (
            await s.scalars(select(StoredEvent.data).where(StoredEvent.charger_id == "EMB-LEFT"))
        ).all()
        assert [r["reason"] for r in reasons] == [REASON]
