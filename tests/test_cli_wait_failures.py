"""`wait` and `get` when the API misbehaves: a task it has seen goes missing for a moment, the keys are
refused, and every non-zero exit's one line on stderr."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from exporter.catalogue.products import CDB, MARIADB
from exporter.simulator import Faults, Phase, SimTask, SimulatorThread
from tests.helpers import ENV, wait_for
from tests.test_cli_get_wait import run, write_config

GRACE = 2.0


def test_a_task_seen_running_then_not_found_for_a_moment_is_waited_for(
    tmp_path: Path, simulator: SimulatorThread
) -> None:
    """Before: the first "not found" after --not-found-grace (counted from the start) exited 3, though the
    task had been seen running. About 4 s: the task must go missing after the start's grace has passed."""
    simulator.add_task(SimTask(MARIADB.name, "4401", (Phase(0, 2),)))
    command = [sys.executable, "-m", "exporter", "wait", MARIADB.name, "4401", "--interval", "100ms"]
    command += ["--not-found-grace", f"{GRACE:g}s", "--timeout", "30s"]
    command += ["--config.file", str(write_config(tmp_path, simulator.url))]
    started = time.monotonic()
    with subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, **ENV}
    ) as wait:

        def polls() -> int:
            return int(simulator.stats()["actions"].get("DescribeFlow", {}).get("accepted", 0))

        # The condition the old code tripped on: the grace period since the start is over.
        wait_for(lambda: polls() >= 2 and time.monotonic() > started + GRACE + 0.5, 15, "the start's grace")
        assert simulator.remove_task(MARIADB.name, "4401")

        def missing() -> int:
            errors = simulator.stats()["actions"]["DescribeFlow"].get("errors", {})
            return sum(errors.get(code, 0) for code in MARIADB.not_found_codes)

        # More than one "not found": the first is not the end.
        wait_for(lambda: missing() >= 2 or wait.poll() is not None, 10, "two 'not found' answers")
        assert wait.poll() is None, wait.communicate()
        simulator.add_task(SimTask(MARIADB.name, "4401", (Phase(0, 0),)))  # back, and finished
        out, err = wait.communicate(timeout=30)
    assert wait.returncode == 0, err
    assert "not found yet" in err
    assert out.splitlines()[-1] == "result: all 1 succeeded (exit 0)"


@pytest.mark.parametrize(
    ("keys", "fault", "code"),
    [
        (
            {"TENCENTCLOUD_SECRET_ID": "AKIDrevoked0", "TENCENTCLOUD_SECRET_KEY": "x"},
            None,
            "SecretIdNotFound",
        ),
        ({}, "UnauthorizedOperation.PermissionDenied", "UnauthorizedOperation.PermissionDenied"),
    ],
)
def test_keys_or_permissions_refused_three_times_in_a_row_exit_4(
    tmp_path: Path, simulator: SimulatorThread, keys: dict[str, str], fault: str | None, code: str
) -> None:
    """Before: retried until --timeout, then exit 124 (a timeout, not the refusal)."""
    simulator.add_task(SimTask(CDB.name, "req-denied", (Phase(0, "running"),)))
    if fault is not None:
        simulator.set_task_faults(CDB.name, "req-denied", Faults(error_code=fault))
    config = write_config(tmp_path, simulator.url)
    command = [sys.executable, "-m", "exporter", "wait", CDB.name, "req-denied", "--interval", "100ms"]
    command += ["--timeout", "20s", "--config.file", str(config)]
    started = time.monotonic()
    result = subprocess.run(
        command, capture_output=True, text=True, timeout=60, env={**os.environ, **ENV, **keys}
    )
    assert result.returncode == 4, result.stderr
    assert time.monotonic() - started < 15  # well before --timeout
    last = result.stderr.splitlines()[-1]
    assert last.startswith("wait: 1 of 1 refused access 3 times in a row (keys or permissions): ")
    assert "cdb req-denied (" in last
    assert code in last
    assert last.endswith("(exit 4)")
    requests = simulator.stats()["services"][CDB.name]["DescribeAsyncRequestInfo"]
    assert sum(requests.get("errors", {}).values()) == 3  # asked three times, not until the timeout


def test_every_non_zero_exit_says_why_on_stderr(tmp_path: Path, simulator: SimulatorThread) -> None:
    """Before: get exited 3 or 4 (and wait, in JSON, 1 or 124) with nothing on stderr."""
    simulator.add_task(SimTask(MARIADB.name, "4411", (Phase(0, 2),)))
    simulator.add_task(SimTask(MARIADB.name, "4412", (Phase(0, 1),)))  # failed
    simulator.add_task(SimTask(MARIADB.name, "4413", (Phase(0, 2),)))
    simulator.set_task_faults(MARIADB.name, "4413", Faults(error_code="InternalError"))
    config = write_config(tmp_path, simulator.url)
    cases = [
        (["get", MARIADB.name, "4411", "4499"], 3, "get: 1 of 2 not found: mariadb 4499 (exit 3)"),
        (["get", MARIADB.name, "4413"], 4, "get: 1 of 1 polls failed: mariadb 4413 (InternalError) (exit 4)"),
        (
            ["wait", MARIADB.name, "4412", "--interval", "100ms"],
            1,
            "wait: 1 of 1 ended in a failure status: mariadb 4412 (failed) (exit 1)",
        ),
        (
            ["wait", MARIADB.name, "4411", "--timeout", "1s", "--interval", "200ms"],
            124,
            "wait: timed out after 1s with 1 of 1 not final: mariadb 4411 (exit 124)",
        ),
    ]
    for args, code, line in cases:
        result = run(tmp_path, *args, "--output", "json", config=config)
        assert result.returncode == code, result.stderr
        assert result.stderr.splitlines()[-1] == line
