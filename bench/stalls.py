"""Where a benchmark's slow round trips come from: the load generator, the server, or the machine.

A round trip measured by the load generator is slow when the server was slow, when the load generator itself
did not run (its own garbage collections, its loop busy), or when neither ran because the machine did not run
them. `MachineProbe` tells the last apart: a separate tiny process that only sleeps a millisecond at a time
and notes every wake-up that came late, and how much CPU time the hypervisor took from this virtual machine
(`steal` in /proc/stat) in each 100 ms. Its clock is the monotonic clock every process shares, so its stalls
line up with the benchmark's slow windows.
"""

from __future__ import annotations

import contextlib
import gc
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

# Runs in its own process (`python -c`): stdlib only, no imports from the project.
_PROBE = r"""
import json, os, sys, time
seconds, late_bound = float(sys.argv[1]), float(sys.argv[2])
hz = os.sysconf("SC_CLK_TCK")
def steal():
    with open("/proc/stat") as f:
        fields = f.readline().split()
    return int(fields[8]) / hz if len(fields) > 8 else 0.0
late, stolen = [], []
start = time.monotonic()
end = start + seconds
next_sample, steal0 = start + 0.1, steal()
while True:
    t0 = time.monotonic()
    if t0 >= end:
        break
    time.sleep(0.001)
    t1 = time.monotonic()
    if t1 - t0 - 0.001 > late_bound:
        late.append([round(t0, 4), round(t1 - t0 - 0.001, 4)])
    if t1 >= next_sample:
        s = steal()
        if s > steal0:
            stolen.append([round(next_sample - 0.1, 4), round(s - steal0, 3)])
        steal0, next_sample = s, t1 + 0.1
print(json.dumps({"late": late, "steal": stolen}))
"""


class MachineProbe:
    """A sleeper in its own process for `seconds`; `result()` lists its late wake-ups and stolen time."""

    def __init__(self, seconds: float, late_bound: float = 0.02):
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _PROBE, str(seconds), str(late_bound)],
            stdout=subprocess.PIPE,
        )

    def result(self, since: float) -> dict[str, Any]:
        """The probe's findings, times in seconds since `since` (a `time.monotonic()` reading)."""
        out, _ = self.proc.communicate(timeout=60)
        found = json.loads(out)
        return {
            "wakeups_late_over_20ms": [[round(t - since, 2), round(d * 1000)] for t, d in found["late"]],
            "steal_ms_per_100ms": [[round(t - since, 1), round(s * 1000)] for t, s in found["steal"]],
        }


@contextlib.contextmanager
def own_pauses() -> Iterator[list[float]]:
    """The durations of this process's garbage collections while the block runs — none: the load generator's
    collector is off while it measures. Holding 10,000 connections and creating a task per call, its own
    collections (50-250 ms, one every few seconds) stalled its sending and reading, and each stall showed up
    as the server's round trips (2 per 10 s phase set the p99 at 2,500 calls/s). Ten seconds of garbage
    is a few MiB; it is collected after the phase."""
    pauses: list[float] = []
    started: list[float] = []

    def observe(stage: str, info: dict[str, Any]) -> None:
        if stage == "start":
            started.append(time.perf_counter())
        elif started:
            pauses.append(time.perf_counter() - started.pop())

    gc.collect()
    gc.freeze()
    gc.disable()
    gc.callbacks.append(observe)
    try:
        yield pauses
    finally:
        gc.callbacks.remove(observe)
        gc.enable()
        gc.unfreeze()
