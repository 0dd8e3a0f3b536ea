"""Files the gateway reloads while it runs (`tls_reload_interval`): its TLS certificates (`tls.ReloadingTls`)
and the contract root store (`pki.ReloadingRoots`). Every interval the files are looked at (modification
time, size, inode; a directory's files as listed then); when one changed, `load` builds the new value in a
thread and it replaces the one in use. A load that fails logs one error per change (not per look) and the
value in use stays.
"""

from __future__ import annotations

import asyncio
import logging
import os
from abc import ABC, abstractmethod
from collections.abc import Iterable
from pathlib import Path
from typing import Generic, TypeVar

from telemetry.periodic import Background

log = logging.getLogger("chargeops.gateway")

Stamp = tuple[int, int, int] | None
Stamps = tuple[tuple[str, Stamp], ...]
T = TypeVar("T")


def stamp(path: Path) -> Stamp:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino)


class ReloadingFiles(Background, ABC, Generic[T]):
    """A value built from files (`load`), built again when they change; `current` is the newest that
    loaded. Subclasses say which files (`paths`), how to load them, and what to log."""

    what = "files"  # for the log

    def __init__(self) -> None:
        self._stamps = self._look()  # before loading: a change while it loads is seen at the next look
        self.current: T = self.load()
        self._failed: Stamps | None = None  # stamps of a load that failed
        self._interval = 0.0
        self.reloads = 0

    @abstractmethod
    def paths(self) -> Iterable[Path]:
        """The files to watch, looked up again at each look (a directory's files may come and go)."""

    @abstractmethod
    def load(self) -> T:
        """The value the files hold now; raises ValueError (or a subclass) when they do not load."""

    def loaded(self, value: T) -> None:
        """Called after a reload took `value` into use (for the log)."""

    def _look(self) -> Stamps:
        return tuple((str(p), stamp(p)) for p in self.paths())

    async def check(self) -> bool:
        """Reload if a file changed since the last look; True if the new value is now in use."""
        stamps = self._look()
        if stamps == self._stamps or stamps == self._failed:
            return False
        try:
            value = await asyncio.to_thread(self.load)
        except (OSError, ValueError) as exc:
            self._failed = stamps  # one line per change, not per look
            log.error("%s not reloaded, the ones in use stay: %s", self.what, exc)
            return False
        self.current, self._stamps, self._failed = value, stamps, None
        self.reloads += 1
        self.loaded(value)
        return True

    def start(self, interval: float = 0.0) -> None:
        """Look every `interval` seconds (0: never) until `stop`."""
        if interval > 0 and self._task is None:
            self._interval = interval
            self.name = f"reload {self.what}"
            super().start()

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            try:
                await self.check()
            except Exception:  # a watcher that dies would silently stop reloading
                log.exception("%s reload check failed", self.what)
