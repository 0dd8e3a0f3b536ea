"""What a 2.x station says one message may carry: `ItemsPerMessage` and `BytesPerMessage`, each with the
action as variable instance, in DeviceDataCtrlr (GetVariables, SetVariables) and MonitoringCtrlr
(SetVariableMonitoring, ClearVariableMonitoring); SendLocalList's are LocalAuthListCtrlr's own (no instance).

Learned from the station's NotifyReport (a GetBaseReport the operator asked for), from any GetVariables
answer that names them, or by asking the two of an action once, when it refused a request as beyond its
limits (`split_calls`). What it reported is kept per charger (`LimitsStore`) and read again, once, on a
later connection before its first list request: a station that told its limits once (TC_B_08) gets parts
that fit on every connection after. A boot with other firmware forgets them (new firmware may take other
sizes); a question the station would not answer is given up for its connection only.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Protocol

from sqlalchemy.exc import SQLAlchemyError

from chargeops.logs import ChargerLog
from ocpp_gateway.batching import SPLITS, Limits, Payload

KINDS = ("ItemsPerMessage", "BytesPerMessage")
SEND_LOCAL_LIST = "SendLocalList"
# action -> (controller, variable instance) its limits are kept under
WHERE: dict[str, tuple[str, str | None]] = {
    **{action: (split.component, action) for action, split in SPLITS.items()},
    SEND_LOCAL_LIST: ("LocalAuthListCtrlr", None),
}
_ACTION_AT = {place: action for action, place in WHERE.items()}
# What a station reported, as kept per charger: action -> kind -> limit (None: it sets none).
StationLimits = dict[str, dict[str, int | None]]


class LimitsStore(Protocol):
    """Where a station's limits outlive its connection (the gateway's `Store`)."""

    async def message_limits(self, charger_id: str) -> StationLimits | None: ...

    async def keep_message_limits(self, charger_id: str, limits: StationLimits) -> None: ...


def _count(value: object) -> int | None:
    """A usable limit, or None (none given, not a number, 0 or less: the station sets no limit)."""
    try:
        number = int(str(value).strip())
    except ValueError:
        return None
    return number if number > 0 else None


class MessageLimits:
    """The limits one connected station reported; an (action, kind) not yet heard of is unknown. With a
    `store`, what it reported on earlier connections counts too (`load`) and what it reports is kept
    (`keep`); a storage failure only leaves them unknown / not kept (they are asked again if needed)."""

    def __init__(
        self, store: LimitsStore | None = None, charger_id: str = "", log: ChargerLog | None = None
    ) -> None:
        self._values: dict[tuple[str, str], int | None] = {}
        self._given_up: set[str] = set()  # actions whose limits the station would not say
        self._store, self._charger_id, self._log = store, charger_id, log
        self._kept: StationLimits | None = None  # what the store holds, once read on this connection
        self._heard = False  # a limit was reported since the last `keep`
        self._reading = asyncio.Lock()
        self._boots = 0  # `forget`s so far: a read begun before one is stale

    def known(self, action: str) -> bool:
        return action in self._given_up or all((action, kind) in self._values for kind in KINDS)

    def of(self, action: str) -> Limits:
        return Limits(self._values.get((action, KINDS[0])), self._values.get((action, KINDS[1])))

    def question(self, action: str) -> Payload:
        """The GetVariables that asks the station for the limits of `action` not known yet."""
        component, instance = WHERE[action]
        return {
            "getVariableData": [
                {
                    "component": {"name": component},
                    "variable": {"name": kind, "instance": instance} if instance else {"name": kind},
                }
                for kind in KINDS
                if (action, kind) not in self._values
            ]
        }

    def no_answer(self, action: str) -> None:
        """The station would not say: send as asked (no limit), and do not ask again on this connection."""
        self._given_up.add(action)

    def _learn(self, component: Payload, variable: Payload, value: object) -> None:
        kind = variable.get("name")
        instance = variable.get("instance")
        action = _ACTION_AT.get((str(component.get("name")), str(instance) if instance else None))
        if action is not None and kind in KINDS:
            self._values[(action, str(kind))] = _count(value)
            self._heard = True

    def learn_report(self, report_data: Iterable[Payload]) -> None:
        """From NotifyReport `reportData`: the Actual attribute of each limit variable it holds."""
        for entry in report_data:
            for attribute in entry.get("variableAttribute") or ():
                if attribute.get("type", "Actual") == "Actual" and "value" in attribute:
                    self._learn(entry["component"], entry["variable"], attribute["value"])

    def learn_results(self, results: Iterable[Payload]) -> None:
        """From GetVariables results: an Accepted Actual value of a limit variable."""
        for result in results:
            if (
                result.get("attributeStatus") == "Accepted"
                and result.get("attributeType", "Actual") == "Actual"
            ):
                self._learn(result["component"], result["variable"], result.get("attributeValue"))

    def reported(self) -> StationLimits:
        """What the station reported (on this connection, or kept from earlier ones), by action."""
        by_action: StationLimits = {}
        for (action, kind), value in sorted(self._values.items()):
            by_action.setdefault(action, {})[kind] = value
        return by_action

    async def load(self) -> None:
        """Add what the store kept from earlier connections, read once per connection; a limit heard on
        this one wins."""
        if self._store is None or self._kept is not None:
            return
        async with self._reading:
            if self._kept is not None:
                return
            boots = self._boots
            try:
                kept = await self._store.message_limits(self._charger_id) or {}
            except (SQLAlchemyError, ConnectionError, OSError) as exc:
                self._warn("message limits not read, unknown for now: %s", exc)
                return
            if boots != self._boots:
                return  # the station booted meanwhile: what was read may be of its former firmware
            usable: StationLimits = {}
            for action, kinds in kept.items():
                if action not in WHERE or not isinstance(kinds, dict):
                    continue
                for kind, value in kinds.items():
                    if kind in KINDS and (value is None or (type(value) is int and value > 0)):
                        usable.setdefault(action, {})[kind] = value
                        self._values.setdefault((action, kind), value)
            self._kept = usable

    async def keep(self) -> None:
        """Store what the station reported, if that adds to or changes what is kept for it."""
        if self._store is None or not self._heard:
            return
        await self.load()
        if self._kept is None:
            return  # not read (storage failing): tried again with the next limit heard
        reported = self.reported()
        if reported != self._kept:
            try:
                await self._store.keep_message_limits(self._charger_id, reported)
            except (SQLAlchemyError, ConnectionError, OSError) as exc:
                self._warn("message limits not kept: %s", exc)
                return
            self._kept = reported
        self._heard = False

    def forget(self) -> None:
        """The station booted (with other firmware the store forgets its limits): read them again."""
        self._values.clear()
        self._given_up.clear()
        self._kept, self._heard = None, False
        self._boots += 1

    def _warn(self, message: str, exc: Exception) -> None:
        if self._log is not None:
            self._log.warning(message, exc)
