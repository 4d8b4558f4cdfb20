"""What every bench mode shares: the command line's settings, the fake credentials and region every process
is given, the way figures are printed, the temporary work folder, and the description of the machine and of
the code measured that each results file carries.

It imports no other bench module but `bench.measure`, so every mode can import it without a circle.
"""

from __future__ import annotations

import contextlib
import math
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from bench import measure
from bench.measure import Scrape, median, quantile

CREDENTIALS = {
    "TENCENTCLOUD_SECRET_ID": "AKIDBENCH000000000000000NOTAREALKEY",
    "TENCENTCLOUD_SECRET_KEY": "bench-secret-key-not-valid-anywhere",
}
ACTIONS = {"mariadb": "DescribeFlow", "cdb": "DescribeAsyncRequestInfo"}
REGION = "ap-guangzhou"
STALL_THRESHOLD_MS = 2.0  # bench.probe.THRESHOLD
RESULTS = Path(__file__).resolve().parent / "results"  # where results go without --output (git ignores it)
# Set by the test suite: each mode's --quick sizes shrink to a smoke run that only shows every part works.
SMOKE_ENV = "BENCH_SMOKE"
Log = Callable[[str], None]


@dataclass(frozen=True)
class Settings:
    """The command line's sizes and switches (`bench.cli`); the other modes use the ones they say they do."""

    detect_tasks: int = 1000
    large_tasks: int = 10000
    repeats: int = 2
    window: float = 20.0
    latency: float = 0.1
    quota_mariadb: float = 20.0
    quota_cdb: float = 40.0
    interval: float = 1.0
    scrapes: int = 30
    scrape_every: float = 5.0
    seed: int = 1
    sequential: bool = False
    baseline: bool = True
    large: bool = True
    detect: bool = True
    profile: bool = False
    max_run_seconds: float = 900.0
    what_if: tuple[tuple[str, str], ...] = ()

    @property
    def quotas(self) -> dict[str, float]:
        return {"mariadb": self.quota_mariadb, "cdb": self.quota_cdb}


def smoke() -> bool:
    """Whether the test suite asked for smoke sizes (a non-empty BENCH_SMOKE), with --quick."""
    return bool(os.environ.get(SMOKE_ENV))


def stderr_log(began: float) -> Log:
    """A log to stderr, each line stamped with the seconds since `began` (time.monotonic())."""

    def log(message: str) -> None:
        print(f"[{time.monotonic() - began:6.1f}s] {message}", file=sys.stderr, flush=True)

    return log


# --------------------------------------------------------------------------------------------- figures


def fmt(value: Any, unit: str = "", digits: int = 2, lower_bound: bool = False) -> str:
    """One figure as the tables print it: n/a, thousands separators, `>=` for a lower bound."""
    if value is None:
        return "n/a"
    if unit == "stall":
        # The probe records wake-ups later than its threshold only; below it, say so.
        return f"<{STALL_THRESHOLD_MS:g}" if value < STALL_THRESHOLD_MS else f"{value:.1f}"
    if isinstance(value, float) and math.isinf(value):
        return "inf"
    if isinstance(value, int) and not isinstance(value, bool):
        text = f"{value:,}"
    elif abs(value) >= 1000:
        text = f"{value:,.0f}"
    else:
        text = f"{value:.{digits}f}"
    return (">=" if lower_bound else "") + text + unit


def ms(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1000.0


def scrape_figures(scrapes: list[Scrape]) -> dict[str, Any]:
    """Count, p50, p99, max and median size of the plain and of the gzip scrapes."""
    out: dict[str, Any] = {}
    for label, gz in (("plain", False), ("gzip", True)):
        chosen = [s for s in scrapes if s.gzip == gz]
        times = [s.seconds for s in chosen]
        out[label] = {
            "n": len(chosen),
            "p50_ms": ms(quantile(times, 0.5)),
            "p99_ms": ms(quantile(times, 0.99)),
            "max_ms": ms(max(times)) if times else None,
            "bytes": int(median(s.size for s in chosen) or 0) if chosen else None,
        }
    return out


# --------------------------------------------------------------------------------------------- context


@contextlib.contextmanager
def work_directory(keep: bool) -> Iterator[Path]:
    """A fresh temporary folder for one mode's runs, removed at the end unless `keep` (--keep)."""
    path = Path(tempfile.mkdtemp(prefix="tc-exporter-bench-"))
    try:
        yield path
    finally:
        if keep:
            print(f"work directory kept: {path}", file=sys.stderr)
        else:
            shutil.rmtree(path, ignore_errors=True)


def machine() -> dict[str, Any]:
    """The machine and the package versions the figures were taken with."""
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    packages = {}
    for name in (
        "aiohttp",
        "prometheus-client",
        "tencentcloud-sdk-python-common",
        "tencentcloud-sdk-python-mariadb",
        "tencentcloud-sdk-python-cdb",
        "psutil",
        "py-spy",
        "tencentcloud-task-exporter",
    ):
        with contextlib.suppress(metadata.PackageNotFoundError):
            packages[name] = metadata.version(name)
    return {
        "nproc": os.cpu_count(),
        "cpu_model": model or platform.processor(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "packages": packages,
    }


def code_state() -> dict[str, Any]:
    """The code measured: its folder, and the commit and modified files of a git checkout (read-only)."""
    git = ["git", "--no-optional-locks", "-C", str(measure.ROOT)]
    out: dict[str, Any] = {"root": git[-1]}
    for key, command in (("commit", ["rev-parse", "HEAD"]), ("modified", ["status", "--porcelain"])):
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            lines = subprocess.run([*git, *command], capture_output=True, text=True, timeout=10, check=True)
            out[key] = lines.stdout.splitlines() if key == "modified" else lines.stdout.strip()
    return out
