"""The fleet registry over HTTP: register, list, inspect, change, remove; passwords never come back out."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

import httpx
import pytest
from argon2 import PasswordHasher
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from chargeops.db.models import Charger, Connector
from ops.api.schemas import ChargerOut, Page
from tests.test_api_support import assert_error, bearer, issue_token

pytest_plugins = ("tests.test_api_support",)

PASSWORD = "s3cret-Passw0rd-xyz"
CHARGER_FIELDS = {
    "id",
    "site",
    "kind",
    "vendor",
    "model",
    "serial_number",
    "firmware_version",
    "protocol",
    "connected",
    "status",
    "admission",
    "registration_status",
    "security_profile",
    "pending_security_profile",
    "has_password",
    "connectors",
    "last_seen",
    "last_boot_at",
    "created_at",
}


async def _stored(sessions: async_sessionmaker[AsyncSession], charger_id: str) -> Charger | None:
    async with sessions() as s:
        return await s.get(Charger, charger_id)


async def test_register_hashes_the_password_and_never_returns_it(
    admin: httpx.AsyncClient, api_sessions: async_sessionmaker[AsyncSession], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)  # aiosqlite's DEBUG lines carry bound parameters: logging config's job
    caplog.set_level(logging.DEBUG, logger="ops")
    r = await admin.post(
        "/api/chargers",
        json={"id": "CP-1", "password": PASSWORD, "site": "depot-a", "kind": "swap_station", "vendor": "V"},
    )
    assert r.status_code == 201, r.text
    body = r.json()
    assert set(body) == CHARGER_FIELDS
    assert body["has_password"] is True and body["security_profile"] == 1
    assert body["kind"] == "swap_station" and body["admission"] == "accepted" and body["connectors"] == []
    assert body["status"] is None and body["connected"] is False
    assert body["created_at"].endswith("Z")

    row = await _stored(api_sessions, "CP-1")
    assert row is not None and row.password_hash is not None
    assert PasswordHasher().verify(row.password_hash, PASSWORD)
    everything = (
        r.text + (await admin.get("/api/chargers")).text + (await admin.get("/api/chargers/CP-1")).text
    )
    assert PASSWORD not in everything and row.password_hash not in everything and "$argon2" not in everything
    assert PASSWORD not in caplog.text and row.password_hash not in caplog.text


async def test_security_profile_follows_the_password(admin: httpx.AsyncClient) -> None:
    r = await admin.post("/api/chargers", json={"id": "open"})
    assert r.json()["security_profile"] == 0 and r.json()["has_password"] is False
    r = await admin.post("/api/chargers", json={"id": "tls", "password": PASSWORD, "security_profile": 2})
    assert r.json()["security_profile"] == 2
    r = await admin.post("/api/chargers", json={"id": "certs", "security_profile": 3})
    assert r.status_code == 201 and r.json()["security_profile"] == 3
    body = assert_error(
        await admin.post("/api/chargers", json={"id": "x", "security_profile": 1}), 422, "invalid_request"
    )
    assert "needs a password" in body["detail"]


async def test_duplicate_is_409(admin: httpx.AsyncClient) -> None:
    assert (await admin.post("/api/chargers", json={"id": "CP-1"})).status_code == 201
    assert_error(await admin.post("/api/chargers", json={"id": "CP-1", "site": "b"}), 409, "conflict")


@pytest.mark.parametrize(
    "body",
    [
        {"id": ""},
        {"id": "x" * 49},
        {"id": "bad/id"},
        {"id": "bad id"},
        {"id": 12},
        {"id": "CP", "password": "short"},
        {"id": "CP", "password": "p" * 65},
        {"id": "CP", "kind": "toaster"},
        {"id": "CP", "security_profile": 4},
        {"id": "CP", "security_profile": "one"},
        {"id": "CP", "site": ["a"]},
        {"id": "CP", "colour": "red"},
        {"site": "a"},
        ["CP"],
    ],
)
async def test_bad_registrations_are_422(admin: httpx.AsyncClient, body: object) -> None:
    r = await admin.post("/api/chargers", json=body)
    detail = assert_error(r, 422, "invalid_request")["detail"]
    assert "short" not in detail and "ppppppppp" not in detail  # passwords are not echoed
    assert (await admin.get("/api/chargers")).json() == {"items": [], "next": None}


@pytest.mark.parametrize("charger_id", ["a", "x" * 48, "A.b_c:d*e+f-g|h@i=9"])
async def test_every_allowed_id_character_works(admin: httpx.AsyncClient, charger_id: str) -> None:
    assert (await admin.post("/api/chargers", json={"id": charger_id})).status_code == 201
    assert (await admin.get(f"/api/chargers/{charger_id}")).json()["id"] == charger_id


async def test_malformed_json_is_422(admin: httpx.AsyncClient) -> None:
    r = await admin.post(
        "/api/chargers", content=b'{"id": "CP",', headers={"content-type": "application/json"}
    )
    assert "invalid JSON" in assert_error(r, 422, "invalid_request")["detail"]


async def test_list_filters_and_connector_status(
    admin: httpx.AsyncClient, api_sessions: async_sessionmaker[AsyncSession]
) -> None:
    for cid, site in (("A", "north"), ("B", "north"), ("C", "south"), ("D", None)):
        assert (await admin.post("/api/chargers", json={"id": cid, "site": site})).status_code == 201
    seen = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
    async with api_sessions() as s, s.begin():
        await s.execute(
            update(Charger)
            .where(Charger.id == "A")
            .values(connected=True, protocol="ocpp2.0.1", last_seen=seen)
        )
        s.add_all(
            [
                Connector(charger_id="A", evse_id=1, connector_id=1, status="Available", reported_at=seen),
                Connector(
                    charger_id="A", evse_id=2, connector_id=1, status="Faulted", error_code="GroundFailure"
                ),
                Connector(charger_id="B", evse_id=1, connector_id=1, status="Charging"),
                Connector(charger_id="B", evse_id=0, connector_id=0, status="Available"),
                Connector(charger_id="C", evse_id=1, connector_id=1, status="Reserved"),
                Connector(charger_id="C", evse_id=1, connector_id=2, status="Occupied"),
            ]
        )

    fleet = {c["id"]: c for c in (await admin.get("/api/chargers")).json()["items"]}
    assert list(fleet) == ["A", "B", "C", "D"]
    # the worst status wins: B's charging connector is not hidden by its "Available" connector 0
    assert [fleet[c]["status"] for c in "ABCD"] == ["Faulted", "Charging", "Occupied", None]
    a = fleet["A"]
    assert (
        a["connected"] is True and a["protocol"] == "ocpp2.0.1" and a["last_seen"] == "2025-03-01T12:00:00Z"
    )
    assert a["connectors"] == [
        {
            "evse_id": 1,
            "connector_id": 1,
            "status": "Available",
            "error_code": None,
            "vendor_error_code": None,
            "reported_at": "2025-03-01T12:00:00Z",
        },
        {
            "evse_id": 2,
            "connector_id": 1,
            "status": "Faulted",
            "error_code": "GroundFailure",
            "vendor_error_code": None,
            "reported_at": None,
        },
    ]
    assert [c["evse_id"] for c in fleet["B"]["connectors"]] == [0, 1]

    async def ids(query: str) -> list[str]:
        r = await admin.get(f"/api/chargers?{query}")
        assert r.status_code == 200, r.text
        return [c["id"] for c in r.json()["items"]]

    assert await ids("site=north") == ["A", "B"]
    assert await ids("connected=true") == ["A"]
    assert await ids("connected=false&site=north") == ["B"]
    assert await ids("site=nowhere") == []
    assert_error(await admin.get("/api/chargers?connected=maybe"), 422, "invalid_request")
    assert (await admin.get("/api/chargers/B")).json() == fleet["B"]
    # the charger-wide status as shown: C has an Occupied and a (better) Reserved connector
    assert await ids("status=Faulted") == ["A"]
    assert await ids("status=Occupied") == ["C"]
    assert await ids("status=Reserved") == []
    assert await ids("protocol=ocpp2.0.1") == ["A"]
    assert await ids("q=b") == ["B"]  # part of the id, any case
    assert await ids("q=%25") == []  # a LIKE wildcard is taken literally
    # the list is written without building models; it must read back as the documented model
    body = (await admin.get("/api/chargers")).content
    assert Page[ChargerOut].model_validate_json(body).model_dump_json().encode() == body


async def test_the_list_pages_by_cursor(admin: httpx.AsyncClient) -> None:
    for i in range(7):
        assert (await admin.post("/api/chargers", json={"id": f"P{i}"})).status_code == 201
    seen, cursor, pages = [], None, 0
    while True:
        r = await admin.get("/api/chargers", params={"limit": 3, **({"cursor": cursor} if cursor else {})})
        page = r.json()
        seen += [c["id"] for c in page["items"]]
        pages += 1
        cursor = page["next"]
        if cursor is None:
            break
    assert seen == [f"P{i}" for i in range(7)] and pages == 3
    assert_error(await admin.get("/api/chargers?limit=1001"), 422, "invalid_request")
    assert_error(await admin.get("/api/chargers?limit=0"), 422, "invalid_request")


async def test_unknown_charger_is_404(admin: httpx.AsyncClient) -> None:
    for r in (
        await admin.get("/api/chargers/nope"),
        await admin.patch("/api/chargers/nope", json={"site": "x"}),
        await admin.delete("/api/chargers/nope"),
    ):
        assert_error(r, 404, "not_found")
    assert_error(await admin.get("/api/chargers/bad%20id"), 422, "invalid_request")


async def test_patch_changes_only_what_was_sent(
    admin: httpx.AsyncClient, api_sessions: async_sessionmaker[AsyncSession]
) -> None:
    await admin.post("/api/chargers", json={"id": "CP", "site": "a", "vendor": "V", "model": "M"})
    r = await admin.patch("/api/chargers/CP", json={"site": "b", "vendor": None, "admission": "pending"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["site"], body["vendor"], body["model"], body["admission"]) == ("b", None, "M", "pending")

    r = await admin.patch("/api/chargers/CP", json={"password": PASSWORD})
    assert r.json()["has_password"] is True and r.json()["security_profile"] == 1  # 0 -> 1 with a password
    assert PASSWORD not in r.text
    first_hash = (await _stored(api_sessions, "CP")).password_hash  # type: ignore[union-attr]
    r = await admin.patch("/api/chargers/CP", json={"password": "another-password", "security_profile": 2})
    assert r.json()["security_profile"] == 2
    assert (await _stored(api_sessions, "CP")).password_hash != first_hash  # type: ignore[union-attr]

    detail = assert_error(
        await admin.patch("/api/chargers/CP", json={"password": None}), 422, "invalid_request"
    )
    assert "needs a password" in detail["detail"]
    assert (await admin.get("/api/chargers/CP")).json()["has_password"] is True  # nothing changed
    r = await admin.patch("/api/chargers/CP", json={"password": None, "security_profile": 0})
    assert r.json()["has_password"] is False and r.json()["security_profile"] == 0


@pytest.mark.parametrize(
    "body",
    [
        {"kind": None},
        {"admission": "maybe"},
        {"security_profile": -1},
        {"password": "short"},
        {"id": "new"},
        [1],
    ],
)
async def test_bad_patches_are_422(admin: httpx.AsyncClient, body: object) -> None:
    await admin.post("/api/chargers", json={"id": "CP"})
    assert_error(await admin.patch("/api/chargers/CP", json=body), 422, "invalid_request")


async def test_delete_removes_charger_and_connectors(
    admin: httpx.AsyncClient, api_sessions: async_sessionmaker[AsyncSession]
) -> None:
    await admin.post("/api/chargers", json={"id": "CP"})
    await admin.post("/api/chargers", json={"id": "KEEP"})
    async with api_sessions() as s, s.begin():
        s.add(Connector(charger_id="CP", evse_id=1, connector_id=1, status="Available"))
    viewer = bearer(await issue_token(admin, "viewer"))
    assert_error(await admin.delete("/api/chargers/CP", headers=viewer), 403, "forbidden")
    r = await admin.delete("/api/chargers/CP")
    assert r.status_code == 204 and r.content == b""
    assert_error(await admin.get("/api/chargers/CP"), 404, "not_found")
    async with api_sessions() as s:
        assert (await s.scalars(select(Connector))).all() == []
    assert [c["id"] for c in (await admin.get("/api/chargers")).json()["items"]] == ["KEEP"]
