"""The ops engine on the version-neutral events, against a real database (SQLite and Postgres): rule matching,
one ticket per charger and fault, re-delivery, escalation, clearing, boot loops, offline chargers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest
from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from chargeops.db.models import Charger, Connector, MeterRollup1m, StoredEvent
from chargeops.db.ops_models import Stock, Ticket
from chargeops.events import (
    Booted,
    Connected,
    Event,
    FaultReported,
    FirmwareStatus,
    RebootRequested,
    SecurityEvent,
    StatusChanged,
    utcnow,
)
from firmware_stubs.charger import FAULT_CODES
from ops.engine import OpsEngine
from ops.maintenance import transition
from ops.registry import FleetDoc, apply_fleet
from ops.rules import Observation, load_rules
from tests.conftest import migrated_sessions

T0 = utcnow() - timedelta(minutes=5)
FLEET = FleetDoc.model_validate(
    {
        "regions": [{"id": "north"}],
        "depots": [{"id": "D1", "region": "north"}],
        "sites": [{"id": "s1", "depot": "D1"}],
        "chargers": [{"id": "CP1", "site": "s1", "vendor": "Generic", "model": "AC22"}],
        "stock": [
            {"depot": "D1", "sku": "RCD-B-40A", "on_hand": 5},
            {"depot": "D1", "sku": "MTR-AC", "on_hand": 3},
        ],
    }
)


@pytest.fixture
async def engine(db_url: str) -> AsyncIterator[OpsEngine]:
    async with migrated_sessions(db_url) as sessions:
        ops = OpsEngine(sessions)
        await ops.prepare()
        async with sessions() as session, session.begin():
            await apply_fleet(session, FLEET)
        yield ops


def fault(code: str, component: str = "Connector", *, seconds: int = 0, cleared: bool = False) -> Event:
    return Event(
        "CP1",
        FaultReported(1, 1, component, code, "info", "V-1", cleared),
        reported_at=T0 + timedelta(seconds=seconds),
    )


async def tickets(sessions: async_sessionmaker[AsyncSession], kind: str = "maintenance") -> list[Ticket]:
    async with sessions() as session:
        rows = await session.scalars(select(Ticket).where(Ticket.kind == kind).order_by(Ticket.id))
        return list(rows.all())


def test_every_simulated_fault_and_its_201_component_has_a_specific_rule() -> None:
    book = load_rules()
    for code in FAULT_CODES:
        rule = book.match(Observation("fault", "CP1", "k", T0, code=code, component="Connector"))
        assert rule is not None, code
        if code not in ("LocalListConflict", "OtherError"):
            assert rule.id != "other-fault", code
    assert (
        book.match(Observation("fault", "CP1", "k", T0, code="RCD.Tripped", component="RCD")).id
        == "earth-fault"
    )  # type: ignore[union-attr]


def test_a_broken_rules_file_is_refused_with_the_field_named(tmp_path: Path) -> None:
    bad = tmp_path / "rules.yaml"
    bad.write_text("rules:\n  - id: x\n    match: [{event: fault}]\n    diagnosis: d\n    priority: P9\n")
    with pytest.raises(ValidationError, match="priority"):
        load_rules(bad)


@pytest.mark.parametrize("db_url", ["sqlite", "postgres"], indirect=True)
async def test_one_ticket_per_fault_repeats_escalate_redelivery_does_not_count(engine: OpsEngine) -> None:
    first = fault("GroundFailure")
    await engine.handle([first])
    await engine.handle([first])  # re-delivered by the broker
    [ticket] = await tickets(engine.sessions)
    # The site names no region: the depot's is used.
    assert (ticket.rule, ticket.priority, ticket.occurrences, ticket.depot, ticket.region) == (
        "earth-fault",
        "P1",
        1,
        "D1",
        "north",
    )
    assert ticket.parts == [{"sku": "RCD-B-40A", "qty": 1}, {"sku": "CBL-T2-32A", "qty": 1}]
    await engine.handle([fault("GroundFailure", cleared=True, seconds=1)])
    await engine.handle([fault("GroundFailure", seconds=2)])
    [ticket] = await tickets(engine.sessions)
    assert ticket.occurrences == 2 and ticket.cleared_at is None
    # Back after it had cleared: a new failure, so its parts are reserved again (an AC22 holds two of each).
    assert ticket.parts == [{"sku": "RCD-B-40A", "qty": 2}, {"sku": "CBL-T2-32A", "qty": 2}]

    # power-module (P2) escalates to P1 on its third occurrence.
    for n in range(3):
        await engine.handle([fault("OverVoltage", seconds=10 + n)])
    [module] = [t for t in await tickets(engine.sessions) if t.rule == "power-module"]
    assert module.occurrences == 3 and module.priority == "P1"
    async with engine.sessions() as session:
        stock = await session.get(Stock, ("D1", "RCD-B-40A"))
        assert stock is not None and (stock.on_hand, stock.reserved) == (5, 2)
    # No cable in stock: purchase orders bring its inventory position (on hand − reserved + on order) back
    # above the reorder point (several may be open); the RCDs' position (5 − 2) is still above theirs.
    supply = await tickets(engine.sessions, "supply")
    assert {(t.sku, t.depot, t.status) for t in supply} == {("CBL-T2-32A", "D1", "open")}
    async with engine.sessions() as session:
        cable = await session.get(Stock, ("D1", "CBL-T2-32A"))
        assert cable is not None
        assert cable.on_order == sum(t.qty or 0 for t in supply if t.sku == "CBL-T2-32A")
        assert cable.on_hand - cable.reserved + cable.on_order >= 1


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_an_error_free_status_clears_the_connector_fault_in_the_same_batch_or_later(
    engine: OpsEngine,
) -> None:
    """1.6 clears a connector fault with a status without an error code: also when the fault and its
    clearing arrive in one batch, and only on the connector that had it."""
    ok = Event("CP1", StatusChanged(1, 1, "Available"), reported_at=T0 + timedelta(seconds=1))
    other = Event("CP1", StatusChanged(2, 2, "Available"), reported_at=T0 + timedelta(seconds=1))
    await engine.handle([fault("GroundFailure"), ok])
    [ticket] = await tickets(engine.sessions)
    assert ticket.cleared_at is not None
    await engine.handle([fault("HighTemperature", seconds=2), other])
    [_, hot] = await tickets(engine.sessions)
    assert hot.rule != ticket.rule and hot.cleared_at is None  # EVSE 2's status says nothing about EVSE 1
    await engine.handle([ok])
    assert all(t.cleared_at is not None for t in await tickets(engine.sessions))


async def test_security_firmware_boot_loop_and_offline(engine: OpsEngine) -> None:
    await engine.handle([Event("CP1", SecurityEvent("TamperDetectionActivated", "door"), reported_at=T0)])
    await engine.handle([Event("CP1", FirmwareStatus("InstallationFailed"), reported_at=T0)])
    await engine.handle([Event("CP1", FirmwareStatus("Installed"), reported_at=T0)])  # not a failure
    boots = [Event("CP1", Booted("Generic", "AC22"), reported_at=T0 + timedelta(seconds=i)) for i in range(3)]
    async with engine.sessions() as session, session.begin():
        session.add_all(
            StoredEvent(
                event_id=b.event_id, charger_id="CP1", kind=b.kind.value, received_at=utcnow(), data={}
            )
            for b in boots[:2]
        )
    await engine.handle(boots[2:])
    async with engine.sessions() as session, session.begin():
        charger = await session.get(Charger, "CP1")
        assert charger is not None
        charger.last_seen = utcnow() - timedelta(hours=2)
    await engine.scan()
    await engine.scan()  # the same silence is one occurrence
    by_rule = {t.rule: t for t in await tickets(engine.sessions)}
    assert set(by_rule) == {"security", "firmware-failed", "boot-loop", "offline"}
    assert by_rule["security"].priority == "P1" and by_rule["offline"].occurrences == 1
    assert by_rule["boot-loop"].parts == [{"sku": "CB-MAIN", "qty": 1}]
    await engine.handle([Event("CP1", Connected("ocpp1.6", "gw", "s"))])
    offline = {t.rule: t for t in await tickets(engine.sessions)}["offline"]
    assert offline.cleared_at is not None and offline.status == "open"


@pytest.mark.parametrize("db_url", ["sqlite", "postgres"], indirect=True)
async def test_charging_with_flat_energy_or_far_below_the_offer(engine: OpsEngine) -> None:
    """15 one-minute rollups of a Charging connector: flat register, 2 kW drawn of 22 kW offered, 40 % SoC."""
    now = utcnow().replace(second=0, microsecond=0)
    readings = {"Energy.Active.Import.Register": (1000.0, 0.0), "Power.Active.Import": (2000.0, None)}
    readings |= {"Power.Offered": (22000.0, None), "SoC": (40.0, None)}
    async with engine.sessions() as session, session.begin():
        session.add(Connector(charger_id="CP1", evse_id=1, connector_id=1, status="Charging"))
        for minute in range(15):
            at = now - timedelta(minutes=minute)
            for measurand, (value, energy) in readings.items():
                session.add(
                    MeterRollup1m(
                        charger_id="CP1", evse_id=1, measurand=measurand, phase="", bucket=at, samples=1,
                        min=value, max=value, avg=value, last=value, last_at=at, energy_wh=energy,
                    )
                )  # fmt: skip
    await engine.scan()
    await engine.scan()  # the same window: no second occurrence
    by_rule = {t.rule: t for t in await tickets(engine.sessions)}
    assert set(by_rule) == {"energy-stalled", "power-low"}
    assert by_rule["power-low"].occurrences == 1 and by_rule["energy-stalled"].occurrences == 1
    assert by_rule["power-low"].description == "drawing 2.0 kW of 22.0 kW offered"


async def test_reboots_the_central_system_asked_for_are_no_boot_loop(engine: OpsEngine) -> None:
    """Issue 11: a Reset or TriggerMessage BootNotification the charger agreed to excuses the next boot, and a
    2.x boot with a requested reason (RemoteReset, Triggered, ...) is not counted: no false ticket."""
    now = utcnow()
    requested = [
        Event("CP1", RebootRequested("reset"), reported_at=now - timedelta(seconds=60 - i)) for i in (0, 1)
    ]
    boots = [
        Event("CP1", Booted("Generic", "AC22"), reported_at=now - timedelta(seconds=50)),
        Event("CP1", Booted("Generic", "AC22"), reported_at=now - timedelta(seconds=40)),
        Event(
            "CP1", Booted("Generic", "AC22", reason="RemoteReset"), reported_at=now - timedelta(seconds=30)
        ),
    ]
    async with engine.sessions() as session, session.begin():
        session.add_all(
            StoredEvent(
                event_id=e.event_id,
                charger_id="CP1",
                kind=e.kind.value,
                received_at=e.reported_at,
                data={"reason": getattr(e.body, "reason", None)},
            )
            for e in [*requested, *boots[:2]]
        )
    await engine.handle(boots[2:])
    assert [t.rule for t in await tickets(engine.sessions)] == []
    # One boot of its own on top is still not three unrequested ones; three are.
    own = [Event("CP2", Booted("Generic", "AC22"), reported_at=now - timedelta(seconds=i)) for i in (3, 2, 1)]
    for e in own:
        await engine.handle([e])
        async with engine.sessions() as session, session.begin():
            session.add(
                StoredEvent(
                    event_id=e.event_id, charger_id="CP2", kind=e.kind.value, received_at=utcnow(), data={}
                )
            )
    assert [t.rule for t in await tickets(engine.sessions)] == ["boot-loop"]


async def test_critical_security_events_open_tickets_unless_we_explain_them(engine: OpsEngine) -> None:
    """Issue 12: a critical security event that means compromise or a state nobody explains opens a ticket as
    tamper does; the routine critical ones (a boot, a clock sync, the reset we asked for, the firmware update
    we sent, a crew logging in at work) and the non-critical ones do not."""
    now = utcnow()

    def security(cp: str, kind: str) -> Event:
        return Event(cp, SecurityEvent(kind, "info"), reported_at=now)

    async with engine.sessions() as session, session.begin():
        for cp, command, ago in (
            ("CP1", "reset", timedelta(minutes=5)),
            ("CP2", "firmware_update", timedelta(hours=3)),  # scheduled: installed hours later
            ("CP5", "reset", timedelta(hours=25)),  # too long ago to explain a reboot now
        ):
            request = Event(cp, RebootRequested(command), reported_at=now - ago, received_at=now - ago)
            session.add(
                StoredEvent(
                    event_id=request.event_id,
                    charger_id=cp,
                    kind=request.kind.value,
                    received_at=now - ago,
                    data={"command": command},
                )
            )
    await engine.handle([Event("CP3", FaultReported(1, 1, "Connector", "GroundFailure"), reported_at=now)])
    [crew_job] = await tickets(engine.sessions)
    async with engine.sessions() as session, session.begin():
        job = await session.get(Ticket, crew_job.id)
        assert job is not None
        await transition(session, job, "in_progress", "crew")
    routine = [
        *(security("CP1", k) for k in ("StartupOfTheDevice", "SettingSystemTime", "ResetOrReboot")),
        *(security("CP2", k) for k in ("ResetOrReboot", "FirmwareUpdated")),
        *(security("CP3", k) for k in ("MaintenanceLoginAccepted", "ResetOrReboot", "FirmwareUpdated")),
        *(
            security("CP1", k)
            for k in ("InvalidMessages", "AttemptedReplayAttacks", "CsmsFailedToAuthenticate")
        ),
    ]
    await engine.handle(routine)
    assert [t.rule for t in await tickets(engine.sessions)] == ["earth-fault"]
    await engine.handle(
        [
            security("CP1", "SecurityLogWasCleared"),
            security("CP1", "FirmwareUpdated"),  # CP1 was asked to reset, not to update
            security("CP2", "MemoryExhaustion"),
            security("CP4", "MaintenanceLoginAccepted"),  # nobody at work on CP4
            security("CP4", "ResetOrReboot"),
            security("CP5", "ResetOrReboot"),
        ]
    )
    opened = {(t.charger_id, t.rule): (t.priority, t.occurrences) for t in await tickets(engine.sessions)}
    assert opened == {
        ("CP3", "earth-fault"): ("P1", 1),
        ("CP1", "security"): ("P1", 2),
        ("CP2", "security-state"): ("P2", 1),
        ("CP4", "security"): ("P1", 1),
        ("CP4", "security-state"): ("P2", 1),
        ("CP5", "security-state"): ("P2", 1),
    }
