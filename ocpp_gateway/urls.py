"""The URLs a CSMS-initiated call makes a charger fetch from or upload to, checked before it is sent
(`chargeops.urls` decides which addresses are refused)."""

from __future__ import annotations

from typing import Any

from chargeops.urls import url_refusal

# CSMS-initiated actions that make a charger fetch from or upload to a URL, and where that URL sits.
URL_FIELDS: dict[str, tuple[str, ...]] = {
    "UpdateFirmware": ("location", "firmware.location"),
    "SignedUpdateFirmware": ("firmware.location",),
    "GetDiagnostics": ("location",),
    "GetLog": ("log.remoteLocation",),
    "PublishFirmware": ("location",),
}


def _dig(payload: dict[str, Any], dotted: str) -> Any:
    value: Any = payload
    for part in dotted.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value


async def url_problem(action: str, payload: dict[str, Any], allow_private: bool) -> str | None:
    """Why this call may not be sent for one of its URL fields, or None."""
    for dotted in URL_FIELDS.get(action, ()):
        url = _dig(payload, dotted)
        if isinstance(url, str):
            refusal = await url_refusal(url, allow_private)
            if refusal:
                return f"{dotted}: {refusal}"
    return None
