"""The house's shape: wings that say what they own, imports that flow one way (import-linter's contracts in
pyproject.toml, which `python3 dev.py test` runs beside pytest), and modules a reader can hold in mind."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXPORTER = ROOT / "exporter"
WINGS = sorted(p.parent.name for p in EXPORTER.glob("*/__init__.py"))
# The source a newcomer reads: the package, the benchmark, the generators, the tests and dev.py.
SOURCES = ["exporter", "bench", "grafana", "prometheus", "tests"]
MAX_LINES = 600


def lint_imports(cwd: Path) -> subprocess.CompletedProcess[str]:
    """import-linter on the tree at `cwd`, with the contracts of its pyproject.toml."""
    command = [str(Path(sys.executable).with_name("lint-imports")), "--no-cache"]
    return subprocess.run(
        command, cwd=cwd, capture_output=True, text=True, timeout=120, env={"PYTHONPATH": str(cwd)}
    )


def test_the_package_is_in_wings_with_few_modules_at_the_top() -> None:
    assert {
        "catalogue",
        "config",
        "credentials",
        "store",
        "exposition",
        "polling",
        "daemon",
        "web",
        "cli",
    } <= set(WINGS)
    top = sorted(p.name for p in EXPORTER.glob("*.py"))
    assert len(top) <= 12, top


@pytest.mark.parametrize("wing", WINGS)
def test_each_wing_says_what_it_owns_and_what_it_may_import(wing: str) -> None:
    docstring = ast.get_docstring(ast.parse((EXPORTER / wing / "__init__.py").read_text(encoding="utf-8")))
    assert docstring, f"exporter/{wing}/__init__.py has no docstring"
    assert "May import" in docstring or "may import" in docstring, wing
    # The wing's own modules are named in it, so a reader finds the room from the door.
    for module in sorted((EXPORTER / wing).glob("*.py")):
        if module.stem not in ("__init__", "__main__"):
            assert f"`{module.stem}`" in docstring, f"exporter/{wing}/__init__.py does not name {module.stem}"


def test_no_module_is_over_600_lines() -> None:
    files = [ROOT / "dev.py", *(p for d in SOURCES for p in (ROOT / d).rglob("*.py"))]
    long = {
        str(p.relative_to(ROOT)): n
        for p in files
        if ".venv" not in p.parts and (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES
    }
    assert long == {}


def test_the_import_contracts_hold() -> None:
    result = lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


@pytest.mark.parametrize(
    ("module", "line", "contract"),
    [
        # The catalogue importing the web: against the flow of data.
        ("catalogue/products.py", "import exporter.web.app", "Data flows one way"),
        # The simulator importing the running exporter.
        ("simulator/errors.py", "import exporter.polling.scheduler", "The simulator stands in"),
        # Two modules of one wing importing each other.
        ("store/rows.py", "import exporter.store.database", "No import circles"),
    ],
)
def test_an_import_against_the_contracts_fails(tmp_path: Path, module: str, line: str, contract: str) -> None:
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    for package in ("exporter", "bench"):
        shutil.copytree(ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__"))
    target = tmp_path / "exporter" / module
    target.write_text(target.read_text(encoding="utf-8") + f"\n{line}  # noqa\n", encoding="utf-8")
    result = lint_imports(tmp_path)
    assert result.returncode != 0
    broken = result.stdout.split("Broken contracts", 1)[-1]
    assert contract in broken, result.stdout
