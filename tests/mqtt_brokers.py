"""The MQTT 5 brokers the bus tests run against (docs/bus.md, "What the bus needs from a broker").

`mosquitto` is the machine's Mosquitto on 127.0.0.1:1883. `rumqttd` is rumqttd 0.20 as the PyPI wheel
`iotcore` ships it, run privately: its own port and config in a temporary directory, started and stopped by
this module by PID. `LACKS` names what each broker cannot do; tests/test_broker_requirements.py checks each
requirement on each broker and fails if a broker does more or less than the table says.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

# Brokers the bus tests (tests/test_mqtt_bus.py) run on: those that meet every requirement. rumqttd does not
# (LACKS): `CHARGEOPS_TEST_BUS_BROKERS=mosquitto,rumqttd` shows how the bus fails on it.
BUS_BROKERS = tuple(os.environ.get("CHARGEOPS_TEST_BUS_BROKERS", "mosquitto").split(","))

# Requirement (tests/test_broker_requirements.py) → the brokers that fail it.
LACKS: dict[str, set[str]] = {
    "puback_no_matching_subscribers": {"rumqttd"},  # acks "Success": events before ingest subscribed are lost
    "unacked_shared_redelivered": {"rumqttd"},  # its router panics ("group must exists"), the broker is gone
    "inflight_over_100": {"rumqttd"},  # at most 100 unacknowledged messages per session, whatever the config
    "client_id_slash": {"rumqttd"},  # refuses client ids with `/`, `+` or `#`
}


class Broker(Protocol):
    name: str
    host: str
    port: int

    def url(self, root: str) -> str: ...


class SharedMosquitto:
    """The machine's Mosquitto (never started or stopped by tests)."""

    name, host, port = "mosquitto", "127.0.0.1", 1883

    def url(self, root: str) -> str:
        return f"mqtt://{self.host}:{self.port}/{root}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# max_inflight_count is accepted but rumqttd 0.20 hands a session at most 100 unacknowledged messages
# anyway (measured); payloads up to 16 MiB hold the largest event batch.
RUMQTTD_CONFIG = """\
id = 0
[router]
id = 0
max_connections = 10010
max_outgoing_packet_count = 5000
max_segment_size = 104857600
max_segment_count = 10
shared_subscriptions_strategy = "roundrobin"

[v5.1]
name = "v5-1"
listen = "127.0.0.1:{port}"
next_connection_delay_ms = 1
[v5.1.connections]
connection_timeout_ms = 60000
max_payload_size = 16777216
max_inflight_count = 65535
"""


class PrivateRumqttd:
    """rumqttd in a child process (`python -m iotcore --config ...`) on a free port."""

    name, host = "rumqttd", "127.0.0.1"

    def __init__(self, base: Path) -> None:
        self.port = free_port()
        self.config = base / "rumqttd.toml"
        self.config.write_text(RUMQTTD_CONFIG.format(port=self.port))
        self.log = base / "rumqttd.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def url(self, root: str) -> str:
        return f"mqtt://{self.host}:{self.port}/{root}"

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "iotcore", "--config", str(self.config), "--log-level", "WARNING"],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
            )
        deadline = time.monotonic() + 15
        while True:
            assert self.proc.poll() is None, f"rumqttd exited: {self.log.read_text()[-2000:]}"
            with contextlib.suppress(OSError), socket.create_connection((self.host, self.port), 0.2):
                return
            assert time.monotonic() < deadline, f"rumqttd does not listen on {self.port}"
            time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


@contextlib.contextmanager
def running(name: str) -> Iterator[Broker]:
    """The broker `name` (one of `BROKERS`), running for the duration."""
    if name == "mosquitto":
        yield SharedMosquitto()
        return
    base = Path(tempfile.mkdtemp(prefix="chargeops-rumqttd-"))
    broker = PrivateRumqttd(base)
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()
        shutil.rmtree(base, ignore_errors=True)
