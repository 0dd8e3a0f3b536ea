"""The tree stays ruff- and mypy-clean: checked with every test run, not by memory."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ["chargeops", "ocpp_gateway", "telemetry", "ops", "firmware_stubs"]


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=600
    )


def test_ruff_is_clean() -> None:
    result = run("ruff", "check", *PACKAGES, "tests", "bench")
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_is_clean() -> None:
    result = run("mypy", *PACKAGES, "bench")
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_dependency_is_pinned_by_the_constraints() -> None:
    """Builds are reproducible: every package pyproject declares (runtime and dev) has an exact version in
    constraints.txt, which the Dockerfile, .ci/run and the README's commands install with, and that version
    satisfies the declared range."""
    import re
    import tomllib

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = [Requirement(r) for r in project["dependencies"] + project["optional-dependencies"]["dev"]]
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if match := re.fullmatch(r"([A-Za-z0-9_.\-\[\]]+)==(\S+)", line.strip()):
            pins[canonicalize_name(match[1])] = match[2]
    for req in declared:
        if req.marker is not None and not req.marker.evaluate():
            continue
        version = pins.get(canonicalize_name(req.name))
        assert version is not None, f"{req.name} is not pinned in constraints.txt"
        assert req.specifier.contains(version, prereleases=True), f"{req.name}=={version} breaks {req}"
    for path in ("docker/Dockerfile", ".ci/run", "README.md"):
        assert "-c constraints.txt" in (ROOT / path).read_text(), f"{path} does not use the constraints"
