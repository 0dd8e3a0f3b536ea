"""What every `chargeops` command module declares options with, and how a command turns them into settings.

typer reads no environment variable: a flag's default is None (not given), and `given` passes the flags that
were given to a `chargeops.settings` class, which alone reads `CHARGEOPS_*` (flag > environment > default).
`--help` still names each flag's environment twin.

Apart from `ops.cli` so a command module (`ops.cli_fleet`) needs nothing of it: `python -m ops.cli` runs that
module as `__main__`, and importing it back would build a second app.
"""

from __future__ import annotations

from enum import Enum, StrEnum
from typing import Annotated, Any, TypeVar

import typer
from pydantic_settings import BaseSettings

from chargeops.logs import setup as setup_logging
from chargeops.settings import LogSettings, Settings

S = TypeVar("S", bound=BaseSettings)


def EnvOpt(env: str, help: str, **kw: Any) -> Any:
    """A flag whose environment twin is `env` (read by the settings class, not by typer)."""
    return typer.Option(help=f"{help} (env: {env})", show_default=False, **kw)


def env_name(field: str, prefix: str = "CHARGEOPS_") -> str:
    return f"{prefix}{field.upper()}"


def Opt(field: str, help: str, **kw: Any) -> Any:
    """A flag for the `Settings` field `field`, twin of `CHARGEOPS_<FIELD>`."""
    return EnvOpt(env_name(field), help, **kw)


DatabaseUrl = Annotated[
    str | None, Opt("database_url", "SQLAlchemy async URL (default: SQLite ./chargeops.db)")
]
LogLevel = Annotated[str | None, Opt("log_level", "DEBUG, INFO, WARNING, ERROR")]


class Format(StrEnum):
    text = "text"
    json = "json"


LogFormat = Annotated[Format | None, Opt("log_format", "text or json (default text)")]


def given(cls: type[S], **flags: Any) -> S:
    """`cls` from the environment, overridden by the flags that were given (None: not on the command line)."""
    return cls(**{k: v.value if isinstance(v, Enum) else v for k, v in flags.items() if v is not None})


def given_settings(**flags: Any) -> Settings:
    """Settings from the environment, overridden by the flags that were given."""
    return given(Settings, **flags)


def start_logging(log_level: str | None, log_format: str | None = None, default: str = "INFO") -> LogSettings:
    """Logging as the flags or `CHARGEOPS_LOG_LEVEL` / `_LOG_FORMAT` say (else `default`), set up before
    anything else can fail. A bad value there is the caller's one-line error: it falls back to `default`."""
    setup_logging(default)
    chosen = given(LogSettings, log_level=log_level, log_format=log_format)
    setup_logging(chosen.level_or(default), chosen.log_format)
    return chosen
