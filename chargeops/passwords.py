"""Charger password hashing, shared by whoever registers a charger (ops) and whoever checks it (the gateway).

Charger passwords are machine secrets (OCPP asks for 16–40 random characters), so a light argon2id cost is
enough. Both calls are CPU-bound: call them from a worker thread.
"""

from __future__ import annotations

import secrets
import string

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


# OCPP 2.0.1 A01's passwordString characters; 20 of them fit 1.6 (16-20 bytes) and 2.x (16-40) alike.
ALPHABET = string.ascii_letters + string.digits + "*-_=:+|@."
# A charger's Basic-auth password: 16-40 characters is what OCPP 2.0.1 (A01) accepts and at least what the
# 1.6 security whitepaper asks (16-20 bytes); rotating a 1.6 charger's key narrows it to 20.
MIN_LENGTH, MAX_LENGTH = 16, 40
GENERATED_LENGTH = 20


def generate_password() -> str:
    """A random charger password valid for every OCPP version (the API's password rotation)."""
    return "".join(secrets.choice(ALPHABET) for _ in range(GENERATED_LENGTH))
