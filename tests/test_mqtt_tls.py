"""Issue 13: MQTT over TLS with a login, for every chargeops MQTT client, through one helper
(`chargeops/broker.py`).

The shared Mosquitto on 1883 is plain and anonymous, so these tests start a private one (their own process,
stopped by its PID) with two TLS listeners — one asking for a password, one also for a client certificate —
and a password file, on free ports; the CA and certificates are made with `openssl` in a temporary directory.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import logging
import os
import secrets
import shutil
import socket
import ssl
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiomqtt
import pytest
from pydantic import SecretStr

from chargeops.broker import BrokerConfigError, BrokerUnavailable, broker_address, redact
from chargeops.events import Event, Heartbeat
from chargeops.settings import Settings
from firmware_stubs.site_controller import SiteController
from ops.startup import explain
from telemetry.mqtt import BusTuning, MqttBus
from telemetry.mqtt.client import Broker
from telemetry.site_telemetry import SiteTelemetrySubscriber
from tests.waiting import until

ROOT = Path(__file__).resolve().parent.parent
USER = "chargeops"
PASSWORD = f"pw-{secrets.token_hex(8)}"  # unique: a leak into any log line or message is found by search

pytestmark = pytest.mark.timeout(120)


# -- certificates and a private broker -----------------------------------------------------------------


@dataclass(frozen=True)
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=30)


def make_pki(d: Path) -> Pki:
    """A CA, a server certificate for 127.0.0.1 / localhost and a client certificate (P-256: fast)."""
    key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    ca = ["-x509", "-days", "2", "-subj", "/CN=test-ca", "-addext", "basicConstraints=critical,CA:TRUE"]
    ca += ["-addext", "keyUsage=critical,keyCertSign", "-keyout", "ca.key", "-out", "ca.pem"]
    _openssl("req", *key, *ca, cwd=d)
    (d / "server.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    sign = ["-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-days", "2"]
    for name, extra in (("server", ["-extfile", "server.ext"]), ("client", [])):
        out = ["-keyout", f"{name}.key", "-out", f"{name}.csr"]
        _openssl("req", *key, *out, "-subj", f"/CN={name}", cwd=d)
        _openssl("x509", "-req", "-in", f"{name}.csr", *sign, *extra, "-out", f"{name}.pem", cwd=d)
    return Pki(d / "ca.pem", d / "server.pem", d / "server.key", d / "client.pem", d / "client.key")


def write_password_file(path: Path, user: str, password: str) -> None:
    """With mosquitto_passwd when installed, else the same format by hand (Mosquitto 2: PBKDF2-SHA512,
    101 rounds, `user:$7$101$<salt b64>$<hash b64>`)."""
    if shutil.which("mosquitto_passwd"):
        subprocess.run(["mosquitto_passwd", "-b", "-c", str(path), user, password], check=True, timeout=30)
        return
    salt = os.urandom(12)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, 101)
    path.write_text(f"{user}:$7$101${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}\n")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class TlsMosquitto:
    """Our own Mosquitto: `port` is TLS + password, `cert_port` TLS + password + client certificate."""

    def __init__(self, d: Path, pki: Pki) -> None:
        self.pki = pki
        self.port, self.cert_port = free_port(), free_port()
        write_password_file(d / "passwd", USER, PASSWORD)
        tls = f"cafile {pki.ca}\ncertfile {pki.server_cert}\nkeyfile {pki.server_key}\n"
        conf = d / "mosquitto.conf"
        conf.write_text(
            # started as root it would drop to the `mosquitto` user, who cannot read the pytest directories
            ("user root\n" if os.geteuid() == 0 else "")
            + f"allow_anonymous false\npassword_file {d / 'passwd'}\n"
            + "max_queued_messages 0\nmax_inflight_messages 0\nlog_dest stderr\nlog_type error\n"
            + f"listener {self.port} 127.0.0.1\n{tls}"
            + f"listener {self.cert_port} 127.0.0.1\n{tls}require_certificate true\n"
        )
        self.log = (d / "mosquitto.log").open("wb")
        self.proc = subprocess.Popen(
            ["mosquitto", "-c", str(conf)], stdin=subprocess.DEVNULL, stdout=self.log, stderr=self.log
        )
        deadline = time.monotonic() + 15
        for port in (self.port, self.cert_port):
            while True:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                    break
                except OSError:
                    assert self.proc.poll() is None, (d / "mosquitto.log").read_text()
                    assert time.monotonic() < deadline, f"mosquitto does not listen on {port}"
                    time.sleep(0.02)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()

    def url(self, *, port: int | None = None, login: bool = True, scheme: str = "mqtts") -> str:
        who = f"{USER}:{PASSWORD}@" if login else ""
        return f"{scheme}://{who}127.0.0.1:{port or self.port}/t-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory, pki: Pki) -> Iterator[TlsMosquitto]:
    b = TlsMosquitto(tmp_path_factory.mktemp("mosquitto"), pki)
    yield b
    b.stop()


class Collector:
    def __init__(self) -> None:
        self.events: list[Event] = []

    async def __call__(self, events: Sequence[Event]) -> None:
        self.events.extend(events)


def heartbeats(n: int) -> list[Event]:
    t0 = datetime(2025, 1, 1, tzinfo=UTC)
    return [Event(f"CP{i}", Heartbeat(), reported_at=t0 + timedelta(seconds=i)) for i in range(n)]


# -- the helper: URL + settings -> aiomqtt.Client arguments (no broker) -------------------------------


def test_a_broker_url_becomes_client_arguments(pki: Pki) -> None:
    plain = broker_address("mqtt://broker.example")
    assert plain.client_kwargs() == {
        "hostname": "broker.example",
        "port": 1883,
        "username": None,
        "password": None,
        "tls_context": None,
    }
    assert plain.root == "chargeops"

    tls = broker_address(f"mqtts://{USER}:p%40ss%2Fw@10.0.0.5/fleet-a", ca_file=pki.ca)
    kwargs = tls.client_kwargs()
    assert (kwargs["hostname"], kwargs["port"], tls.root) == ("10.0.0.5", 8883, "fleet-a")
    assert (kwargs["username"], kwargs["password"]) == (USER, "p@ss/w")  # percent-decoded
    context = kwargs["tls_context"]
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert [c["subject"] for c in context.get_ca_certs()] == [((("commonName", "test-ca"),),)]  # only ours
    assert "p@ss" not in repr(tls) and "p@ss" not in tls.url and tls.url.startswith("mqtts://chargeops@")

    # credentials and a client certificate from their own settings, the key apart from the certificate
    split = broker_address(
        "mqtts://127.0.0.1:9883",
        ca_file=pki.ca,
        cert_file=pki.client_cert,
        key_file=pki.client_key,
        username=USER,
        password="from-settings",
    )
    assert (split.port, split.username, split.password) == (9883, USER, "from-settings")
    same = broker_address(f"mqtt://{USER}:x@h", username=USER, password="x")  # given twice, alike: fine
    assert (same.username, same.password) == (USER, "x")


@pytest.mark.parametrize(
    ("url", "kw", "says"),
    [
        ("http://h:1883", {}, "scheme http:// is not supported: use mqtt://host:1883 or mqtts://host:8883"),
        ("h:1883", {}, "scheme h:// is not supported"),
        ("", {}, "has no scheme"),
        ("mqtt://h:port", {}, "cannot parse the MQTT URL"),
        ("mqtts://h", {"ca_file": "/no/such/ca.pem"}, "CHARGEOPS_MQTT_CA_FILE: no such file /no/such/ca.pem"),
        ("mqtt://h", {"ca_file": "CA"}, "is plain MQTT: use mqtts://host:8883"),
        ("mqtts://h", {"key_file": "KEY"}, "CHARGEOPS_MQTT_KEY_FILE is set without --mqtt-cert-file"),
        ("mqtts://h", {"ca_file": "PASSWD"}, "cannot load"),
        ("mqtt://:secret@h", {}, "an MQTT password needs a user name"),
        ("mqtt://u:secret@h", {"password": "other"}, "password is given twice"),
        ("mqtt://u@h", {"username": "v"}, "user name is given twice"),
    ],
)
def test_settings_that_cannot_work_are_refused_with_the_fix(
    url: str, kw: dict[str, str], says: str, pki: Pki, tmp_path: Path
) -> None:
    files = {"CA": str(pki.ca), "KEY": str(pki.client_key), "PASSWD": str(tmp_path / "junk.pem")}
    (tmp_path / "junk.pem").write_text("not a certificate\n")
    with pytest.raises(BrokerConfigError) as caught:
        broker_address(url, **{k: files.get(v, v) for k, v in kw.items()})
    assert says in str(caught.value)
    assert "secret" not in str(caught.value)
    assert explain(caught.value, None) == str(caught.value)  # start-up prints it as its one line


def test_passwords_are_redacted() -> None:
    assert redact("mqtts://u:s3cr%2Ft@h:8883/root") == "mqtts://u:***@h:8883/root"
    assert redact("mqtt://u:pa/ss@h/r") == "mqtt://u:***@h/r"  # unencoded / and @ are hidden too
    assert redact("mqtt://u:p@ss@h") == "mqtt://u:***@h"
    for untouched in ("mqtt://h:1883/root", "mqtt://u@h", None):
        assert redact(untouched) == (untouched or "")
    settings = Settings(mqtt_url=f"mqtt://{USER}:{PASSWORD}@127.0.0.1:1/x")
    line = explain(aiomqtt.MqttError("boom"), settings)
    assert line is not None and PASSWORD not in line and f"{USER}:***@127.0.0.1:1" in line


async def test_every_client_builds_its_connection_from_the_settings(pki: Pki) -> None:
    """The bus, site telemetry and the simulated site controller get the same TLS and login."""
    settings = Settings(
        mqtt_url="mqtts://127.0.0.1:8883/site-root",
        mqtt_username=USER,
        mqtt_password=SecretStr(PASSWORD),
        mqtt_ca_file=pki.ca,
    )
    broker = Broker.from_settings(settings)
    client = broker.client("x", clean=True, session_expiry=0, timeout=1)
    assert client._client._ssl_context is broker.address.tls  # the context went to paho unchanged
    assert client._client._username == USER.encode() and client._client._password == PASSWORD.encode()
    sub = SiteTelemetrySubscriber(None, settings)  # type: ignore[arg-type]  # never stores here
    assert sub.root == "site-root" and sub._consumer._broker == broker
    site = SiteController(
        "s1", pv_peak_w=1, broker=broker_address(f"mqtts://{USER}:{PASSWORD}@h/r", ca_file=pki.ca)
    )
    assert (
        site.broker is not None and site.broker.tls is not None and site.topic() == "r/v1/sites/s1/telemetry"
    )


# -- against the TLS broker ----------------------------------------------------------------------------


@pytest.mark.parametrize("listener", ["password", "client certificate"])
async def test_the_bus_carries_events_over_mqtts(
    listener: str, broker: TlsMosquitto, pki: Pki, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """(a) Publish and consume (the durable ingest subscription) over mqtts:// with the CA: the login in the
    URL; on the listener that requires a client certificate, the login and the certificate in settings.
    No log line, down to paho's debug output, carries the password."""
    caplog.set_level(logging.DEBUG)
    if listener == "password":
        settings = Settings(mqtt_url=broker.url(), mqtt_ca_file=pki.ca, spool_dir=tmp_path)
    else:
        settings = Settings(
            mqtt_url=broker.url(port=broker.cert_port, login=False),
            mqtt_username=USER,
            mqtt_password=SecretStr(PASSWORD),
            mqtt_ca_file=pki.ca,
            mqtt_cert_file=pki.client_cert,
            mqtt_key_file=pki.client_key,
            spool_dir=tmp_path,
        )
    bus = MqttBus(settings.model_copy(update={"gateway_id": "gw-tls", "node_id": "tls"}))
    stored = Collector()
    try:
        await bus.start()
        bus.subscribe(stored, durable=True)
        await bus.ready(10)
        sent = heartbeats(30)
        await bus.publish(sent)
        await until(lambda: len(stored.events) >= len(sent), what="events back over TLS")
        assert sorted(e.event_id for e in stored.events) == sorted(e.event_id for e in sent)
    finally:
        await bus.close()
    assert PASSWORD not in caplog.text


async def test_a_wrong_password_is_refused_at_once_and_clearly(
    broker: TlsMosquitto, pki: Pki, caplog: pytest.LogCaptureFixture
) -> None:
    """(b) A refused login does not get better by waiting: `start` fails on it, well before its timeout."""
    caplog.set_level(logging.DEBUG)
    wrong = f"wrong-{secrets.token_hex(4)}"
    url = broker.url().replace(PASSWORD, wrong)
    bus = MqttBus(Settings(mqtt_url=url, mqtt_ca_file=pki.ca), BusTuning(connect_timeout=30))
    t0 = time.monotonic()
    with pytest.raises(BrokerUnavailable) as caught:
        await bus.start()
    assert time.monotonic() - t0 < 10
    message = str(caught.value)
    assert "the broker refused the login" in message and "check the user name and password" in message
    assert f"mqtts://{USER}@127.0.0.1:{broker.port}/" in message
    assert wrong not in message and wrong not in caplog.text


async def test_plain_mqtt_to_the_tls_port_fails_clearly(broker: TlsMosquitto, pki: Pki) -> None:
    """(c) Plain MQTT on a TLS listener: the broker drops the connection; the error says to use mqtts://
    (without our fix aiomqtt waited out its whole timeout and said only "Operation timed out")."""
    bus = MqttBus(Settings(mqtt_url=broker.url(scheme="mqtt")), BusTuning(connect_timeout=2))
    with pytest.raises(BrokerUnavailable, match=r"closed the connection before accepting it.*use mqtts://"):
        await bus.start()


async def test_a_certificate_the_ca_did_not_sign_is_refused_at_once(broker: TlsMosquitto) -> None:
    """Without our CA the system's CAs do not trust the test broker: said at once, with the setting."""
    bus = MqttBus(Settings(mqtt_url=broker.url()), BusTuning(connect_timeout=30))
    t0 = time.monotonic()
    with pytest.raises(BrokerUnavailable, match=r"TLS certificate is not trusted.*CHARGEOPS_MQTT_CA_FILE"):
        await bus.start()
    assert time.monotonic() - t0 < 10


async def test_site_telemetry_and_the_site_controller_connect_over_mqtts(
    broker: TlsMosquitto, pki: Pki
) -> None:
    """(d) The simulated site controller publishes over mqtts:// (client certificate listener) and site
    telemetry's durable subscription comes up on the same broker, both through the helper."""
    url = broker.url(port=broker.cert_port)
    files = {"ca_file": pki.ca, "cert_file": pki.client_cert, "key_file": pki.client_key}
    address = broker_address(url, **files)
    settings = Settings(mqtt_url=url, **{f"mqtt_{k}": v for k, v in files.items()}, node_id="tls-site")
    subscriber = SiteTelemetrySubscriber(None, settings)  # type: ignore[arg-type]  # nothing is stored
    subscriber.start()
    try:
        await asyncio.wait_for(subscriber.subscribed.wait(), 10)
    finally:
        await subscriber.stop()

    site = SiteController(
        "solar-tls",
        pv_peak_w=10_000,
        interval=0.05,
        broker=broker_address(url, ca_file=pki.ca, cert_file=pki.client_cert, key_file=pki.client_key),
    )
    async with aiomqtt.Client(**address.client_kwargs(), identifier="tls-watcher") as watcher:
        await watcher.subscribe(site.topic(), qos=1)
        await site.run(duration=0.5)
        message = await asyncio.wait_for(anext(aiter(watcher.messages)), 5)
    assert site.reports > 0
    assert isinstance(message.payload, bytes) and "pv_w" in json.loads(message.payload)
    # the session site telemetry left behind (persistent) is cleared by the broker's stop


# -- `chargeops serve`: one line, exit 2, no traceback, no password ------------------------------------


def serve(env: dict[str, str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "ops.cli", "serve", "--http-port", "0", "--ocpp-port", "0"]
    cmd += ["--database-url", f"sqlite+aiosqlite:///{tmp_path}/x.db"]
    clean = {k: v for k, v in os.environ.items() if not k.startswith("CHARGEOPS_MQTT_")}
    return subprocess.run(cmd, cwd=ROOT, env={**clean, **env}, capture_output=True, text=True, timeout=90)


def one_line(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr, result.stderr[-2000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, result.stderr[-2000:]
    assert PASSWORD not in result.stderr
    return errors[0]


@pytest.mark.parametrize(
    ("env", "says"),
    [
        (
            {
                "CHARGEOPS_MQTT_URL": f"mqtts://{USER}:{PASSWORD}@127.0.0.1/x",
                "CHARGEOPS_MQTT_CA_FILE": "/no/ca.pem",
            },
            "--mqtt-ca-file / CHARGEOPS_MQTT_CA_FILE: no such file /no/ca.pem",
        ),
        ({"CHARGEOPS_MQTT_URL": f"amqp://{USER}:{PASSWORD}@h"}, "use mqtt://host:1883 or mqtts://host:8883"),
        (
            {"CHARGEOPS_MQTT_CA_FILE": "/etc/hosts"},
            "CHARGEOPS_MQTT_CA_FILE is set but CHARGEOPS_MQTT_URL is not",
        ),
    ],
)
def test_bad_broker_settings_stop_serve_with_one_line(env: dict[str, str], says: str, tmp_path: Path) -> None:
    assert says in one_line(serve(env, tmp_path))


def test_a_refused_login_stops_serve_with_one_line(broker: TlsMosquitto, pki: Pki, tmp_path: Path) -> None:
    url = broker.url().replace(PASSWORD, "wrong")
    env = {"CHARGEOPS_MQTT_URL": url, "CHARGEOPS_MQTT_CA_FILE": str(pki.ca), "CHARGEOPS_ROLES": "gateway"}
    line = one_line(serve(env, tmp_path))
    assert "cannot connect to the MQTT broker at mqtts://chargeops@127.0.0.1" in line
    assert "refused the login" in line and "wrong" not in line
