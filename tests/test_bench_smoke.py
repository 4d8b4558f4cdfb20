"""The benchmark (bench/) end to end on a tiny workload: every process starts, every figure is produced.

Each mode runs as `python -m bench --quick` with BENCH_SMOKE set, which shrinks its sizes and waits to a smoke
run: real processes and the whole report, in a few seconds. No speed is asserted.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from exporter.catalogue.products import CDB, MARIADB

ROOT = Path(__file__).resolve().parent.parent


def run_bench(*flags: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    """`python -m bench --quick FLAGS` at smoke sizes, from the checkout's root."""
    command = [sys.executable, "-m", "bench", "--quick", *flags]
    env = {**os.environ, "BENCH_SMOKE": "1"}
    return subprocess.run(
        command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def test_benchmark_runs_on_a_tiny_workload(tmp_path: Path) -> None:
    output = tmp_path / "bench.json"
    result = run_bench("--output", str(output), "--latency", "0.02")
    assert result.returncode == 0, result.stderr[-4000:]
    assert "p99 / bound" in result.stdout

    document = json.loads(output.read_text())
    settings = document["settings"]
    exporter, baseline = document["summary"]["exporter"], document["summary"]["baseline"]
    # Nothing trips the simulator's quota, and the exporter sees every change it was shown.
    assert exporter["throttled_mariadb"] == 0
    assert exporter["throttled_cdb"] == 0
    assert exporter["detect_changes"] > 0
    assert exporter["detect_undetected"] == 0
    assert exporter["detect_p99_s"] > 0
    # Both subjects were scraped at full size and expose the same per-task series.
    large = document["runs"]["large"]
    for subject in ("exporter", "baseline"):
        assert large[subject]["scrapes"]["plain"]["n"] == settings["scrapes"]
        assert large[subject]["scrapes"]["gzip"]["n"] == settings["scrapes"]
    assert large["exporter"]["polled_after_sweep"] == settings["large_tasks"]
    assert baseline["rss_mb_large"] > 0
    assert exporter["rss_mb_large"] > 0


def _registration(document: dict[str, Any]) -> None:
    registration = document["hardening"]["registration"]
    for phase in ("prefill", "low", "fill", "high"):
        assert registration[phase]["acknowledged"] > 0
        assert registration[phase]["per_s"] > 0
        assert registration[phase]["p50_ms"] > 0
    assert registration["storage_size_bytes"] > 0
    assert registration["storage_bytes"]["written"] > 0


def _scrapes(document: dict[str, Any]) -> None:
    scrapes = document["hardening"]["scrapes"]
    for phase in ("quiet", "storm"):
        for product in (MARIADB.name, CDB.name):
            assert scrapes[phase][product]["accepted"] > 0
            assert scrapes[phase][product]["utilisation"] > 0
    assert scrapes["storm"]["scrapes"] > 0
    assert scrapes["storm"]["plain"]["n"] > 0
    assert scrapes["storm"]["gzip"]["n"] > 0


def _kill9(document: dict[str, Any]) -> None:
    kill9 = document["hardening"]["kill9"]
    assert kill9["acknowledged"] > 0
    assert kill9["killed_by_sigkill"]
    assert kill9["list_status"] == 200
    assert isinstance(kill9["missing"], int)
    assert kill9["restart_to_listening_s"] > 0
    assert {row["figure"] for row in document["table"]} >= {"  acknowledged but missing after restart"}


def _flood(document: dict[str, Any]) -> None:
    assert "error" not in document["hardening"]["flood"]


def _caps(document: dict[str, Any]) -> None:
    [caps] = document["hardening"]["caps"]["runs"]
    assert caps["with_status"] == caps["tasks"] > 0  # every task polled and on /metrics
    assert caps["peak_rss_mib"] >= caps["rss_mib"] > 0
    assert caps["body_mib"] > 0


def _pages(document: dict[str, Any]) -> None:
    pages = document["hardening"]["pages"]  # 8 clients reading /tasks (bench/hardening_pages.py)
    for product in (MARIADB.name, CDB.name):
        assert pages["storm"][product]["accepted"] > 0
    assert pages["storm"]["fetches"] > 0
    assert pages["storm"]["failed"] == 0
    assert pages["storm"]["page_bytes"] > 0


HARDENING_CHECKS = {
    "registration": _registration,
    "scrapes": _scrapes,
    "kill9": _kill9,
    "flood": _flood,
    "caps": _caps,
    "pages": _pages,
}


# Three runs of two parts each, so the workers run them side by side (all six in one run took over 20 s).
@pytest.mark.parametrize("parts", [("registration", "kill9"), ("scrapes", "flood"), ("caps", "pages")])
def test_hardening_runs_quick(tmp_path: Path, parts: tuple[str, str]) -> None:
    """`--hardening --quick --parts ...`: each part runs and gives well-formed figures (no speed is
    asserted). Up to about 10 s a pair: each part measures a window without load and one with it."""
    output = tmp_path / "hardening.json"
    result = run_bench(
        "--hardening", "--parts", ",".join(parts), "--output", str(output), "--latency", "0.02"
    )
    assert result.returncode == 0, result.stderr[-4000:]
    document = json.loads(output.read_text())
    assert document["storage_flag"] in ("--storage.path", "--tasks.state-file")
    assert set(document["hardening"]) == set(parts)
    for part in parts:
        HARDENING_CHECKS[part](document)


def test_hardening_refuses_an_unknown_part() -> None:
    result = run_bench("--hardening", "--parts", "registration,nonsense")
    assert result.returncode == 2
    assert "unknown nonsense" in result.stderr


def test_discovery_runs_quick(tmp_path: Path) -> None:
    """`--discovery --quick`: the sweep, the utilisation windows, the discovered count and the detection of
    the listed operations' changes are measured, then the large part's sweep, RSS and loop lag; nothing is
    throttled (no speed is asserted). About 15 s: the bench's own windows (polling alone, the sweep, after
    it, detection; the large part's warm-up and steady state) at their smallest that still hold a sweep and
    a change."""
    output = tmp_path / "discovery.json"
    result = run_bench("--discovery", "--output", str(output))
    assert result.returncode == 0, result.stderr[-4000:]
    assert "status utilisation" in result.stdout

    document = json.loads(output.read_text())
    sizes, summary = document["sizes"], document["discovery"]["summary"]
    assert summary["runs"] == sizes["repeats"] == 1
    (run,) = document["discovery"]["runs"]
    assert run["discovering_sweep"]["pages"] == summary["pages"] == -(-sizes["tasks"] // 100)
    assert run["discovering_sweep"]["seconds"] > 0
    assert run["discovering_sweep"]["errors"] == 0
    for window in ("before", "short", "window"):
        assert run[window]["accepted"] > 0
        assert run[window]["utilisation"] > 0
    assert summary["discovered_min"] == sizes["tasks"]
    assert summary["watched_min"] == sizes["tasks"] + sizes["watched"]
    # Every listed operation's change is seen on /metrics (the list speaks for them).
    assert run["detection"]["detected"] == sizes["tasks"]
    assert run["detection"]["p99_s"] > 0
    assert run["rss_mb"]["with_discovered"] > 0
    assert run["lag_window"]["observations"] > 0
    # Neither action is ever throttled, by the simulator's count or the exporter's.
    assert summary["throttled_simulator"] == 0
    assert summary["throttled_exporter"] == 0
    assert summary["sweep_errors"] == 0
    assert run["error_codes"] == {}
    # The large part (50,000 operations outside the smoke run): every operation taken, nothing throttled.
    large, large_sizes = document["discovery"]["large"], document["large_sizes"]
    assert large["pages"] == -(-large_sizes["tasks"] // 100)
    assert large["discovery_tasks"] == large_sizes["tasks"]
    assert large["sweep_errors"] == 0
    assert large["rss_mb_max"] > 0
    assert large["lag"]["observations"] > 0
    assert large["throttled_simulator"] == large["throttled_exporter"] == 0


def test_accounts_runs_quick(tmp_path: Path) -> None:
    """`--accounts --quick`: four buckets (2 accounts x 2 regional simulators) and the one-bucket control
    are measured from the simulators' per-account counters, and every figure is reported (no speed or
    utilisation is asserted)."""
    output = tmp_path / "accounts.json"
    result = run_bench("--accounts", "--output", str(output))
    assert result.returncode == 0, result.stderr[-4000:]
    assert "all 4 buckets" in result.stdout
    assert "control: prod @ one endpoint" in result.stdout

    document = json.loads(output.read_text())
    summary = document["accounts"]["summary"]
    assert summary["runs"] == document["sizes"]["repeats"] == 1
    accounts, control = summary["accounts"], summary["control"]
    assert sorted(accounts["buckets"]) == [
        "prod@ap-guangzhou",
        "prod@ap-shanghai",
        "staging@ap-guangzhou",
        "staging@ap-shanghai",
    ]
    assert len(control["buckets"]) == 1
    for stage in (accounts, control):
        for bucket in stage["buckets"].values():
            for field in ("rate", "utilisation", "max_in_window", "exporter_requests_per_s"):
                assert bucket[field] > 0, field
            for field in ("violations", "throttled", "foreign", "wrong_region"):
                assert isinstance(bucket[field], int), field
            assert bucket["current_rate_limit"] is not None
        assert stage["aggregate_rate"] > 0
        assert stage["sum_quotas"] == summary["quota"] * len(stage["buckets"])
        assert stage["watched"] == 4 * document["sizes"]["tasks_per_bucket"]
        assert stage["clock_shared"]
    assert isinstance(accounts["all_at_goal_runs"], int)
    assert summary["gain"] > 0
    (run,) = document["accounts"]["runs"]
    for name, bucket in run["accounts"]["buckets"].items():
        assert len(bucket["per_second"]) == int(run["accounts"]["seconds"]), name
        assert bucket["accepted"] > 0
