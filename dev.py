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
import tempfile
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


def say(message: str) -> None:
    print(f"dev.py: {message}", flush=True)


def ensure_venv() -> None:
    digest = hashlib.sha256((ROOT / "pyproject.toml").read_bytes() + LOCK.read_bytes())
    wanted = digest.hexdigest()
    if STAMP.exists() and STAMP.read_text() == wanted:
        say(f"{VENV} is up to date with pyproject.toml and requirements.lock")
        return
    if not (BIN / "python").exists():
        say(f"[1/3] creating a virtual environment in {VENV} (a few seconds)")
        venv.EnvBuilder(with_pip=True).create(VENV)
    else:
        say("[1/3] pyproject.toml or requirements.lock changed since the last install: updating .venv")
    say("[2/3] installing the project, its runtime dependencies at the lock's pins and the test tools")
    say("      (about a minute the first time; pip reports each package as it goes)")
    install = [str(BIN / "python"), "-m", "pip", "install", "--disable-pip-version-check"]
    CONSTRAINTS.write_text(lock_constraints(), encoding="utf-8")
    pip = subprocess.run([*install, "-c", str(CONSTRAINTS), "-e", f"{ROOT}[test]"])
    if pip.returncode != 0:
        raise SystemExit(f"dev.py: pip failed (exit {pip.returncode}); its reason is above")
    STAMP.write_text(wanted)
    say("[3/3] .venv is ready")


def workers() -> str:
    """pytest-xdist workers: one more than the usable cores. The suite mostly waits on real local servers
    (simulator, exporter, Prometheus), so workers overlap the waiting; one core still gets two."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return str(cores + 1)


def checks() -> list[tuple[str, ...]]:
    """Lint, format, types and the wings' import contracts: each a command that exits non-zero on failure."""
    return [
        (str(BIN / "ruff"), "check", "."),
        (str(BIN / "ruff"), "format", "--check", "."),
        (str(BIN / "mypy"),),
        (str(BIN / "lint-imports"), "--no-cache"),
    ]


def _name(command: tuple[str, ...]) -> str:
    return " ".join([Path(command[0]).name, *command[1:]])


def test(rest: list[str]) -> int:
    """The checks run beside pytest (the suite mostly waits on servers, so they cost it little); a failing
    check's output is printed after pytest's, so the two never interleave."""
    # Each check writes to a file of its own: a pipe nobody reads until pytest ends could fill and stall it.
    started = []
    for command in checks():
        output = tempfile.TemporaryFile()  # noqa: SIM115 - closed after the check ends, below
        process = subprocess.Popen(command, cwd=ROOT, stdout=output, stderr=subprocess.STDOUT)
        started.append((command, process, output))
    say("checks started beside the tests: " + ", ".join(_name(command) for command, _, _ in started))
    # A worker count of the caller's (-n 0 for one process, -p no:xdist) wins over ours.
    chosen = any(a.startswith(("-n", "--numprocesses", "--dist")) or a == "no:xdist" for a in rest)
    parallel = [] if chosen else ["-n", workers()]
    pytest = [str(BIN / "python"), "-m", "pytest", *parallel, *rest]
    say(" ".join(pytest))
    result = subprocess.run(pytest, cwd=ROOT).returncode
    failed = []
    for command, process, output in started:
        if process.wait() != 0:
            # Only failures are printed, so a passing run still ends on pytest's own summary line.
            failed.append(_name(command))
            output.seek(0)
            print(output.read().decode(errors="replace"), flush=True)
        output.close()
    if failed:
        print(f"dev.py: checks failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return result


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
    return test(rest)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
