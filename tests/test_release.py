"""What a release pins: one version, its changelog entry, the licence the package declares, and a lock
file of the runtime dependencies that the tests themselves run on."""

from __future__ import annotations

import re
import tomllib
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement

from exporter import __version__

ROOT = Path(__file__).resolve().parent.parent


def _pins() -> dict[str, str]:
    """requirements.lock's `name==version` lines, names normalised."""
    pins = {}
    for line in (ROOT / "requirements.lock").read_text(encoding="utf-8").splitlines():
        match = re.fullmatch(r"([A-Za-z0-9_.-]+)==([^ ;\\]+)(?: *;[^\\]*)? *\\?", line.strip())
        if match:
            pins[_normal(match.group(1))] = match.group(2)
    return pins


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_one_version_with_its_changelog_entry() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert project["dynamic"] == ["version"]  # read from exporter.__version__, nowhere else
    assert metadata.version("tencentcloud-task-exporter") == __version__
    changelog = (ROOT / "CHANGELOG.md").read_text(encoding="utf-8")
    assert re.search(rf"^## \[{re.escape(__version__)}\] - \d{{4}}-\d{{2}}-\d{{2}}$", changelog, re.M)
    assert re.search(rf"^\[{re.escape(__version__)}\]: https://", changelog, re.M)
    assert "**Breaking:**" in changelog


def test_the_licence_is_the_apache_2_text_the_package_declares() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert project["license"] == {"text": "Apache-2.0"}
    text = (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert "Apache License\n                        Version 2.0, January 2004" in text
    assert "END OF TERMS AND CONDITIONS" in text


def test_the_lock_pins_every_runtime_dependency_within_pyproject_and_with_hashes() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    pins = _pins()
    for spec in project["dependencies"]:
        requirement = Requirement(spec)
        name = _normal(requirement.name)
        assert name in pins, (
            f"{name} is not in requirements.lock: run pip-compile again (docs/development.md)"
        )
        assert requirement.specifier.contains(pins[name]), (name, pins[name], str(requirement.specifier))
    lock = (ROOT / "requirements.lock").read_text(encoding="utf-8")
    assert lock.count("--hash=sha256:") >= len(pins)  # the image installs with --require-hashes


def test_the_tests_run_on_the_locked_runtime_dependencies() -> None:
    """dev.py installs with the lock as constraints: what passes here is what the image runs."""
    for name, version in _pins().items():
        assert metadata.version(name) == version, (
            f"{name}: installed {metadata.version(name)}, locked {version}"
        )
