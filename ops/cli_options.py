"""What every `chargeops` command module declares options with: each flag has a CHARGEOPS_* environment twin.

Apart from `ops.cli` so a command module (`ops.cli_fleet`) needs nothing of it: `python -m ops.cli` runs that
module as `__main__`, and importing it back would build a second app.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from chargeops.settings import Settings


def _env(name: str) -> str:
    return f"CHARGEOPS_{name.upper()}"


def Opt(name: str, help: str, **kw: Any) -> Any:
    return typer.Option(help=help, envvar=_env(name), show_envvar=True, **kw)


DatabaseUrl = Annotated[
    str | None, Opt("database_url", "SQLAlchemy async URL (default: SQLite ./chargeops.db)")
]
LogLevel = Annotated[str, Opt("log_level", "DEBUG, INFO, WARNING, ERROR")]


def given_settings(**given: Any) -> Settings:
    """Settings from the environment, overridden by the flags that were given."""
    return Settings(**{k: v for k, v in given.items() if v is not None})
