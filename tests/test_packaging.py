"""Issue 12: what ships. The wheel holds the service and not the simulators; every library the service imports
is one it declares; a fresh install from requirements.lock is consistent (`pip check`) and imports every module
of the service, and `meetbridge dev` says clearly what is missing where the simulators are not installed."""

from __future__ import annotations

import ast
import importlib.metadata
import re
import subprocess
import sys
import tomllib
import venv
import zipfile
from pathlib import Path

import pytest

from tests.support import ROOT

RUNTIME_PACKAGES = ("meetbridge", "webhooks", "workers", "schemas")
SIMULATORS = "sandbox"
# The one module of the service that may import the simulators, and only inside a function (at run time).
DEV_RUNNER = Path("meetbridge/dev.py")


def runtime_files() -> list[Path]:
    return sorted(path for package in RUNTIME_PACKAGES for path in (ROOT / package).rglob("*.py"))


def top_level_imports(path: Path) -> list[tuple[str, ast.stmt, bool]]:
    """(top-level module name, statement, whether it sits at module level) for every absolute import."""
    tree = ast.parse(path.read_text(), str(path))
    module_level = {id(node) for node in tree.body}
    found: list[tuple[str, ast.stmt, bool]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name.partition(".")[0], node, id(node) in module_level) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.module.partition(".")[0], node, id(node) in module_level))
    return found


def normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def declared_dependencies() -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return {normalized(re.match(r"[A-Za-z0-9._-]+", requirement).group()) for requirement in project["dependencies"]}


def test_every_third_party_import_of_the_service_is_a_declared_dependency() -> None:
    first_party = {*RUNTIME_PACKAGES, SIMULATORS}
    distributions = importlib.metadata.packages_distributions()
    declared = declared_dependencies()
    undeclared: dict[str, set[str]] = {}
    for path in runtime_files():
        for name, node, _ in top_level_imports(path):
            if name in sys.stdlib_module_names or name in first_party:
                continue
            owners = {normalized(owner) for owner in distributions.get(name, [name])}
            if not owners & declared:
                undeclared.setdefault(f"{name} ({' or '.join(sorted(owners))})", set()).add(
                    f"{path.relative_to(ROOT)}:{node.lineno}")
    assert undeclared == {}, "imported but not in pyproject.toml's dependencies"


def test_only_the_dev_runner_imports_the_simulators_and_only_at_run_time() -> None:
    offending = [f"{path.relative_to(ROOT)}:{node.lineno}"
                 for path in runtime_files() for name, node, module_level in top_level_imports(path)
                 if name == SIMULATORS and (path.relative_to(ROOT) != DEV_RUNNER or module_level)]
    assert offending == []


def test_the_simulators_validator_is_a_dev_dependency_not_a_runtime_one() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert "openapi-schema-validator" not in declared_dependencies()
    assert any(normalized(requirement).startswith("openapi-schema-validator")
               for requirement in project["optional-dependencies"]["dev"])
    assert "openapi-schema-validator==" not in (ROOT / "requirements.lock").read_text()
    assert "openapi-schema-validator==" in (ROOT / "requirements-dev.lock").read_text()


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    result = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "--wheel-dir", str(out),
                             str(ROOT)], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    (built,) = out.glob("meetbridge-*.whl")
    return built


def test_the_wheel_holds_the_service_and_not_the_simulators(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    packages = {name.split("/")[0] for name in names if "/" in name and ".dist-info" not in name}
    assert packages == set(RUNTIME_PACKAGES)
    assert not [name for name in names if name.startswith(f"{SIMULATORS}/")]
    assert "webhooks/templates/host_page.html" in names


IMPORT_EVERYTHING = f"""
import importlib, importlib.util, pkgutil
for package in {RUNTIME_PACKAGES!r}:
    module = importlib.import_module(package)
    for info in pkgutil.walk_packages(module.__path__, package + "."):
        importlib.import_module(info.name)
print(importlib.util.find_spec("sandbox"), importlib.util.find_spec("openapi_schema_validator"))
"""


@pytest.mark.slow
def test_a_fresh_install_from_the_lock_is_consistent_and_runs(wheel: Path, tmp_path: Path) -> None:
    """What the Dockerfile does: requirements.lock, then the wheel without dependencies."""
    venv.create(tmp_path / "venv", with_pip=True)
    python = str(tmp_path / "venv" / "bin" / "python")

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([python, *args], cwd=tmp_path, capture_output=True, text=True, timeout=900)

    installed = run("-m", "pip", "install", "--quiet", "--require-hashes", "-r", str(ROOT / "requirements.lock"))
    assert installed.returncode == 0, installed.stderr[-3000:]
    installed = run("-m", "pip", "install", "--quiet", "--no-deps", str(wheel))
    assert installed.returncode == 0, installed.stderr[-3000:]

    check = run("-m", "pip", "check")
    assert check.returncode == 0, check.stdout + check.stderr
    # Every module of the service imports with the locked dependencies alone; the simulators are not there.
    imported = run("-c", IMPORT_EVERYTHING)
    assert imported.returncode == 0, imported.stderr[-3000:]
    assert imported.stdout.split() == ["None", "None"]
    # Without the simulators, the dev runner says what to install instead of a traceback.
    dev = subprocess.run([str(tmp_path / "venv" / "bin" / "meetbridge"), "dev", "--exit-after-demo"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=60,
                         env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "MEETBRIDGE_ENV": "dev"})
    assert dev.returncode == 1
    assert "the API simulators are not installed" in dev.stdout, dev.stdout + dev.stderr
    assert "Traceback" not in dev.stdout + dev.stderr
