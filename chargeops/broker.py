"""Where the MQTT broker is and how to reach it: the one place a broker URL plus the TLS and login settings
become `aiomqtt.Client` arguments (issue 13).

The bus, site telemetry and the simulated site controller all connect through `broker_address`, so
`mqtts://`, the CA, the client certificate and the credentials mean the same for every client, and a
setting that cannot work is refused once, at start-up, with the fix. Standard library only: the simulator
imports it without the server's dependencies.
"""

from __future__ import annotations

import os
import re
import ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import quote, unquote, urlsplit

PORTS = {"mqtt": 1883, "mqtts": 8883}  # the scheme's default port
URL_FLAG = "--mqtt-url / CHARGEOPS_MQTT_URL"
USER_FLAG = "--mqtt-username / CHARGEOPS_MQTT_USERNAME"
PASSWORD_ENV = "CHARGEOPS_MQTT_PASSWORD"
CA_FLAG = "--mqtt-ca-file / CHARGEOPS_MQTT_CA_FILE"
CERT_FLAG = "--mqtt-cert-file / CHARGEOPS_MQTT_CERT_FILE"
KEY_FLAG = "--mqtt-key-file / CHARGEOPS_MQTT_KEY_FILE"

StrPath = str | os.PathLike[str]
_PASSWORD = re.compile(r"^([A-Za-z][\w+.-]*://[^:/@]*):.*@")


class BrokerConfigError(ValueError):
    """A broker setting that cannot work; the message names the setting and the fix (start-up exits 2)."""


class BrokerUnavailable(ConnectionError):
    """No connection to the broker at start-up; the message says why (never with the password)."""


@dataclass(frozen=True, slots=True)
class BrokerAddress:
    """A broker and how to log in to it; `client_kwargs()` are the `aiomqtt.Client` arguments for it."""

    host: str
    port: int
    root: str  # topic root: the URL's path (default `chargeops`)
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    tls: ssl.SSLContext | None = field(default=None, repr=False, compare=False)

    @property
    def url(self) -> str:
        """The address for logs and error messages: the user name, never the password."""
        user = f"{quote(self.username, safe='')}@" if self.username else ""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'mqtts' if self.tls else 'mqtt'}://{user}{host}:{self.port}/{self.root}"

    def client_kwargs(self) -> dict[str, Any]:
        """Where and how to connect, through aiomqtt's public API (`tls_context`)."""
        return {
            "hostname": self.host,
            "port": self.port,
            "username": self.username,
            "password": self.password,
            "tls_context": self.tls,
        }


def broker_address(
    url: str | None,
    *,
    ca_file: StrPath | None = None,
    cert_file: StrPath | None = None,
    key_file: StrPath | None = None,
    username: str | None = None,
    password: str | None = None,
) -> BrokerAddress:
    """`mqtt://[user:password@]host[:1883][/root]` or `mqtts://…[:8883]…` plus the TLS files and credentials
    given apart from the URL; raises BrokerConfigError, naming the setting to fix, for anything that cannot
    work (an unknown scheme, a missing file, TLS files with a plain URL, a password without a user)."""
    try:
        parts = urlsplit(url or "")
        port = parts.port
    except ValueError as exc:
        _refuse(
            f"cannot parse the MQTT URL {redact(url)} ({exc}): e.g. mqtts://host:8883/chargeops ({URL_FLAG})"
        )
    if parts.scheme not in PORTS:
        what = f"scheme {parts.scheme}:// is not supported" if parts.scheme else "has no scheme"
        _refuse(f"the MQTT URL {what}: use mqtt://host:1883 or mqtts://host:8883 (TLS) in {URL_FLAG}")
    user = _once("user name", unquote(parts.username) if parts.username else None, username, USER_FLAG)
    secret = _once("password", unquote(parts.password) if parts.password else None, password, PASSWORD_ENV)
    if secret and not user:
        _refuse(f"an MQTT password needs a user name: mqtt://USER:PASSWORD@host or {USER_FLAG}")
    tls = None
    if parts.scheme == "mqtts":
        tls = tls_context(ca_file, cert_file, key_file)
    else:
        for path, flag in ((ca_file, CA_FLAG), (cert_file, CERT_FLAG), (key_file, KEY_FLAG)):
            if path is not None:
                _refuse(f"{flag} is set but {redact(url)} is plain MQTT: use mqtts://host:8883 for TLS")
    return BrokerAddress(
        parts.hostname or "127.0.0.1",
        port or PORTS[parts.scheme],
        parts.path.strip("/") or "chargeops",
        user,
        secret,
        tls,
    )


def tls_context(
    ca_file: StrPath | None, cert_file: StrPath | None = None, key_file: StrPath | None = None
) -> ssl.SSLContext:
    """Verifies the broker's certificate and host name against `ca_file` (only it; without one, the
    system's CAs) and presents the client certificate when one is given (key in `key_file` or in it)."""
    for path, flag, what in (
        (ca_file, CA_FLAG, "the CA bundle (PEM) that signed the broker's certificate"),
        (cert_file, CERT_FLAG, "the client certificate (PEM)"),
        (key_file, KEY_FLAG, "the client certificate's private key (PEM)"),
    ):
        if path is not None and not Path(path).is_file():
            _refuse(f"{flag}: no such file {path}: give {what}")
    if key_file is not None and cert_file is None:
        _refuse(f"{KEY_FLAG} is set without {CERT_FLAG}: give the client certificate too")
    try:
        context = ssl.create_default_context(cafile=os.fspath(ca_file) if ca_file is not None else None)
    except (ssl.SSLError, OSError) as exc:
        _refuse(f"{CA_FLAG}: cannot load {ca_file} as PEM certificates ({exc})")
    if cert_file is not None:
        try:
            context.load_cert_chain(cert_file, key_file, password=_no_passphrase)
        except (ssl.SSLError, OSError) as exc:
            _refuse(f"cannot load the MQTT client certificate {cert_file} with its key ({exc}): {CERT_FLAG}")
    return context


def redact(url: str | None) -> str:
    """The URL with its password replaced by `***`, for logs and error messages. Greedy up to the last `@`:
    a password with an unencoded `/` or `@` is hidden too (a topic root with `@` may lose a little more)."""
    return _PASSWORD.sub(r"\1:***@", url or "")


def _once(what: str, in_url: str | None, given: str | None, setting: str) -> str | None:
    """A credential from the URL or its own setting; both, differing, is a mistake to fix, not to guess."""
    if in_url and given and in_url != given:
        _refuse(f"the MQTT {what} is given twice, in the URL and in {setting}, differently: keep one")
    return in_url or given or None


def _no_passphrase() -> str:
    """OpenSSL would otherwise prompt on the terminal for an encrypted key, hanging a service."""
    raise BrokerConfigError(
        f"{KEY_FLAG}: the key is encrypted: give it unencrypted (and readable only to us)"
    )


def _refuse(message: str) -> NoReturn:
    raise BrokerConfigError(message) from None
