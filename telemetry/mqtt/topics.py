"""The bus's topic names under one root, in one place (what they carry: docs/bus.md, "Topic tree")."""

from __future__ import annotations

from urllib.parse import quote, unquote

VERSION = "v2"


class Topics:
    """`{root}/v2/...`; ids are percent-encoded so `/`, `+` and `#` cannot break the tree."""

    __slots__ = ("base", "commands_prefix", "events_all", "events_prefix", "gateways_all", "root")

    def __init__(self, root: str) -> None:
        self.root = root
        self.base = f"{root}/{VERSION}"
        self.events_prefix = f"{self.base}/events/"
        self.events_all = f"{self.events_prefix}#"
        self.commands_prefix = f"{self.base}/commands/"
        self.gateways_all = f"{self.base}/gateways/+"

    def events(self, gateway_id: str) -> str:
        """Where the gateway `gateway_id` publishes its event batches."""
        return f"{self.events_prefix}{quote(gateway_id, safe='')}"

    def shared_events(self, group: str) -> str:
        """Every gateway's events, shared among the sessions of one consumer group (ingest, ops)."""
        return f"$share/chargeops-{group}/{self.events_all}"

    def commands(self, charger_id: str) -> str:
        """Hold notices and commands for one charger."""
        return f"{self.commands_prefix}{quote(charger_id, safe='')}"

    @staticmethod
    def charger_of(command_topic: str) -> str:
        return unquote(command_topic.rsplit("/", 1)[1])

    def replies(self, bus_id: str) -> str:
        """Acks and replies for the bus instance that asked."""
        return f"{self.base}/replies/{bus_id}"

    def gateway(self, gateway_id: str) -> str:
        """The gateway `gateway_id`'s presence (retained "online", its Will "offline")."""
        return f"{self.base}/gateways/{quote(gateway_id, safe='')}"

    def shared_gateways(self, group: str) -> str:
        """Every gateway's presence, shared among the sessions of one consumer group (no retained messages
        reach a shared subscription: each live change goes to one member)."""
        return f"$share/chargeops-{group}/{self.gateways_all}"
