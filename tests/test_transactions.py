"""Transactions and meter values: ids, idempotent replays, late offline events, every measurand kept,
energy counted once — on SQLite and on Postgres."""

from __future__ import annotations

import json
import uuid
from collections import Counter
from collections.abc import Sequence
from typing import Any

import pytest
from prometheus_client import REGISTRY
from sqlalchemy import func, select

from chargeops.db.models import IdToken, MeterSample, StoredEvent, Transaction, TransactionSeqNo
from chargeops.events import Event, EventKind
from tests.conftest import StartRuntime
from tests.ocpp_client import RawCharger, assert_strictly_valid, raw_charger

PRESENCE = (EventKind.CONNECTED, EventKind.DISCONNECTED, EventKind.BOOTED)


def mv(ts: str, wh: float, context: str = "Sample.Periodic", v2: bool = False) -> dict:
    def val(x: float) -> float | str:
        return x if v2 else str(x)

    values = [
        {"value": val(wh), "measurand": "Energy.Active.Import.Register", "context": context},
        {"value": val(7400.0), "measurand": "Power.Active.Import", "context": context},
        {"value": val(32.0), "measurand": "Current.Import", "phase": "L1", "context": context},
        {"value": val(231.0), "measurand": "Voltage", "phase": "L1-N", "context": context},
        {"value": val(61.0), "measurand": "SoC", "location": "EV", "context": context},
    ]
    for v in values:
        if v2:
            v["unitOfMeasure"] = {
                "unit": {
                    "Energy.Active.Import.Register": "Wh",
                    "Power.Active.Import": "W",
                    "Current.Import": "A",
                    "Voltage": "V",
                    "SoC": "Percent",
                }[v["measurand"]]
            }
    return {"timestamp": ts, "sampledValue": values}


async def add_token(runtime, token: str, status: str = "Accepted") -> None:  # type: ignore[no-untyped-def]
    async with runtime.sessions() as session, session.begin():
        session.add(IdToken(id_token=token, status=status, type="ISO14443"))


async def test_v16_session_is_idempotent_under_replay(start_runtime: StartRuntime, db_url: str) -> None:
    runtime = await start_runtime(database_url=db_url, accept_unknown=True)
    await add_token(runtime, "GOOD")
    await add_token(runtime, "BLOCKED", "Blocked")
    port = runtime.gateway.port  # type: ignore[union-attr]
    start = {"connectorId": 1, "idTag": "GOOD", "meterStart": 10_000, "timestamp": "2026-11-25T10:00:00Z"}
    meter = {"connectorId": 1, "transactionId": 0, "meterValue": [mv("2026-11-25T10:10:00Z", 13_000)]}
    async with raw_charger(port, "CP16") as cp:
        await cp.boot()
        assert (await cp.result("Authorize", {"idTag": "BLOCKED"}))["idTagInfo"]["status"] == "Blocked"
        assert (await cp.result("Authorize", {"idTag": "NOBODY"}))["idTagInfo"]["status"] == "Invalid"
        first = await cp.result("StartTransaction", start)
        assert first["idTagInfo"]["status"] == "Accepted"
        tx_id = first["transactionId"]
        meter["transactionId"] = tx_id
        await cp.result("MeterValues", meter)
    # the charger reconnects and replays what it was not sure we got
    async with raw_charger(port, "CP16") as cp:
        assert (await cp.result("StartTransaction", start))["transactionId"] == tx_id
        await cp.result("MeterValues", meter)
        stop = {
            "transactionId": tx_id,
            "meterStop": 16_500,
            "timestamp": "2026-11-25T10:30:00Z",
            "reason": "EVDisconnected",
            "transactionData": [mv("2026-11-25T10:30:00Z", 16_500, "Transaction.End")],
        }
        await cp.result("StopTransaction", stop)
        await cp.result("StopTransaction", stop)
        second = await cp.result("StartTransaction", {**start, "timestamp": "2026-11-25T11:00:00Z"})
        assert second["transactionId"] != tx_id
    async with runtime.sessions() as session:
        txs = (await session.execute(select(Transaction).order_by(Transaction.id))).scalars().all()
        samples = (await session.execute(select(func.count()).select_from(MeterSample))).scalar_one()
        measurands = set((await session.execute(select(MeterSample.measurand, MeterSample.phase))).all())
    assert len(txs) == 2
    done = txs[0]
    assert done.transaction_id == str(tx_id) and not done.active and done.stop_reason == "EVDisconnected"
    assert done.energy_wh == 6_500
    assert samples == 10  # two meter readings of five values, each stored once
    assert (
        ("Current.Import", "L1") in measurands
        and ("Voltage", "L1-N") in measurands
        and ("SoC", None) in measurands
    )


async def test_v201_transaction_events_are_idempotent_by_seq_no(
    start_runtime: StartRuntime, db_url: str
) -> None:
    runtime = await start_runtime(database_url=db_url, accept_unknown=True)
    await add_token(runtime, "GOOD")
    port = runtime.gateway.port  # type: ignore[union-attr]
    base = {"transactionInfo": {"transactionId": "TX-9"}, "evse": {"id": 2, "connectorId": 1}}
    started = {
        **base,
        "eventType": "Started",
        "timestamp": "2026-11-25T10:00:00Z",
        "triggerReason": "Authorized",
        "seqNo": 0,
        "idToken": {"idToken": "GOOD", "type": "ISO14443"},
        "meterValue": [mv("2026-11-25T10:00:00Z", 2_000, "Transaction.Begin", v2=True)],
    }
    updated = {
        **base,
        "eventType": "Updated",
        "timestamp": "2026-11-25T10:15:00Z",
        "triggerReason": "MeterValuePeriodic",
        "seqNo": 1,
        "meterValue": [mv("2026-11-25T10:15:00Z", 5_000, v2=True)],
    }
    offline = {
        **updated,
        "seqNo": 2,
        "offline": True,
        "timestamp": "2026-11-25T10:20:00Z",
        "meterValue": [mv("2026-11-25T10:20:00Z", 6_000, v2=True)],
    }
    ended = {
        **base,
        "eventType": "Ended",
        "timestamp": "2026-11-25T10:30:00Z",
        "triggerReason": "EVDeparted",
        "seqNo": 3,
        "transactionInfo": {"transactionId": "TX-9", "stoppedReason": "EVDisconnected"},
        "meterValue": [mv("2026-11-25T10:30:00Z", 8_000, "Transaction.End", v2=True)],
    }
    async with raw_charger(port, "CP201", "ocpp2.0.1") as cp:
        await cp.boot()
        assert (await cp.result("TransactionEvent", started))["idTokenInfo"]["status"] == "Accepted"
        await cp.result("TransactionEvent", updated)
    async with raw_charger(port, "CP201", "ocpp2.0.1") as cp:
        for event in (started, updated, ended):  # replays, then an end that skips seqNo 2
            await cp.result("TransactionEvent", event)
        ask = await cp.recv()  # the gap: is seqNo 2 still queued?
        assert ask[2:] == ["GetTransactionStatus", {"transactionId": "TX-9"}]
        await cp.ws.send(json.dumps([3, ask[1], {"messagesInQueue": True}]))
        for event in (offline, ended):  # the offline event arriving late closes the gap
            await cp.result("TransactionEvent", event)
    async with runtime.sessions() as session:
        txs = (await session.execute(select(Transaction))).scalars().all()
        samples = (await session.execute(select(func.count()).select_from(MeterSample))).scalar_one()
    assert len(txs) == 1
    tx = txs[0]
    assert (tx.evse_id, tx.connector_id, tx.id_token, tx.last_seq_no) == (2, 1, "GOOD", 3)
    assert tx.missing_seq_nos is None
    assert not tx.active and tx.stop_reason == "EVDisconnected"
    assert (tx.meter_start_wh, tx.meter_stop_wh, tx.energy_wh) == (2_000, 8_000, 6_000)
    assert samples == 20  # four distinct readings of five values


async def resend_offline(cp: RawCharger, payload: dict[str, Any]) -> dict[str, Any]:
    """Send a TransactionEvent as a charger's queue does after a reconnect: `offline: true`, under a message
    id of its own; the answer must be a CALLRESULT valid for the schema."""
    message_id = f"resent-{uuid.uuid4().hex[:8]}"
    frame = await cp.send_raw(json.dumps([2, message_id, "TransactionEvent", {**payload, "offline": True}]))
    assert frame[:2] == [3, message_id], frame
    assert_strictly_valid(cp.protocol, "TransactionEvent", frame[2], response=True)
    return dict(frame[2])


@pytest.mark.parametrize("protocol", ["ocpp2.0.1", "ocpp2.1"])
async def test_a_late_offline_copy_of_a_stored_transaction_event_is_answered_and_stored_once(
    start_runtime: StartRuntime, db_url: str, protocol: str
) -> None:
    """Issue 12: a copy of a TransactionEvent already stored (same transaction and seqNo, `offline: true`, a
    new message id) gets the answer the original got and adds nothing: no event row, no energy counted
    twice, nothing published for ops to react to. An offline event with a seqNo not seen before is stored."""
    runtime = await start_runtime(database_url=db_url, accept_unknown=True)
    await add_token(runtime, "GOOD")
    published: list[Event] = []

    async def record(events: Sequence[Event]) -> None:
        published.extend(e for e in events if e.kind not in PRESENCE)

    runtime.bus.subscribe(record, durable=True)  # durable: awaited before the charger is answered
    port = runtime.gateway.port  # type: ignore[union-attr]
    base = {"transactionInfo": {"transactionId": "TX-OFF"}, "evse": {"id": 1, "connectorId": 1}}
    started = {
        **base,
        "eventType": "Started",
        "timestamp": "2026-11-25T10:00:00Z",
        "triggerReason": "Authorized",
        "seqNo": 0,
        "idToken": {"idToken": "GOOD", "type": "ISO14443"},
        "meterValue": [mv("2026-11-25T10:00:00Z", 2_000, "Transaction.Begin", v2=True)],
    }
    updated = {
        **base,
        "eventType": "Updated",
        "timestamp": "2026-11-25T10:15:00Z",
        "triggerReason": "MeterValuePeriodic",
        "seqNo": 1,
        "meterValue": [mv("2026-11-25T10:15:00Z", 5_000, v2=True)],
    }
    queued = {**updated, "seqNo": 2, "timestamp": "2026-11-25T10:20:00Z"}
    queued["meterValue"] = [mv("2026-11-25T10:20:00Z", 6_000, v2=True)]

    def site_energy() -> float:
        return REGISTRY.get_sample_value("chargeops_site_energy_watt_hours_total", {"site": ""}) or 0.0

    energy_before = site_energy()
    async with raw_charger(port, "CP-OFF", protocol) as cp:
        await cp.boot()
        first = await cp.result("TransactionEvent", started)
        assert first == {"idTokenInfo": {"status": "Accepted"}}
        assert await cp.result("TransactionEvent", updated) == {}
    originals = len(published)
    assert originals == 5  # authorization, started, its meter values, updated, its meter values
    async with raw_charger(port, "CP-OFF", protocol) as cp:  # back online: the charger sends its queue
        assert await resend_offline(cp, started) == first
        assert await resend_offline(cp, updated) == {}
        assert published[originals:] == []  # nothing stored, nothing for ops
        assert await resend_offline(cp, queued) == {}
    assert [(e.kind, getattr(e.body, "seq_no", None)) for e in published[originals:]] == [
        (EventKind.TRANSACTION_UPDATED, 2),
        (EventKind.METER_VALUES, None),
    ]
    async with runtime.sessions() as session:
        kinds = Counter(
            (await session.scalars(select(StoredEvent.kind).where(StoredEvent.charger_id == "CP-OFF"))).all()
        )
        samples = (await session.execute(select(func.count()).select_from(MeterSample))).scalar_one()
        seq_nos = (await session.scalars(select(TransactionSeqNo.seq_no).order_by("seq_no"))).all()
        tx = (await session.execute(select(Transaction))).scalar_one()
    assert {k: n for k, n in kinds.items() if k not in PRESENCE} == {
        "authorization": 1,
        "transaction_started": 1,
        "transaction_updated": 2,
        "meter_values": 3,
    }
    assert samples == 15 and seq_nos == [0, 1, 2]
    assert (tx.meter_start_wh, tx.energy_counted_wh, tx.energy_wh, tx.last_seq_no) == (2_000, 6_000, 4_000, 2)
    assert site_energy() - energy_before == pytest.approx(4_000)  # a process-wide counter: float sums


async def test_v201_ended_without_started_still_makes_a_closed_transaction(
    start_runtime: StartRuntime,
) -> None:
    runtime = await start_runtime(accept_unknown=True)
    ended = {
        "eventType": "Ended",
        "timestamp": "2026-11-25T10:30:00Z",
        "triggerReason": "EVDeparted",
        "seqNo": 7,
        "transactionInfo": {"transactionId": "LOST-START", "stoppedReason": "Local"},
    }
    async with raw_charger(runtime.gateway.port, "CP-L", "ocpp2.0.1") as cp:  # type: ignore[union-attr]
        await cp.boot()
        await cp.result("TransactionEvent", ended)
    async with runtime.sessions() as session:
        tx = (await session.execute(select(Transaction))).scalar_one()
    assert tx.transaction_id == "LOST-START" and not tx.active


async def test_id_token_expiry_and_status_are_checked(start_runtime: StartRuntime) -> None:
    from datetime import UTC, datetime, timedelta

    runtime = await start_runtime(accept_unknown=True)
    async with runtime.sessions() as session, session.begin():
        past, future = datetime.now(UTC) - timedelta(days=1), datetime.now(UTC) + timedelta(days=30)
        session.add_all(
            [
                IdToken(id_token="OLD", status="Accepted", type="ISO14443", expiry=past),
                IdToken(id_token="NEW", status="Accepted", type="ISO14443", expiry=future),
                IdToken(id_token="GONE", status="Invalid", type="ISO14443"),
            ]
        )
    async with raw_charger(runtime.gateway.port, "CP-EXP") as cp:  # type: ignore[union-attr]
        await cp.boot()
        assert (await cp.result("Authorize", {"idTag": "OLD"}))["idTagInfo"]["status"] == "Expired"
        fresh = (await cp.result("Authorize", {"idTag": "NEW"}))["idTagInfo"]
        assert fresh["status"] == "Accepted" and fresh["expiryDate"].startswith(future.strftime("%Y-%m-%d"))
        assert (await cp.result("Authorize", {"idTag": "GONE"}))["idTagInfo"]["status"] == "Invalid"
    async with raw_charger(runtime.gateway.port, "CP-EXP2", "ocpp2.0.1") as cp:  # type: ignore[union-attr]
        await cp.boot()
        info = (await cp.result("Authorize", {"idToken": {"idToken": "OLD", "type": "ISO14443"}}))[
            "idTokenInfo"
        ]
        assert info["status"] == "Expired"
