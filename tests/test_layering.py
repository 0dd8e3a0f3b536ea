"""The import rules of SPEC §2, checked on the source (every import statement, also inside functions and
`TYPE_CHECKING` blocks): the kernel `chargeops` imports none of the other parts; `firmware_stubs` no server
code; `ocpp_gateway` not `ops`; ops reaches the gateway only through its composition root; and the shared
event and command types live in the kernel alone."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PARTS = ("chargeops", "telemetry", "ocpp_gateway", "ops", "firmware_stubs")
# part -> the project parts it may import (itself included)
ALLOWED = {
    "chargeops": {"chargeops"},
    "telemetry": {"chargeops", "telemetry"},
    "ocpp_gateway": {"chargeops", "telemetry", "ocpp_gateway"},
    "ops": {"chargeops", "telemetry", "ocpp_gateway", "ops", "firmware_stubs"},
    "firmware_stubs": {"firmware_stubs"},
}
COMPOSITION_ROOT = Path("ops/runtime.py")


def sources(part: str) -> Iterator[Path]:
    yield from sorted((ROOT / part).rglob("*.py"))


def imported_parts(path: Path) -> Iterator[tuple[int, str]]:
    """(line, project part) of every absolute import in the file."""
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        for name in names:
            top = name.split(".", 1)[0]
            if top in PARTS:
                yield node.lineno, top


@pytest.mark.parametrize("part", PARTS)
def test_import_direction(part: str) -> None:
    wrong = [
        f"{path.relative_to(ROOT)}:{line} imports {other}"
        for path in sources(part)
        for line, other in imported_parts(path)
        if other not in ALLOWED[part]
    ]
    assert not wrong, "\n".join(wrong)


def test_ops_imports_the_gateway_only_in_the_composition_root() -> None:
    wrong = [
        f"{path.relative_to(ROOT)}:{line}"
        for path in sources("ops")
        for line, other in imported_parts(path)
        if other == "ocpp_gateway" and path.relative_to(ROOT) != COMPOSITION_ROOT
    ]
    assert not wrong, "ops modules importing ocpp_gateway besides the composition root:\n" + "\n".join(wrong)
    assert any(other == "ocpp_gateway" for _, other in imported_parts(ROOT / COMPOSITION_ROOT))


def test_shared_types_live_in_the_kernel() -> None:
    """Event bodies are defined in `chargeops/events.py` and the command reply in `chargeops/commands.py`."""
    homes = {"Body": Path("chargeops/events.py"), "CommandReply": Path("chargeops/commands.py")}
    wrong = []
    for part in PARTS:
        for path in sources(part):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if not isinstance(node, ast.ClassDef):
                    continue
                bases = {b.id for b in node.bases if isinstance(b, ast.Name)}
                for name, home in homes.items():
                    if (node.name == name or name in bases) and path.relative_to(ROOT) != home:
                        wrong.append(f"{path.relative_to(ROOT)}:{node.lineno} class {node.name}")
    assert not wrong, "\n".join(wrong)
