"""Charger password hashing, shared by whoever registers a charger (ops) and whoever checks it (the gateway).

Charger passwords are machine secrets (OCPP asks for 16–40 random characters), so a light argon2id cost is
enough. Both calls are CPU-bound: call them from a worker thread.
"""

from __future__ import annotations

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

_hasher = PasswordHasher(time_cost=1, memory_cost=8192, parallelism=1)


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def password_matches(stored_hash: str, password: str) -> bool:
    try:
        _hasher.verify(stored_hash, password)
    except (VerificationError, InvalidHashError):
        return False
    return True
