"""Sessions at the connectors: plug, authorize, transactions, faults, availability, status, reservations.

The neutral core of a charging session; how each step is worded on the wire is the dialect's business
(``self.dialect.tx_started`` ...).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import math
import uuid

from firmware_stubs.charger.base import ChargerBase
from firmware_stubs.charger.state import Connector, Reservation, Transaction
from firmware_stubs.model import EV, ChargingProfile


class SessionsMixin(ChargerBase):
    """Drivers, sessions and connector state: everything that decides a connector's status."""

    __slots__ = ()

    def status(self, connector: int) -> str:
        """Neutral (1.6 spelling) status of a connector, e.g. 'Charging', 'Faulted'."""
        return self.connectors[connector].status

    def transaction(self, connector: int) -> Transaction | None:
        return self.connectors[connector].tx

    @property
    def transactions(self) -> list[Transaction]:
        return [c.tx for c in self.connectors if c.tx is not None]

    @property
    def local_list(self) -> dict[str, str]:
        return dict(self._local_list or {})

    # ------------------------------------------------------------------ driver-side actions
    async def plug_in(self, connector: int, id_tag: str | None, *, ev: EV | None = None) -> None:
        """EV plugged in and (optionally) id tag presented: authorize, then start a session."""
        self._plug(self._connector(connector), id_tag, ev)

    async def unplug(self, connector: int) -> None:
        """EV unplugged: ends the session (EVDisconnected) and frees the connector."""
        self._unplug(self._connector(connector))

    async def present_id_tag(self, connector: int, id_tag: str) -> None:
        """Badge swipe: stops the running session with the same tag, or authorizes a plugged-in EV."""
        self._present_tag(self._connector(connector), id_tag)

    def inject_fault(
        self, connector: int, code: str, *, vendor_code: str | None = None, clear_after: float | None = None
    ) -> None:
        """Raise a hardware fault (one of ``fault_codes``); ends any session on it."""
        if code not in self.fault_codes:
            raise ValueError(f"unknown fault code {code!r}; use one of {self.fault_codes}")
        c = self._connector(connector, allow_station=True)
        c.fault = code
        c.vendor_fault = vendor_code
        c.fault_clear_at = self.env.clock.now() + clear_after if clear_after else None
        self.faults += 1
        self.log.warning("fault %s on connector %d (vendor code %s)", code, connector, vendor_code)
        for victim in self.connectors[1:] if connector == 0 else [c]:
            if victim.tx is not None:
                self._end_tx(victim, "Fault")
        self.dialect.fault_changed(self._whole, c, True)
        self._refresh_all()

    def clear_fault(self, connector: int) -> None:
        """Clear a fault; the connector returns to its normal status."""
        c = self._connector(connector, allow_station=True)
        if c.fault is None:
            return
        self.log.info("fault %s on connector %d cleared", c.fault, connector)
        self.dialect.fault_changed(self._whole, c, False)
        c.fault = c.vendor_fault = None
        c.fault_clear_at = None
        self._refresh_all()

    def _connector(self, index: int, allow_station: bool = False) -> Connector:
        if not (0 if allow_station else 1) <= index < len(self.connectors):
            raise ValueError(f"no connector {index} on {self.id}")
        return self.connectors[index]

    # ------------------------------------------------------------------ sessions
    def _plug(self, c: Connector, id_tag: str | None, ev: EV | None) -> None:
        if c.ev is not None:
            raise RuntimeError(f"connector {c.index} of {self.id} already has an EV plugged in")
        c.ev = ev or EV.random(self.rng, self.dc)
        c.finished = False
        c.depart_at = None
        c.last_sim = self.env.clock.now()
        self.log.info("EV plugged into connector %d (SoC %.0f%%)", c.index, c.ev.soc)
        self._refresh(c)
        if id_tag:
            self._present_tag(c, id_tag)

    def _unplug(self, c: Connector) -> None:
        if c.tx is not None:
            self._end_tx(c, "EVDisconnected")
        c.ev = None
        c.finished = False
        c.pending_tag = None
        c.depart_at = None
        self.log.info("EV unplugged from connector %d", c.index)
        self._refresh(c)

    def _present_tag(self, c: Connector, tag: str) -> None:
        if c.tx is not None:
            if c.tx.id_tag == tag:
                self._end_tx(c, "Local")
            return
        if c.fault or not c.operative or not self.connectors[0].operative:
            self.log.info("connector %d cannot charge now (status %s)", c.index, c.status)
            return
        if c.reservation is not None and c.reservation.id_tag != tag:
            self.log.info("connector %d reserved for another id tag", c.index)
            return
        self._authorize(c, tag)

    def _authorize(self, c: Connector, tag: str) -> None:
        c.pending_tag = tag
        if self.accepted:
            self.dialect.authorize(self._whole, c, tag)
            return
        status = (self._local_list or {}).get(tag) or (self._auth_cache or {}).get(tag)
        if status == "Accepted" and self.config.get_bool("LocalAuthorizeOffline"):
            self.log.info("offline: id tag %s authorized locally", tag)
            c.pending_tag = None
            self._begin_tx(c, tag)
        else:
            self.log.info("offline: id tag %s unknown locally, cannot authorize", tag)

    def authorized(self, c: Connector, tag: str, status: str) -> None:
        """Authorize result from the CSMS: only an Accepted id tag leads to charging."""
        if self.config.get_bool("AuthorizationCacheEnabled"):
            if self._auth_cache is None:
                self._auth_cache = {}
            self._auth_cache[tag] = status
        if c.pending_tag != tag:
            return
        c.pending_tag = None
        if status == "Accepted" and c.ev is not None and c.tx is None and not c.fault:
            self._begin_tx(c, tag)
        else:
            self.log.info("id tag %s not accepted (%s): no charge on connector %d", tag, status, c.index)

    def _begin_tx(self, c: Connector, tag: str, remote_start_id: int | None = None) -> Transaction:
        tx = Transaction(str(uuid.UUID(int=self.rng.getrandbits(128))), tag, c.meter_wh)
        tx.remote_start_id = remote_start_id
        if c.reservation is not None and c.reservation.id_tag == tag:
            tx.reservation_id = c.reservation.id
            c.reservation = None
        c.tx = tx
        self.sessions_started += 1
        self._advance(c)
        self.log.info("session %s started on connector %d for %s", tx.local_id, c.index, tag)
        self.dialect.tx_started(self._whole, c, tx)
        if math.isinf(self._sample_due):
            self._sample_due = asyncio.get_running_loop().time() + self._sample_interval()
        self._refresh(c)
        return tx

    def tx_confirmed(self, c: Connector, tx: Transaction, id_status: str | None) -> None:
        """Start confirmation: an id tag the CSMS does not accept ends the session (DeAuthorized)."""
        if id_status not in (None, "Accepted") and c.tx is tx:
            if self.config.get_bool("StopTransactionOnInvalidId"):
                self.log.info("CSMS rejected id tag %s (%s): stopping", tx.id_tag, id_status)
                self._end_tx(c, "DeAuthorized")

    def _end_tx(self, c: Connector, reason: str) -> None:
        tx = c.tx
        if tx is None:
            return
        self._advance(c)
        c.tx = None
        c.power_w = 0.0
        c.finished = c.ev is not None
        self.sessions_completed += 1
        self.log.info(
            "session %s on connector %d ended (%s), %.0f Wh",
            tx.local_id,
            c.index,
            reason,
            c.meter_wh - tx.meter_start,
        )
        self.dialect.tx_ended(self._whole, c, tx, reason)
        if c.pending_operative is not None:
            c.operative, c.pending_operative = c.pending_operative, None
        self._refresh(c)
        if not any(x.tx for x in self.connectors):
            self._sample_due = math.inf
            if self._reset_on_idle is not None:
                reason_boot, self._reset_on_idle = self._reset_on_idle, None
                self.request_reboot(reason_boot, hard=False, stop_reason="Reboot")

    def stop_transaction(self, transaction_id: object, reason: str = "Remote") -> bool:
        """RemoteStop/RequestStop: True if a running session with this id was stopped."""
        for c in self.connectors:
            if c.tx is not None and c.tx.matches(transaction_id):
                self._end_tx(c, reason)
                return True
        return False

    def remote_start(
        self,
        connector: int | None,
        tag: str,
        *,
        remote_start_id: int | None = None,
        profile: ChargingProfile | None = None,
    ) -> Connector | None:
        """RemoteStart/RequestStart: pick a free connector, plug a driver's EV in if none, start.

        Returns the connector used, or None (Rejected).
        """
        candidates = self.connectors[1:] if not connector else [self.connectors[connector]]
        if connector and connector >= len(self.connectors):
            return None
        for c in candidates:
            if c.tx is None and c.fault is None and c.operative and c.pending_tag is None:
                if c.reservation is not None and c.reservation.id_tag != tag:
                    continue
                if c.ev is None:
                    c.ev = EV.random(self.rng, self.dc)
                    c.finished = False
                    c.last_sim = self.env.clock.now()
                if self.config.get_bool("AuthorizeRemoteTxRequests") and self.accepted:
                    self._authorize(c, tag)
                else:
                    tx = self._begin_tx(c, tag, remote_start_id)
                    if profile is not None:
                        profile.connector = c.index
                        profile.transaction_id = tx.local_id
                        self.set_profile(profile)
                return c
        return None

    def unlock(self, connector: int, *, stop_running: bool) -> str:
        """'Unlocked', 'UnlockFailed' (lock fault), 'Ongoing' (session, may not stop) or 'Unknown'."""
        if not 1 <= connector < len(self.connectors):
            return "Unknown"
        c = self.connectors[connector]
        if c.fault == "ConnectorLockFailure":
            return "UnlockFailed"
        if c.tx is not None:
            if not stop_running:
                return "Ongoing"
            self._end_tx(c, "UnlockCommand")
        return "Unlocked"

    def change_availability(self, connector: int, operative: bool) -> str:
        """'Accepted', 'Scheduled' (after the running session) or 'Rejected' (no such connector)."""
        if not 0 <= connector < len(self.connectors):
            return "Rejected"
        scheduled = False
        for c in self.connectors if connector == 0 else [self.connectors[connector]]:
            if c.tx is not None and not operative:
                c.pending_operative = False
                scheduled = True
            else:
                c.operative = operative
                c.pending_operative = None
        self._refresh_all()
        return "Scheduled" if scheduled else "Accepted"

    # ------------------------------------------------------------------ status
    def derive_status(self, c: Connector) -> str:
        if c.fault is not None or (c.index and self.connectors[0].fault is not None):
            return "Faulted"
        if c.index == 0:
            return "Available" if c.operative else "Unavailable"
        tx, ev = c.tx, c.ev
        if tx is not None:
            if ev is None or ev.soc >= min(ev.target_soc, 100.0):
                return "SuspendedEV"
            return "Charging" if c.power_w > 0 else "SuspendedEVSE"
        if not c.operative or not self.connectors[0].operative:
            return "Unavailable"
        if ev is not None:
            return "Finishing" if c.finished else "Preparing"
        return "Reserved" if c.reservation is not None else "Available"

    def _refresh(self, c: Connector) -> None:
        new = self.derive_status(c)
        if new != c.status:
            old, c.status = c.status, new
            self.log.info("connector %d: %s -> %s", c.index, old, new)
            self.dialect.status_changed(self._whole, c, old)

    def _refresh_all(self) -> None:
        for c in self.connectors:
            self._refresh(c)

    # ------------------------------------------------------------------ authorization lists
    def clear_cache(self) -> None:
        self._auth_cache = None

    def send_local_list(self, version: int, full: bool, entries: list[tuple[str, str | None]]) -> str:
        """'Accepted', 'VersionMismatch' (a differential update not above the list's version) or 'Failed'
        (version 0 or less, more entries than SendLocalListMaxLength, or a list that would outgrow
        LocalAuthListMaxLength: nothing is applied); ``entries`` status None removes the tag."""
        per_message = self.config.get_int("SendLocalListMaxLength")
        if version <= 0 or 0 < per_message < len(entries):
            return "Failed"
        if not full and version <= self.local_list_version:
            return "VersionMismatch"
        local = {} if full or self._local_list is None else dict(self._local_list)
        for tag, status in entries:
            if status is None:
                local.pop(tag, None)
            else:
                local[tag] = status
        if 0 < self.config.get_int("LocalAuthListMaxLength") < len(local):
            return "Failed"
        self._local_list = local or None
        self.local_list_version = version
        return "Accepted"

    def forget_id_tag(self, tag: str) -> None:
        """CustomerInformation clear: remove a tag from the cache and local list."""
        (self._auth_cache or {}).pop(tag, None)
        (self._local_list or {}).pop(tag, None)

    # ------------------------------------------------------------------ reservations
    def reserve(self, connector: int | None, reservation_id: int, tag: str, expiry: dt.datetime) -> str:
        """Neutral ReserveNow: 'Accepted', 'Faulted', 'Occupied', 'Unavailable' or 'Rejected'."""
        self.cancel_reservation(reservation_id)
        if connector is not None and not 1 <= connector < len(self.connectors):
            return "Rejected"
        candidates = self.connectors[1:] if connector is None else [self.connectors[connector]]
        for c in candidates:
            if c.status == "Available":
                c.reservation = Reservation(reservation_id, tag, expiry)
                self._refresh(c)
                return "Accepted"
        c = candidates[0]
        if c.fault:
            return "Faulted"
        if not c.operative:
            return "Unavailable"
        return "Occupied"

    def cancel_reservation(self, reservation_id: int) -> bool:
        for c in self.connectors:
            if c.reservation is not None and c.reservation.id == reservation_id:
                c.reservation = None
                self._refresh(c)
                return True
        return False
