"""`chargeops serve` in a subprocess, as an operator starts it, for the tests that need separate processes."""

from __future__ import annotations

import asyncio
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent


class Server:
    """`chargeops serve --roles …` in a subprocess; its log is kept and shown when a test fails."""

    def __init__(self, name: str, proc: asyncio.subprocess.Process) -> None:
        self.name = name
        self.proc = proc
        self.http_port = 0  # known once the process logged it (see `port_after`)
        self.lines: list[str] = []
        self._drain = asyncio.ensure_future(self._read())

    @classmethod
    async def start(cls, name: str, roles: str, env: dict[str, str], cwd: Path, **flags: Any) -> Server:
        # Port 0 everywhere: a port picked free here could be taken before the child binds it.
        args = ["--roles", roles, "--http-port", "0"]
        for flag, value in flags.items():
            args += [f"--{flag.replace('_', '-')}"] + ([] if value is True else [str(value)])
        proc = await asyncio.create_subprocess_exec(
            *[sys.executable, "-m", "ops.cli", "serve", *args],
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        server = cls(name, proc)
        server.http_port = await server.port_after("HTTP API on")
        return server

    async def _read(self) -> None:
        assert self.proc.stderr is not None
        async for line in self.proc.stderr:
            self.lines.append(line.decode(errors="replace").rstrip())

    def saw(self, text: str) -> bool:
        return any(text in line for line in self.lines)

    async def wait_for_line(self, text: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while not self.saw(text):
            assert self.proc.returncode is None, f"{self.name} exited:\n" + "\n".join(self.lines)
            assert time.monotonic() < deadline, f"no {text!r} from {self.name}:\n" + "\n".join(self.lines)
            await asyncio.sleep(0.05)

    async def port_after(self, text: str) -> int:
        """The port in the first log line containing `text` (`…://host:PORT…`)."""
        await self.wait_for_line(text)
        line = next(line for line in self.lines if text in line)
        found = re.search(r"://[^:/\s]+:(\d+)", line.split(text, 1)[1])
        assert found, line
        return int(found.group(1))

    async def metric(self, name: str) -> float:
        """Sum of a counter's samples in this process's /metrics."""
        async with httpx.AsyncClient() as http:
            text = (await http.get(f"http://127.0.0.1:{self.http_port}/metrics")).text
        return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name))

    async def stop(self) -> None:
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.proc.wait(), 15)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        await self._drain
