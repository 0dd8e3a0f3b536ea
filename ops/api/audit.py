"""Refused operator API calls in the audit trail (`chargeops/audit.py`): every 401 and 403 as one line
(method, path, client address, reason; the token's id and name when it was known, never the secret)."""

from __future__ import annotations

from fastapi import Request

from chargeops import audit


def refused(request: Request, status: int, reason: str, token_id: int | None = None, name: str = "") -> None:
    address = request.client.host if request.client else "?"
    audit.refused(
        address,
        "API %d %s %s from %s: %s%s",
        status, request.method, request.url.path, address, reason,
        f" (token {token_id} {name})" if token_id is not None or name else "",
        status=status, reason=reason, token_id=token_id,
    )  # fmt: skip
