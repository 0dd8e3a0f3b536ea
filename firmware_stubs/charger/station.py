"""``SimulatedCharger``: one charging station, composed of its concerns."""

from __future__ import annotations

import math
import random
from typing import ClassVar

from firmware_stubs.charger.calls import CallsMixin
from firmware_stubs.charger.components import DeviceState
from firmware_stubs.charger.jobs import JobsMixin
from firmware_stubs.charger.link import LinkMixin
from firmware_stubs.charger.physics import PhysicsMixin
from firmware_stubs.charger.sessions import SessionsMixin
from firmware_stubs.charger.smart_charging import SmartChargingMixin
from firmware_stubs.charger.state import FAULT_CODES, Connector, SimEnvironment
from firmware_stubs.model import MEASURANDS, V2X_MEASURANDS, ConfigStore


class SimulatedCharger(LinkMixin, CallsMixin, SessionsMixin, PhysicsMixin, SmartChargingMixin, JobsMixin):
    """One simulated charging station speaking OCPP 1.6J, 2.0.1 or 2.1 to any central system.

    One instance is one station with one websocket and one long-lived task. Everything that depends on
    the OCPP version (message shapes, enum spellings) is delegated to ``self.dialect``.
    """

    fault_codes: ClassVar[tuple[str, ...]] = FAULT_CODES

    __slots__ = ()

    def __init__(
        self,
        charge_point_id: str,
        csms_url: str,
        *,
        protocol: str = "ocpp1.6",
        password: str | None = None,
        connectors: int = 1,
        max_power_w: float = 22_000.0,
        dc: bool = False,
        rng: random.Random | None = None,
        env: SimEnvironment | None = None,
        vendor: str = "ChargeOps",
        model: str = "SimCharger",
        firmware_version: str = "1.0.0",
        max_discharge_w: float = 0.0,
    ) -> None:
        from firmware_stubs.dialects import dialect_for

        if connectors < 1:
            raise ValueError("a charger needs at least one connector")
        if max_discharge_w > 0 and protocol != "ocpp2.1":
            raise ValueError("a bidirectional (V2X) charger speaks ocpp2.1: DER control needs it")
        self.id = charge_point_id
        self.url = f"{csms_url.rstrip('/')}/{charge_point_id}"
        self.password = password
        self.dialect = dialect_for(protocol)
        self.env = env or SimEnvironment()
        self.rng = rng or random.Random(charge_point_id)
        self.connectors = [Connector(i) for i in range(connectors + 1)]
        self.max_power_w = max_power_w
        self.max_discharge_w = max_discharge_w
        self.dc = dc
        self.vendor = vendor
        self.model = model
        self.firmware_version = firmware_version
        overrides = {"NumberOfConnectors": str(connectors)}
        if self.env.sample_interval != 60.0:
            # fractional seconds are allowed here so tests and demos can sample faster than 1 Hz
            overrides["MeterValueSampleInterval"] = f"{max(0.0, self.env.sample_interval):g}"
        if max_discharge_w > 0:
            overrides["MeterValuesSampledData"] = ",".join(MEASURANDS + V2X_MEASURANDS)
            overrides["StopTxnSampledData"] = "Energy.Active.Import.Register,Energy.Active.Export.Register"
        self.config = ConfigStore(self.dialect.config_defs, overrides)
        self.registration = "Unknown"
        self.received_calls = []
        self.schema_violations = []
        self.calls_sent = self.calls_received = self.call_errors = 0
        self.boots_accepted = self.sessions_started = self.sessions_completed = 0
        self.faults = self.connected_count = 0
        self.energy_wh = 0.0
        self.local_list_version = 0
        self._local_list = None
        self._auth_cache = None
        self._profiles = None
        self._grid = None
        self._jobs = None
        self._device = None
        self._task = None
        self._ws = None
        self._waiter = None
        self._queue = []
        self._outstanding = None
        self._msg_seq = 0
        self._failures = 0
        self._boot_failures = 0
        self._boot_reason = "PowerUp"
        self._connect_at = self._boot_due = self._hold_until = 0.0
        self._heartbeat_due = self._sample_due = self._tick_due = math.inf
        self._last_tick_sim = 0.0
        self._reboot = None
        self._reset_on_idle = None

    @property
    def device(self) -> DeviceState:
        """State of the OCPP 2.x device-model features (monitors, display messages ...), made on first use."""
        if self._device is None:
            self._device = DeviceState()
        return self._device
