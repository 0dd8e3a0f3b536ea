"""The version-neutral commands every part of chargeops may send a charger, and the reply it gets back.

As `chargeops.events` holds what chargers report, this holds what ops may ask of them without knowing their
OCPP version. The bus carries an action name and a JSON payload to whichever gateway process holds the
charger; the charger's session turns a neutral `chargeops.*` action into its own version's OCPP call (an
OCPP action name passes through unchanged: that is the operator API's raw relay, OCPP field names in and out).

* `chargeops.SetPowerLimit` `{"limit_w"}` (watts per connector, from now) → SetChargingProfile, a
  TxDefaultProfile on connector / EVSE 0;
* `chargeops.SetDerControl` `{"control_id", "control_type", "is_default", "priority", "start_time"?,
  "duration_s"?, "settings"}` → SetDERControl (2.1);
* `chargeops.SetDischargeLimit` `{"pct"}` (0..100 % of the rated discharge power) → the site planner's
  LimitMaxDischarge, a default control with a fixed id (`PLANNER_CONTROL_ID`) (2.1);
* `chargeops.ClearDerControl` `{"is_default", "control_id"?, "control_type"?}` → ClearDERControl (2.1);
* `chargeops.GetDerControls` `{"request_id", "is_default"?, "control_type"?, "control_id"?}` → GetDERControl
  (2.1); the controls arrive as `DerControlsReported` events;
* `chargeops.RequestBatterySwap` `{"request_id", "id_token", "id_token_type"?}` → RequestBatterySwap (2.1);
  the station's BatteryIn / BatteryOut arrive as `BatterySwapped` events;
* `chargeops.SetChargerPassword` `{"password"}` → 1.6 ChangeConfiguration AuthorizationKey (hex) / 2.x
  SetVariables SecurityCtrlr.BasicAuthPassword; answered `{"status"}`. The gateway keeps the new password
  once the charger accepts it (the old one works until the charger connects with the new one);
* `chargeops.RenewCertificate` `{"certificate_type"?}` (ChargingStationCertificate, V2GCertificate,
  V2G20Certificate) → 1.6 ExtendedTriggerMessage SignChargePointCertificate / 2.x TriggerMessage
  SignChargingStationCertificate (SignV2GCertificate, SignV2G20Certificate): the station sends a new CSR;
* `chargeops.InstallCertificate` `{"certificate_type", "certificate"}` (a CA certificate, PEM; types as 2.x
  names them: CSMSRootCertificate, ManufacturerRootCertificate, V2GRootCertificate, MORootCertificate,
  and 2.1's OEMRootCertificate) → InstallCertificate (1.6: CentralSystemRootCertificate for
  CSMSRootCertificate);
* `chargeops.GetInstalledCertificates` `{"certificate_types"?}` (none: all) → GetInstalledCertificateIds
  (1.6: one call per type); answered `{"status", "certificates": [{"certificate_type", "hash_algorithm",
  "issuer_name_hash", "issuer_key_hash", "serial_number", "children"?}]}`;
* `chargeops.DeleteCertificate` `{"hash": {"hash_algorithm", "issuer_name_hash", "issuer_key_hash",
  "serial_number"}, "certificate_type"?}` → DeleteCertificate (answered `{"status"}` as the other two);
  the four above reach a 1.6 station's ISO 15118 certificates (V2G, MO roots, its V2G chain) in 2.0.1 words
  through the Plug & Charge DataTransfer of the OCA application note (the gateway's `pnc16`);
* `chargeops.SetEvChargingSchedule` `{"evse_id", "transaction_id", "start_at" (ISO), "duration_s"?,
  "periods": [{"start_s", "limit_w"}]}` → SetChargingProfile, the ISO 15118 session's TxProfile (2.x), id
  `ev_profile_id(evse_id)`: one per EVSE, so a renegotiated schedule replaces the last one;
* `chargeops.UpdateCost` `{"transaction_id", "total_cost"}` (the running cost, tax included, as decimal
  text in the currency of the session's tariff) → 2.x CostUpdated (block I02); 1.6 has no message for it;
* `chargeops.GetLocalAuthSettings` `{}` → 1.6 GetConfiguration of LocalAuthListEnabled,
  LocalAuthListMaxLength, SendLocalListMaxLength, AuthorizationCacheEnabled / 2.x GetVariables of
  LocalAuthListCtrlr Enabled, ItemsPerMessage, BytesPerMessage and AuthCacheCtrlr Enabled; answered
  `{"list_enabled", "max_length", "items_per_message", "bytes_per_message", "cache_enabled"}` (None: the
  charger did not say; 2.x has no max length to read with GetVariables);
* `chargeops.GetLocalListVersion` `{}` → GetLocalListVersion; answered `{"version"}` (0: no list installed,
  -1: a 1.6 charger without local list);
* `chargeops.SendLocalList` `{"version", "full", "entries": [{"id_token", "type", "status"?, "expiry"?,
  "group_id"?}]}` → SendLocalList (1.6 idTagInfo with expiryDate and parentIdTag, 2.x idTokenInfo with
  cacheExpiryDateTime and groupIdToken); an entry without `status` removes the token (differential
  updates); answered `{"status", "reason"?, "entries_sent"?}` (2.x: only the first `entries_sent` entries
  went, the most the station's LocalAuthListCtrlr BytesPerMessage allows; send the rest next);
* `chargeops.ClearAuthCache` `{}` → ClearCache; answered `{"status"}`.

DER `settings` are the control's own parameters as the standard names them (e.g. `{"pctMaxDischargePower":
40}`, or `{"yUnit", "curveData"}` for a curve); DER answers come back neutral: `{"status",
"superseded_ids"?, "reason"?, "info"?}`, as do the local-authorization ones above; every other answer comes
back as the charger sent it (a 2.x list request the gateway split to the station's message limits: the
parts' answers merged in request order). A charger whose version has no message for an action gets nothing:
the reply is `invalid` with code `NotSupported`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

SET_POWER_LIMIT = "chargeops.SetPowerLimit"
SET_DER_CONTROL = "chargeops.SetDerControl"
SET_DISCHARGE_LIMIT = "chargeops.SetDischargeLimit"
CLEAR_DER_CONTROL = "chargeops.ClearDerControl"
GET_DER_CONTROLS = "chargeops.GetDerControls"
REQUEST_BATTERY_SWAP = "chargeops.RequestBatterySwap"
SET_CHARGER_PASSWORD = "chargeops.SetChargerPassword"
SET_EV_CHARGING_SCHEDULE = "chargeops.SetEvChargingSchedule"
UPDATE_COST = "chargeops.UpdateCost"
GET_LOCAL_AUTH_SETTINGS = "chargeops.GetLocalAuthSettings"
GET_LOCAL_LIST_VERSION = "chargeops.GetLocalListVersion"
SEND_LOCAL_LIST = "chargeops.SendLocalList"
CLEAR_AUTH_CACHE = "chargeops.ClearAuthCache"
# TxProfiles of ISO 15118 sessions (`SET_EV_CHARGING_SCHEDULE`): one id per EVSE, so a renegotiated
# schedule replaces the last one and the operator's own profiles (other ids) and the site planner's
# TxDefaultProfile stay.
EV_PROFILE_ID_BASE = 900_100
DER_ACTIONS = frozenset({SET_DER_CONTROL, SET_DISCHARGE_LIMIT, CLEAR_DER_CONTROL, GET_DER_CONTROLS})
RENEW_CERTIFICATE = "chargeops.RenewCertificate"
INSTALL_CERTIFICATE = "chargeops.InstallCertificate"
GET_INSTALLED_CERTIFICATES = "chargeops.GetInstalledCertificates"
DELETE_CERTIFICATE = "chargeops.DeleteCertificate"
# CA certificates a station may be given (2.x InstallCertificateUseEnumType; 1.6 knows the first two, the
# last is OCPP 2.1's only).
INSTALLABLE_CERTIFICATES = (
    "CSMSRootCertificate",
    "ManufacturerRootCertificate",
    "V2GRootCertificate",
    "MORootCertificate",
    "OEMRootCertificate",
)

# The site planner's own discharge cap: each new cap replaces the last one (same id), and clearing it leaves
# an operator's controls alone.
PLANNER_CONTROL_ID = "chargeops-site-discharge"

# The DER control types (OCPP 2.1 DERControlEnumType; the gateway's tests hold this to the schema).
DER_CONTROL_TYPES = frozenset(
    {
        "EnterService",
        "FixedPFAbsorb",
        "FixedPFInject",
        "FixedVar",
        "FreqDroop",
        "FreqWatt",
        "Gradients",
        "HFMayTrip",
        "HFMustTrip",
        "HVMayTrip",
        "HVMomCess",
        "HVMustTrip",
        "LFMustTrip",
        "LimitMaxDischarge",
        "LVMayTrip",
        "LVMomCess",
        "LVMustTrip",
        "PowerMonitoringMustTrip",
        "VoltVar",
        "VoltWatt",
        "WattPF",
        "WattVar",
    }
)


def ev_profile_id(evse_id: int) -> int:
    """The id of the TxProfile `SET_EV_CHARGING_SCHEDULE` gives the ISO 15118 session on `evse_id`."""
    return EV_PROFILE_ID_BASE + evse_id


@dataclass(slots=True)
class CommandReply:
    """Outcome of a command: `result` (the answer: as the charger sent it, or neutral for a neutral DER
    action), `error` (its CALLERROR), `bad_response` (its answer broke the schema), `invalid` (our side
    refused the payload), `timeout` or `not_connected`."""

    outcome: str
    payload: dict[str, Any] = field(default_factory=dict)
    error_code: str | None = None
    description: str | None = None
    details: dict[str, Any] = field(default_factory=dict)


class Commands(Protocol):
    """What sends a command to one charger and waits for its reply (`telemetry.bus.Bus` is one; the API's
    `LoopBus` is another)."""

    async def request(
        self, charger_id: str, action: str, payload: dict[str, Any], timeout: float
    ) -> CommandReply: ...
