"""The layers of the code, from the floor up: nothing imports from a layer above its own (issue #12).

    floor     meetbridge.config, meetbridge.logs       (configuration, logging)
    schemas   schemas.*                                (wire formats and the events)
    service   workers.*, webhooks.*                    (the sync, the state layer, the clients; the web app)
    roof      meetbridge.cli, .connect, .doctor, .dev  (commands and the dev runner)
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FLOOR = ("meetbridge.config", "meetbridge.logs")
ROOF = ("meetbridge.cli", "meetbridge.connect", "meetbridge.doctor", "meetbridge.dev")


def layer(module: str) -> int:
    if module.startswith(FLOOR):
        return 0
    if module.startswith("schemas"):
        return 1
    if module.startswith(("workers", "webhooks")):
        return 2
    if module.startswith(ROOF):
        return 3
    return -1  # not ours


def imports(path: Path) -> list[tuple[int, str]]:
    """Every import of the project's own modules, anywhere in the file (function-level ones too)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
            found.append((node.lineno, max(names, key=layer)))
        elif isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
    return found


def test_nothing_imports_from_a_layer_above_its_own() -> None:
    upward = []
    for package in ("meetbridge", "schemas", "workers", "webhooks"):
        for path in sorted((ROOT / package).rglob("*.py")):
            module = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
            for lineno, imported in imports(path):
                if layer(imported) > layer(module) >= 0:
                    upward.append(f"{path.relative_to(ROOT)}:{lineno} imports {imported}")
    assert upward == [], "imports from a layer above:\n" + "\n".join(upward)


def test_the_rule_sees_an_upward_import(tmp_path: Path) -> None:
    probe = ROOT / "workers" / "_probe_layers.py"
    probe.write_text("def f():\n    from meetbridge.doctor import run\n")
    try:
        assert [imported for _, imported in imports(probe) if layer(imported) > 2] == ["meetbridge.doctor"]
    finally:
        probe.unlink()
