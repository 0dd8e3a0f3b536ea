"""Dialect interface: how the neutral core's events become one OCPP version's messages, and back."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import orjson

from firmware_stubs.model import ChargingProfile, KeyDef, Period, parse_iso

if TYPE_CHECKING:
    from firmware_stubs.charger import Connector, OutboundCall, Reservation, SimulatedCharger, Transaction

Payload = dict[str, Any]
Handler = Callable[["SimulatedCharger", Payload], Payload]
SWAP_VENDOR_ID = "org.chargeops.swap"  # DataTransfer vendorId of battery-swap reports before OCPP 2.1


def schedule_periods(periods: list[Period]) -> list[Payload]:
    """A composite schedule's periods: the same `chargingSchedulePeriod` shape in 1.6 and 2.0.1."""
    return [
        {"startPeriod": x.start, "limit": x.limit, **({"numberPhases": x.phases} if x.phases else {})}
        for x in periods
    ]


class Dialect(ABC):
    """One instance serves every charger of a version, so it keeps nothing per charger: what a version must
    remember per station (2.x monitors and display messages, DER controls) is a typed component of the
    charger (``cp.device``, ``cp.der_controls``), made on first use."""

    version: str
    subprotocol: str
    config_defs: Mapping[str, KeyDef]
    error_names: Mapping[str, str] = {}
    profile_purposes: Mapping[str, str]  # version purpose name -> neutral purpose

    def error_name(self, code: str) -> str:
        """Neutral (2.0.1-spelled) error code in this version's spelling."""
        return self.error_names.get(code, code)

    def handler(self, action: str) -> Handler | None:
        """CSMS-initiated actions are methods named ``on_<Action>(charger, payload) -> response``."""
        fn: Handler | None = getattr(self, f"on_{action}", None)
        return fn

    def finalize(self, cp: SimulatedCharger, item: OutboundCall) -> Payload:
        """Last-moment payload fix-ups at send time (1.6 fills in CSMS-issued transaction ids)."""
        return item.payload

    def parse_profile(self, raw: Payload, connector: int, id_key: str, schedule: Payload) -> ChargingProfile:
        """Neutral profile from either version's ChargingProfile (they differ only in a few names)."""
        unit = schedule.get("chargingRateUnit", "W")
        return ChargingProfile(
            id=int(raw[id_key]),
            connector=connector,
            stack_level=int(raw["stackLevel"]),
            purpose=self.profile_purposes[raw["chargingProfilePurpose"]],
            kind=raw["chargingProfileKind"],
            unit="W" if unit == "W" else "A",
            periods=[
                Period(int(p["startPeriod"]), float(p["limit"]), p.get("numberPhases"))
                for p in schedule["chargingSchedulePeriod"]
            ],
            recurrency=raw.get("recurrencyKind"),
            valid_from=parse_iso(raw.get("validFrom")),
            valid_to=parse_iso(raw.get("validTo")),
            transaction_id=str(raw["transactionId"]) if raw.get("transactionId") is not None else None,
            start=parse_iso(schedule.get("startSchedule")),
            duration=schedule.get("duration"),
            raw=raw,
        )

    def neutral_purpose(self, name: str | None) -> str | None:
        return None if name is None else self.profile_purposes.get(name, name)

    @abstractmethod
    def boot_request(self, cp: SimulatedCharger, reason: str) -> tuple[str, Payload]:
        """(action, payload) of the BootNotification; ``reason`` uses 2.0.1 BootReason names."""

    @abstractmethod
    def after_boot(self, cp: SimulatedCharger) -> None:
        """Report every connector's status after an accepted boot."""

    @abstractmethod
    def status_changed(self, cp: SimulatedCharger, c: Connector, old: str) -> None:
        """Connector status changed from ``old`` (neutral names; '' = report unconditionally)."""

    @abstractmethod
    def authorize(self, cp: SimulatedCharger, c: Connector, tag: str) -> None:
        """Send Authorize; the result must reach ``cp.authorized``."""

    @abstractmethod
    def tx_started(self, cp: SimulatedCharger, c: Connector, tx: Transaction) -> None:
        """Transaction start message; its result must reach ``cp.tx_confirmed``."""

    @abstractmethod
    def tx_periodic(self, cp: SimulatedCharger, c: Connector, tx: Transaction) -> None:
        """Periodic meter values of a running transaction."""

    @abstractmethod
    def tx_ended(self, cp: SimulatedCharger, c: Connector, tx: Transaction, reason: str) -> None:
        """Transaction end; ``reason`` is neutral (Local, Remote, EVDisconnected, EVFull, Fault ...)."""

    @abstractmethod
    def meter_values(self, cp: SimulatedCharger, c: Connector, context: str) -> None:
        """Out-of-transaction (e.g. triggered) MeterValues."""

    @abstractmethod
    def fault_changed(self, cp: SimulatedCharger, c: Connector, raised: bool) -> None:
        """A fault was raised or cleared (status changes are reported separately)."""

    @abstractmethod
    def firmware_status(
        self, cp: SimulatedCharger, status: str, request_id: int | None, signed: bool
    ) -> None:
        """Firmware progress: Downloading, Downloaded, DownloadFailed, Installing, Installed, Idle."""

    @abstractmethod
    def upload_status(self, cp: SimulatedCharger, kind: str, status: str, request_id: int | None) -> None:
        """Diagnostics/log upload progress: Uploading, Uploaded, UploadFailed, Idle."""

    @abstractmethod
    def reservation_ended(self, cp: SimulatedCharger, c: Connector, res: Reservation, why: str) -> None:
        """A reservation expired (why = 'Expired')."""

    def battery_swap(self, cp: SimulatedCharger, payload: Payload) -> None:
        """Report a swap step (an OCPP 2.1 BatterySwapRequest payload). Before 2.1 there is no such
        message, so it travels as DataTransfer (same shape in 1.6 and 2.0.1); the 2.1 dialect sends it
        natively. Queued like transaction messages: a swap must not be lost while offline."""
        request = {
            "vendorId": SWAP_VENDOR_ID,
            "messageId": "BatterySwap",
            "data": orjson.dumps(payload).decode(),
        }

        def answered(result: Payload) -> None:
            if result.get("status") != "Accepted":
                cp.log.warning("CSMS answered swap DataTransfer with %s", result.get("status"))

        cp.emit("DataTransfer", request, transactional=True, on_result=answered)

    def der_alarm(self, cp: SimulatedCharger, control_type: str, fault: str, *, ended: bool) -> None:
        """A grid event raised or ended. Only OCPP 2.1 has DER messages; before it the event stays local."""
        return None

    def der_tick(self, cp: SimulatedCharger) -> None:
        """Report scheduled DER controls that started or ended (OCPP 2.1 only)."""
        return None

    # ---------------------------------------------- CSMS calls identical in 1.6(+security) and 2.0.1
    def on_ClearCache(self, cp: SimulatedCharger, p: Payload) -> Payload:
        cp.clear_cache()
        return {"status": "Accepted"}

    def on_DataTransfer(self, cp: SimulatedCharger, p: Payload) -> Payload:
        if p["vendorId"] != cp.vendor:
            return {"status": "UnknownVendorId"}
        return {"status": "Accepted", "data": p.get("data", "")}

    def on_GetLog(self, cp: SimulatedCharger, p: Payload) -> Payload:
        name = cp.start_upload("log", p["log"]["remoteLocation"], p["requestId"])
        return {"status": "Accepted", "filename": name[:255]}

    def on_CertificateSigned(self, cp: SimulatedCharger, p: Payload) -> Payload:
        cp.install_certificate(p.get("certificateType", "ChargingStationCertificate"), p["certificateChain"])
        return {"status": "Accepted"}

    def on_InstallCertificate(self, cp: SimulatedCharger, p: Payload) -> Payload:
        cp.install_certificate(p["certificateType"], p["certificate"])
        return {"status": "Accepted"}

    def on_DeleteCertificate(self, cp: SimulatedCharger, p: Payload) -> Payload:
        return {"status": "Accepted" if cp.delete_certificate(p["certificateHashData"]) else "NotFound"}

    def on_CancelReservation(self, cp: SimulatedCharger, p: Payload) -> Payload:
        return {"status": "Accepted" if cp.cancel_reservation(p["reservationId"]) else "Rejected"}
