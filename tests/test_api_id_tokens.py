"""The authorization list over HTTP."""

from __future__ import annotations

import httpx
import pytest

from tests.test_api_support import assert_error, bearer, issue_token

pytest_plugins = ("tests.test_api_support",)


async def test_put_creates_then_replaces(admin: httpx.AsyncClient) -> None:
    r = await admin.put(
        "/api/id-tokens/04A2B3C4",
        json={
            "type": "ISO14443",
            "status": "Accepted",
            "expiry": "2030-01-01T02:00:00+02:00",
            "group_id": "fleet",
        },
    )
    assert r.status_code == 201, r.text
    created = r.json()
    assert set(created) == {"id_token", "type", "status", "expiry", "group_id", "updated_at"}
    assert created["expiry"] == "2030-01-01T00:00:00Z" and created["updated_at"].endswith("Z")

    r = await admin.put("/api/id-tokens/04A2B3C4", json={"status": "Blocked"})
    assert r.status_code == 200
    assert {k: r.json()[k] for k in ("type", "status", "expiry", "group_id")} == {
        "type": "ISO14443",
        "status": "Blocked",
        "expiry": None,
        "group_id": None,
    }
    assert (await admin.get("/api/id-tokens/04A2B3C4")).json() == r.json()


async def test_list_get_delete(admin: httpx.AsyncClient) -> None:
    for token in ("B", "A", "x" * 36):
        assert (await admin.put(f"/api/id-tokens/{token}", json={"status": "Accepted"})).status_code == 201
    assert [t["id_token"] for t in (await admin.get("/api/id-tokens")).json()["items"]] == [
        "A",
        "B",
        "x" * 36,
    ]
    first = (await admin.get("/api/id-tokens?limit=2")).json()
    assert [t["id_token"] for t in first["items"]] == ["A", "B"] and first["next"] == "B"
    rest = (await admin.get("/api/id-tokens", params={"limit": 2, "cursor": first["next"]})).json()
    assert [t["id_token"] for t in rest["items"]] == ["x" * 36] and rest["next"] is None
    assert (await admin.delete("/api/id-tokens/A")).status_code == 204
    assert_error(await admin.get("/api/id-tokens/A"), 404, "not_found")
    assert_error(await admin.delete("/api/id-tokens/A"), 404, "not_found")
    assert len((await admin.get("/api/id-tokens")).json()["items"]) == 2


@pytest.mark.parametrize(
    ("token", "body"),
    [
        ("x" * 37, {"status": "Accepted"}),
        ("bad%20token", {"status": "Accepted"}),
        ("T", {"status": "accepted"}),
        ("T", {}),
        ("T", {"status": "Accepted", "type": "Badge"}),
        ("T", {"status": "Accepted", "expiry": "2030-01-01T00:00:00"}),  # no zone: ambiguous
        ("T", {"status": "Accepted", "expiry": "tomorrow"}),
        ("T", {"status": "Accepted", "group_id": "g" * 37}),
        ("T", {"status": "Accepted", "parent": "P"}),
    ],
)
async def test_bad_puts_are_422(admin: httpx.AsyncClient, token: str, body: dict[str, object]) -> None:
    assert_error(await admin.put(f"/api/id-tokens/{token}", json=body), 422, "invalid_request")
    assert (await admin.get("/api/id-tokens")).json() == {"items": [], "next": None}


async def test_viewer_reads_operator_writes(admin: httpx.AsyncClient) -> None:
    viewer, operator = (
        bearer(await issue_token(admin, "viewer")),
        bearer(await issue_token(admin, "operator")),
    )
    assert_error(
        await admin.put("/api/id-tokens/T", json={"status": "Accepted"}, headers=viewer), 403, "forbidden"
    )
    assert (
        await admin.put("/api/id-tokens/T", json={"status": "Accepted"}, headers=operator)
    ).status_code == 201
    assert (await admin.get("/api/id-tokens/T", headers=viewer)).status_code == 200
    assert_error(await admin.delete("/api/id-tokens/T", headers=viewer), 403, "forbidden")
