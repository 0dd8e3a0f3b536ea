"""ISO 15118 Plug & Charge of a simulated OCPP 1.6 charger, as the OCA application note "Using ISO 15118
Plug & Charge with OCPP 1.6" has it: 2.0.1 messages in DataTransfer (vendorId
``org.openchargealliance.iso15118pnc``, messageId the 2.0.1 action, ``data`` the 2.0.1 payload as a JSON
string), on when the configuration key ``ISO15118PnCEnabled`` (the note's) is true; off, the charger answers
the tunnel UnknownVendorId.

The charger sends Authorize with contract certificate data, GetCertificateStatus, Get15118EVCertificate and
SignCertificate (its V2G certificate: on TriggerMessage SignV2GCertificate, or when asked) through ``send``,
and answers the CSMS's CertificateSigned, InstallCertificate, DeleteCertificate, GetInstalledCertificateIds
and TriggerMessage, keeping the certificates with its others (``JobsMixin``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import orjson

if TYPE_CHECKING:
    from firmware_stubs.charger import SimulatedCharger

Payload = dict[str, Any]
VENDOR_ID = "org.openchargealliance.iso15118pnc"
ENABLED_KEY = "ISO15118PnCEnabled"
V2G_CHAIN = "V2GCertificateChain"  # what the station's signed V2G certificate is listed as (2.0.1)
ISO15118_KINDS = ("V2GRootCertificate", "MORootCertificate", V2G_CHAIN)


def send(
    cp: SimulatedCharger,
    action: str,
    payload: Payload,
    on_result: Callable[[Payload | None], None] | None = None,
) -> None:
    """A tunnelled 2.0.1 request; ``on_result`` gets the CSMS's 2.0.1 answer (None: it did not accept)."""

    def answered(result: Payload) -> None:
        inner = None
        if result.get("status") == "Accepted" and isinstance(result.get("data"), str):
            inner = orjson.loads(result["data"])
        else:
            cp.log.warning("CSMS answered Plug & Charge %s with %s", action, result.get("status"))
        if on_result is not None:
            on_result(inner)

    request = {"vendorId": VENDOR_ID, "messageId": action, "data": orjson.dumps(payload).decode()}
    cp.emit("DataTransfer", request, on_result=answered)


def sign_v2g_certificate(cp: SimulatedCharger) -> None:
    """Ask for a (new) V2G certificate: a fresh CSR, CN = the charge point id."""
    send(cp, "SignCertificate", {"csr": cp.csr(), "certificateType": "V2GCertificate"})


def _installed(cp: SimulatedCharger, p: Payload) -> Payload:
    kinds = [k for k in p.get("certificateType") or ISO15118_KINDS if k in ISO15118_KINDS]
    found = [{"certificateType": k, "certificateHashData": h} for k, h in cp.certificates(kinds)]
    return {"status": "Accepted", "certificateHashDataChain": found} if found else {"status": "NotFound"}


def _trigger(cp: SimulatedCharger, p: Payload) -> Payload:
    if p["requestedMessage"] != "SignV2GCertificate":
        return {"status": "NotImplemented"}
    sign_v2g_certificate(cp)
    return {"status": "Accepted"}


def _signed(cp: SimulatedCharger, p: Payload) -> Payload:
    cp.install_certificate(V2G_CHAIN, p["certificateChain"])
    return {"status": "Accepted"}


def _install(cp: SimulatedCharger, p: Payload) -> Payload:
    cp.install_certificate(p["certificateType"], p["certificate"])
    return {"status": "Accepted"}


def _delete(cp: SimulatedCharger, p: Payload) -> Payload:
    return {"status": "Accepted" if cp.delete_certificate(p["certificateHashData"]) else "NotFound"}


_ANSWERS: dict[str, Callable[[SimulatedCharger, Payload], Payload]] = {
    "CertificateSigned": _signed,
    "DeleteCertificate": _delete,
    "GetInstalledCertificateIds": _installed,
    "InstallCertificate": _install,
    "TriggerMessage": _trigger,
}


def on_data_transfer(cp: SimulatedCharger, p: Payload) -> Payload:
    """The CSMS's tunnelled call, answered with the 2.0.1 response in ``data``."""
    if not cp.config.get_bool(ENABLED_KEY):
        return {"status": "UnknownVendorId"}
    answer = _ANSWERS.get(p.get("messageId") or "")
    if answer is None:
        return {"status": "UnknownMessageId"}
    try:
        inner = orjson.loads(p.get("data") or "")
        return {"status": "Accepted", "data": orjson.dumps(answer(cp, inner)).decode()}
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return {"status": "Rejected"}
