#!/usr/bin/env python3
"""Developer entry point: `python3 dev.py demo` or `python3 dev.py test`.

Creates `.venv` beside this file on first use (and again when pyproject.toml or requirements.lock changes),
installs the project with its test extra into it, the runtime dependencies at the versions requirements.lock
pins (the ones the container image installs), then runs the exporter's demo or the whole check suite (lint,
types, tests). Needs nothing but Python 3.11+.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
STAMP = VENV / ".pyproject-sha256"
LOCK = ROOT / "requirements.lock"
CONSTRAINTS = VENV / "constraints.txt"


def lock_constraints() -> str:
    """requirements.lock as pip constraints: its pins without the hashes (pip allows no hashes beside an
    editable install), so the tests run the runtime dependencies the image installs."""
    pins = []
    for line in LOCK.read_text(encoding="utf-8").splitlines():
        text = line.strip().removesuffix("\\").strip()
        if text and not text.startswith(("#", "--")):
            pins.append(text)
    return "\n".join(pins) + "\n"


def ensure_venv() -> None:
    digest = hashlib.sha256((ROOT / "pyproject.toml").read_bytes() + LOCK.read_bytes())
    wanted = digest.hexdigest()
    if STAMP.exists() and STAMP.read_text() == wanted:
        return
    if not (BIN / "python").exists():
        print(f"dev.py: creating {VENV}", flush=True)
        venv.EnvBuilder(with_pip=True).create(VENV)
    print("dev.py: installing the project and its test dependencies (first run takes a minute)", flush=True)
    pip = [str(BIN / "python"), "-m", "pip", "--disable-pip-version-check", "-qq"]
    CONSTRAINTS.write_text(lock_constraints(), encoding="utf-8")
    subprocess.run([*pip, "install", "-c", str(CONSTRAINTS), "-e", f"{ROOT}[test]"], check=True)
    STAMP.write_text(wanted)


def run(*command: str) -> int:
    print(f"dev.py: {' '.join(command)}", flush=True)
    return subprocess.run(command, cwd=ROOT).returncode


def main(argv: list[str]) -> int:
    if sys.version_info < (3, 11):  # noqa: UP036 - dev.py runs on whatever python3 the user has
        print("dev.py: Python 3.11 or newer is needed", file=sys.stderr)
        return 2
    if not argv or argv[0] not in ("demo", "test"):
        print("usage: python3 dev.py demo [exporter flags...] | test [pytest args...]", file=sys.stderr)
        return 2
    ensure_venv()
    command, rest = argv[0], argv[1:]
    if command == "demo":
        exporter = str(BIN / "tencentcloud-task-exporter")
        print(f"dev.py: {exporter} --demo {' '.join(rest)}", flush=True)
        # Replaces this process, so Ctrl-C and SIGTERM reach the exporter directly.
        os.execv(exporter, [exporter, "--demo", *rest])
    checks = [
        (str(BIN / "ruff"), "check", "."),
        (str(BIN / "ruff"), "format", "--check", "."),
        (str(BIN / "mypy"),),
    ]
    failed = [c[0] for c in checks if run(*c) != 0]
    result = run(str(BIN / "python"), "-m", "pytest", *rest)
    if failed:
        print(f"dev.py: lint failed: {', '.join(Path(f).name for f in failed)}", file=sys.stderr)
        return 1
    return result


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
