"""Charger credentials at the handshake: Basic-auth parsing, password checks, and the failed-login limiter
that runs before any hash.

The hashing itself is `chargeops.passwords` (light argon2id); a small cache of verified credentials means a
reconnect storm after a restart hashes each password at most once.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import time
from collections import deque

from chargeops.passwords import password_matches

_cache_key = os.urandom(32)


class Verifier:
    """Checks passwords against stored hashes, remembering recent successes by keyed digest."""

    def __init__(self, capacity: int = 100_000) -> None:
        self._ok: dict[str, tuple[str, bytes]] = {}
        self._capacity = capacity

    def _digest(self, password: str) -> bytes:
        return hmac.new(_cache_key, password.encode(), hashlib.sha256).digest()

    def last_good(self, charger_id: str, password: str) -> bool:
        """Whether `password` is the one this charger last proved with (before anything is read): the
        genuine charger's way past the failed-login limiter while someone else attacks its id."""
        hit = self._ok.get(charger_id)
        return hit is not None and hmac.compare_digest(hit[1], self._digest(password))

    def cached(self, charger_id: str, stored_hash: str, password: str) -> bool:
        hit = self._ok.get(charger_id)
        return (
            hit is not None and hit[0] == stored_hash and hmac.compare_digest(hit[1], self._digest(password))
        )

    def verify(self, charger_id: str, stored_hash: str, password: str) -> bool:
        """CPU-bound (argon2): call from a worker thread."""
        if not password_matches(stored_hash, password):
            return False
        if len(self._ok) >= self._capacity:
            self._ok.pop(next(iter(self._ok)))
        self._ok[charger_id] = (stored_hash, self._digest(password))
        return True


def parse_basic(header: str | None) -> tuple[str, str] | None:
    """(user, password) from an `Authorization: Basic ...` header, or None."""
    if not header or not header[:6].lower() == "basic ":
        return None
    try:
        decoded = base64.b64decode(header[6:].strip(), validate=True).decode("utf-8")
    except (ValueError, UnicodeDecodeError):
        return None
    user, sep, password = decoded.partition(":")
    return (user, password) if sep else None


class FailureLimiter:
    """Counts failed logins per key (charger id, remote address) in a sliding window; past the limit a key
    is refused outright for a back-off period, without looking at its password. An attempt is counted
    *before* its password is hashed (and taken back if good), so however many arrive at once no more than
    the limit are ever hashed."""

    def __init__(self, limit: int, window: float = 60.0, backoff: float = 60.0, max_keys: int = 200_000):
        self.limit = limit
        self.window = window
        self.backoff = backoff
        self._failures: dict[str, deque[float]] = {}
        self._blocked_until: dict[str, float] = {}
        self._max_keys = max_keys

    def blocked(self, key: str, now: float | None = None) -> bool:
        now = time.monotonic() if now is None else now
        until = self._blocked_until.get(key)
        if until is None:
            return False
        if now >= until:
            del self._blocked_until[key]
            self._failures.pop(key, None)
            return False
        return True

    def fail(self, key: str, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        if key not in self._failures and len(self._failures) >= self._max_keys:
            self._failures.pop(next(iter(self._failures)))
        q = self._failures.setdefault(key, deque())
        q.append(now)
        while q and q[0] < now - self.window:
            q.popleft()
        if len(q) >= self.limit:
            self._blocked_until[key] = now + self.backoff

    def succeed(self, key: str) -> None:
        self._failures.pop(key, None)

    def forgive(self, key: str) -> None:
        """Takes back the latest attempt counted for `key` (it turned out good)."""
        q = self._failures.get(key)
        if q:
            q.pop()
