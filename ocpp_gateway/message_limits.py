"""What a 2.x station says one message may carry: `ItemsPerMessage` and `BytesPerMessage`, each with the
action as variable instance, in DeviceDataCtrlr (GetVariables, SetVariables) and MonitoringCtrlr
(SetVariableMonitoring, ClearVariableMonitoring); SendLocalList's are LocalAuthListCtrlr's own (no instance).

Learned per connection (a station reconnecting may come back with new firmware): from its NotifyReport
(a GetBaseReport the operator asked for), from any GetVariables answer that names them, or by asking the
two of an action once, before the first request of that action that could need splitting (`split_calls`).
"""

from __future__ import annotations

from collections.abc import Iterable

from ocpp_gateway.batching import SPLITS, Limits, Payload

KINDS = ("ItemsPerMessage", "BytesPerMessage")
SEND_LOCAL_LIST = "SendLocalList"
# action -> (controller, variable instance) its limits are kept under
WHERE: dict[str, tuple[str, str | None]] = {
    **{action: (split.component, action) for action, split in SPLITS.items()},
    SEND_LOCAL_LIST: ("LocalAuthListCtrlr", None),
}
_ACTION_AT = {place: action for action, place in WHERE.items()}


def _count(value: object) -> int | None:
    """A usable limit, or None (none given, not a number, 0 or less: the station sets no limit)."""
    try:
        number = int(str(value).strip())
    except ValueError:
        return None
    return number if number > 0 else None


class MessageLimits:
    """The limits one connected station reported; an (action, kind) not yet heard of is unknown."""

    def __init__(self) -> None:
        self._values: dict[tuple[str, str], int | None] = {}

    def known(self, action: str) -> bool:
        return all((action, kind) in self._values for kind in KINDS)

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
        for kind in KINDS:
            self._values.setdefault((action, kind), None)

    def _learn(self, component: Payload, variable: Payload, value: object) -> None:
        kind = variable.get("name")
        instance = variable.get("instance")
        action = _ACTION_AT.get((str(component.get("name")), str(instance) if instance else None))
        if action is not None and kind in KINDS:
            self._values[(action, str(kind))] = _count(value)

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
