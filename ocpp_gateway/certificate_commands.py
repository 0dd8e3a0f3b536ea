"""The neutral certificate commands of `chargeops.commands` in each OCPP version's words (M: certificate
management; A02: renewal asked by the central system), and their answers back in neutral words.

Each is one or more ordinary OCPP calls made through `send` (the session's `execute`, so every one is
validated and sent like any other): 1.6 lists installed certificates one type per call, 2.x in one. The 1.6
security extension knows only the CSMS and manufacturer roots and the station's own certificate: a 1.6
station's ISO 15118 certificates (V2G / MO roots, its V2G certificate chain, SignV2GCertificate) go through
the Plug & Charge DataTransfer tunnel, in 2.0.1 words (`pnc16`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from chargeops.commands import (
    DELETE_CERTIFICATE,
    GET_INSTALLED_CERTIFICATES,
    INSTALL_CERTIFICATE,
    RENEW_CERTIFICATE,
    CommandReply,
)
from chargeops.pki import CHARGING_STATION, V2G
from ocpp_gateway import pnc16
from ocpp_gateway.versions import V16, V21, OcppVersion

Payload = dict[str, Any]
Send = Callable[[str, Payload], Awaitable[CommandReply]]

# 1.6 security extension's names for the CA certificates it knows (the rest are 2.x only).
_V16_NAMES = {
    "CSMSRootCertificate": "CentralSystemRootCertificate",
    "ManufacturerRootCertificate": "ManufacturerRootCertificate",
}
# What a 1.6 station holds of ISO 15118 (2.x GetCertificateIdUseEnumType), through the tunnel.
_ISO15118_KINDS = ("V2GRootCertificate", "MORootCertificate", "V2GCertificateChain")
V21_ONLY = frozenset({"OEMRootCertificate"})  # CA certificate types 2.0.1 does not know
_HASH_FIELDS = (
    ("hash_algorithm", "hashAlgorithm"),
    ("issuer_name_hash", "issuerNameHash"),
    ("issuer_key_hash", "issuerKeyHash"),
    ("serial_number", "serialNumber"),
)
_TRIGGERS = {
    CHARGING_STATION: "SignChargingStationCertificate",
    "V2GCertificate": "SignV2GCertificate",
    "V2G20Certificate": "SignV2G20Certificate",
}


def _invalid(description: str, code: str = "NotSupported") -> CommandReply:
    return CommandReply("invalid", error_code=code, description=description)


def hash_to_ocpp(h: Payload) -> Payload:
    return {ocpp: h.get(neutral) for neutral, ocpp in _HASH_FIELDS}


def hash_from_ocpp(h: Payload) -> Payload:
    return {neutral: h.get(ocpp) for neutral, ocpp in _HASH_FIELDS}


async def renew(version: OcppVersion, p: Payload, send: Send) -> CommandReply:
    kind = p.get("certificate_type") or CHARGING_STATION
    if version is V16:
        if kind == V2G:
            return await pnc16.call(send, "TriggerMessage", {"requestedMessage": "SignV2GCertificate"})
        if kind != CHARGING_STATION:
            return _invalid(f"OCPP 1.6 stations have no {kind}")
        return await send("ExtendedTriggerMessage", {"requestedMessage": "SignChargePointCertificate"})
    trigger = _TRIGGERS.get(kind)
    if trigger is None or (kind == "V2G20Certificate" and version is not V21):
        return _invalid(f"no renewal of {kind!r} in OCPP {version.name}")
    return await send("TriggerMessage", {"requestedMessage": trigger})


async def install(version: OcppVersion, p: Payload, send: Send) -> CommandReply:
    kind = str(p.get("certificate_type"))
    if kind in V21_ONLY and version is not V21:
        return _invalid(f"a {kind} needs OCPP 2.1; this station speaks {version.name}")
    call: Payload = {"certificateType": kind, "certificate": p.get("certificate")}
    if version is V16:
        if kind in _ISO15118_KINDS:
            return await pnc16.call(send, "InstallCertificate", call)
        if kind not in _V16_NAMES:
            return _invalid(f"OCPP 1.6 stations cannot be given a {kind}")
        call["certificateType"] = _V16_NAMES[kind]
    return await send("InstallCertificate", call)


async def delete(version: OcppVersion, p: Payload, send: Send) -> CommandReply:
    """`certificate_type` (optional, as listed) tells a 1.6 station's ISO 15118 certificates apart."""
    call = {"certificateHashData": hash_to_ocpp(p.get("hash") or {})}
    if version is V16 and p.get("certificate_type") in _ISO15118_KINDS:
        return await pnc16.call(send, "DeleteCertificate", call)
    return await send("DeleteCertificate", call)


def _chains(answer: Payload) -> list[Payload]:
    """A 2.x GetInstalledCertificateIds answer's certificates in neutral words."""
    found: list[Payload] = []
    for chain in answer.get("certificateHashDataChain") or ():
        entry = {"certificate_type": chain["certificateType"], **hash_from_ocpp(chain["certificateHashData"])}
        children = [hash_from_ocpp(c) for c in chain.get("childCertificateHashData") or ()]
        found.append({**entry, "children": children} if children else entry)
    return found


async def installed(version: OcppVersion, p: Payload, send: Send) -> CommandReply:
    """The installed CA certificates of the types asked (all by default), as one neutral answer. A 1.6
    station is asked its ISO 15118 ones through the tunnel; asked for all, one that does not do Plug &
    Charge answers just the others."""
    kinds: list[str] = list(p.get("certificate_types") or ())
    if version is not V21 and (newer := V21_ONLY.intersection(kinds)):
        return _invalid(f"OCPP {version.name} stations have no {', '.join(sorted(newer))}")
    if version is not V16:
        reply = await send("GetInstalledCertificateIds", {"certificateType": kinds} if kinds else {})
        if reply.outcome != "result":
            return reply
        return CommandReply(
            "result", payload={"status": reply.payload["status"], "certificates": _chains(reply.payload)}
        )
    unknown = [k for k in kinds if k not in _V16_NAMES and k not in _ISO15118_KINDS]
    if unknown:
        return _invalid(f"OCPP 1.6 stations have no {', '.join(unknown)}")
    found: list[Payload] = []
    for kind in [k for k in kinds if k in _V16_NAMES] if kinds else list(_V16_NAMES):
        reply = await send("GetInstalledCertificateIds", {"certificateType": _V16_NAMES[kind]})
        if reply.outcome != "result":
            return reply
        found += [
            {"certificate_type": kind, **hash_from_ocpp(h)}
            for h in reply.payload.get("certificateHashData") or ()
        ]
    iso = [k for k in kinds if k in _ISO15118_KINDS] if kinds else list(_ISO15118_KINDS)
    if iso:
        reply = await pnc16.call(send, "GetInstalledCertificateIds", {"certificateType": iso})
        if reply.outcome == "result":
            found += _chains(reply.payload)
        elif kinds or reply.error_code != "NotSupported":
            return reply
    return CommandReply(
        "result", payload={"status": "Accepted" if found else "NotFound", "certificates": found}
    )


Translation = Callable[[OcppVersion, Payload, Send], Awaitable[CommandReply]]
COMMANDS: dict[str, Translation] = {
    RENEW_CERTIFICATE: renew,
    INSTALL_CERTIFICATE: install,
    GET_INSTALLED_CERTIFICATES: installed,
    DELETE_CERTIFICATE: delete,
}
