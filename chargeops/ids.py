"""Identifier rules shared by the gateway (URL path) and the API (registration)."""

from __future__ import annotations

import re

# OCPP: charge point identity up to 48 characters; unreserved URL characters plus a few OCPP allows.
CHARGER_ID_PATTERN = r"^[A-Za-z0-9._:*+\-|@=]{1,48}$"
CHARGER_ID_RE = re.compile(CHARGER_ID_PATTERN)
