"""Charger credentials at the handshake: Basic-auth parsing, password checks, and the failed-login limiter
that runs before any hash.

The hashing itself is `chargeops.passwords` (light argon2id); a small cache of verified credentials means a
reconnect storm after a restart hashes each password at most once.
"""

from __future__ import annotations

import asyncio
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
    is refused outright for a back-off period, without looking at its password.

    A password check in flight holds a place against the limit (failures + checks in flight <= limit), so
    however many attempts arrive at once no more than the limit are ever hashed and found wrong. An attempt
    beyond waits for a check of its key to settle (`turn`) instead of being counted as a failure: a good
    password gives its place back, so a storm of genuine chargers behind one address (a depot's router, a
    bench) gets in rather than locking the address out."""

    def __init__(self, limit: int, window: float = 60.0, backoff: float = 60.0, max_keys: int = 200_000):
        self.limit = limit
        self.window = window
        self.backoff = backoff
        self._failures: dict[str, deque[float]] = {}
        self._blocked_until: dict[str, float] = {}
        self._in_flight: dict[str, int] = {}
        self._waiting: dict[str, deque[asyncio.Future[None]]] = {}
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
        self._trim(q, now)
        if len(q) >= self.limit:
            self._blocked_until[key] = now + self.backoff
            self._wake(key, everyone=True)  # they are refused now, not after their wait

    def succeed(self, key: str) -> None:
        self._failures.pop(key, None)

    def _trim(self, q: deque[float], now: float) -> None:
        while q and q[0] < now - self.window:
            q.popleft()

    def try_begin(self, key: str, now: float | None = None) -> bool:
        """Takes a place for one password check of `key` if the limit leaves one (settle it with `end`)."""
        now = time.monotonic() if now is None else now
        if self.blocked(key, now):
            return False
        q = self._failures.get(key)
        if q:
            self._trim(q, now)
        if (len(q) if q else 0) + self._in_flight.get(key, 0) >= self.limit:
            return False
        self._in_flight[key] = self._in_flight.get(key, 0) + 1
        return True

    def end(self, key: str, ok: bool, now: float | None = None) -> None:
        """A check begun with `try_begin` settled: a wrong password is counted, a good one costs nothing."""
        left = self._in_flight.get(key, 1) - 1
        if left > 0:
            self._in_flight[key] = left
        else:
            self._in_flight.pop(key, None)
        if ok:
            self._wake(key)
        else:
            self.fail(key, now)  # the place it held is now a failure: no one else gets in

    async def turn(self, key: str, timeout: float) -> bool:
        """Waits (first come, first served) until a check of `key` may begin, and begins it; False if the
        key is blocked, or no place came free within `timeout`."""
        deadline = time.monotonic() + timeout
        while not self.try_begin(key):
            remaining = deadline - time.monotonic()
            if self.blocked(key) or remaining <= 0:
                return False
            fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            queue = self._waiting.setdefault(key, deque())
            queue.append(fut)
            try:
                await asyncio.wait_for(fut, remaining)
            except TimeoutError:
                return False
            except asyncio.CancelledError:
                if fut.done() and not fut.cancelled():
                    self._wake(key)  # woken but gone: the place goes to the next in line
                raise
            finally:
                if fut.cancelled() and fut in queue:  # timed out: never woken, so still queued
                    queue.remove(fut)
                if not queue and self._waiting.get(key) is queue:
                    del self._waiting[key]
        return True

    def _wake(self, key: str, everyone: bool = False) -> None:
        queue = self._waiting.get(key)
        while queue:
            fut = queue.popleft()
            if not fut.done():
                fut.set_result(None)
                if not everyone:
                    break
        if queue is not None and not queue:
            self._waiting.pop(key, None)
