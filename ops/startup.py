"""Start-up problems as one line that says the fix, instead of a traceback (issue 13).

`probe_ports` finds a listener's port taken before any role starts (a second `serve` on the same database
must not begin writing into it); `explain` turns the errors a wrong setting or a missing service raises into
that line, or None for anything it does not recognise (which keeps its traceback).
"""

from __future__ import annotations

import errno
import logging
import socket
import traceback
from collections.abc import Iterator
from typing import NoReturn

import typer
from pydantic import ValidationError

from chargeops.broker import BrokerConfigError, BrokerUnavailable, redact
from chargeops.settings import Settings


class StartupError(Exception):
    """A problem the operator fixes in the configuration or environment; the message says how."""


def probe_ports(settings: Settings, roles: set[str]) -> None:
    """Raise StartupError if a port this process will listen on is taken (bind test, then released)."""
    wanted = [(settings.http_host, settings.http_port, "--http-port / CHARGEOPS_HTTP_PORT")]
    if "gateway" in roles:
        wanted.append((settings.ocpp_host, settings.ocpp_port, "--ocpp-port / CHARGEOPS_OCPP_PORT"))
    if settings.metrics_port is not None:
        wanted.append((settings.http_host, settings.metrics_port, "--metrics-port / CHARGEOPS_METRICS_PORT"))
    for host, port, flag in wanted:
        if port == 0:
            continue
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        except socket.gaierror as exc:
            raise StartupError(f"cannot listen on {host}: {exc.strerror} (check the host settings)") from None
        for family, kind, proto, _, address in infos:
            with socket.socket(family, kind, proto) as probe:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    probe.bind(address)
                except OSError as exc:
                    if exc.errno == errno.EADDRINUSE:
                        why = f"port {port} on {host} is in use (another chargeops?)"
                        raise StartupError(f"{why}: choose another with {flag}") from None
                    raise StartupError(f"cannot listen on {host}:{port}: {exc.strerror}") from None


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """The exception and what caused it (SQLAlchemy wraps the driver's error in `orig`)."""
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        yield e
        todo += [e.__cause__, e.__context__, getattr(e, "orig", None)]
        todo += list(getattr(e, "exceptions", ()))


def explain(exc: BaseException, settings: Settings | None) -> str | None:
    """One line for a start-up error the operator can fix, else None."""
    url = settings.database_url if settings is not None else ""
    flag = "--database-url / CHARGEOPS_DATABASE_URL"
    for e in _chain(exc):
        name = type(e).__name__
        text = str(e)
        if isinstance(e, StartupError | BrokerConfigError | BrokerUnavailable):
            return str(e)
        if isinstance(e, ValidationError):
            return "; ".join(
                f"{'.'.join(str(p) for p in err['loc']) or 'settings'}: {err['msg']}" for err in e.errors()
            )
        if name == "InvalidCatalogNameError":  # asyncpg: database "x" does not exist
            db = url.rsplit("/", 1)[-1].split("?", 1)[0]
            return f"{text}: create it (createdb -h HOST -U USER {db}) or point {flag} at an existing one"
        if name == "InvalidAuthorizationSpecificationError":  # role does not exist / not permitted
            return f"the database refused the login ({text}): fix the user in {flag}"
        if name == "InvalidPasswordError":
            return f"the database refused the password ({text}): fix {flag}"
        if name == "NoSuchModuleError" and "dialects" in text:
            scheme = url.split(":", 1)[0]
            fix = "postgresql+asyncpg://" if scheme.startswith("postgres") else "sqlite+aiosqlite:///"
            return f"database URL scheme {scheme!r} is not supported: use {fix}… ({flag})"
        if name == "ArgumentError" and "URL" in text:
            return f"cannot parse the database URL ({text}): e.g. postgresql+asyncpg://user@host/chargeops"
        sync_driver = isinstance(e, ModuleNotFoundError) and (e.name or "").startswith(("psycopg", "pymysql"))
        if sync_driver or (name == "InvalidRequestError" and "async" in text and "driver" in text):
            drivers = "postgresql+asyncpg:// or sqlite+aiosqlite:///"
            return f"the database URL needs an async driver: {drivers} ({flag})"
        if name == "MqttError" or name == "MqttCodeError":
            broker = redact(settings.mqtt_url) if settings else "?"
            return f"cannot reach the MQTT broker at {broker} ({text}): check --mqtt-url / CHARGEOPS_MQTT_URL"
        if isinstance(e, ConnectionRefusedError | socket.gaierror) or (
            isinstance(e, OSError) and e.errno in (errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.ETIMEDOUT)
        ):
            where = url.split("@", 1)[-1].split("/", 1)[0] if "@" in url else url
            return f"cannot reach the database at {where} ({e}): is it running? ({flag})"
    return None


def fail(exc: Exception, settings: Settings | None) -> NoReturn:
    """Exit 2 with `explain`'s line (the traceback only at DEBUG); anything it does not recognise is a bug and
    is raised again with its traceback."""
    line = explain(exc, settings)
    if line is None:
        raise exc
    if logging.getLogger().isEnabledFor(logging.DEBUG):
        traceback.print_exception(exc)
    typer.echo(f"error: {line}", err=True)
    raise typer.Exit(2) from None
