"""`get` and `wait` as a user runs them: `python -m exporter get|wait ...` in a subprocess, against the
simulator (in a thread, on a free loopback port), with keys from the environment and a config file."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from exporter.catalogue.products import CDB, MARIADB, MONGODB, PRODUCTS
from exporter.simulator import Faults, Phase, SimTask, Simulator, SimulatorThread
from tests.helpers import CREDS, ENV, wait_for

REGION = "ap-guangzhou"
StartSimulator = Callable[..., SimulatorThread]


@pytest.fixture
def start_simulator() -> Iterator[StartSimulator]:
    """Starts simulators accepting CREDS on free ports; every one is stopped afterwards."""
    with contextlib.ExitStack() as stack:

        def start(*tasks: SimTask, **options: Any) -> SimulatorThread:
            simulator = Simulator([CREDS], **options)
            simulator.add_tasks(list(tasks))
            return stack.enter_context(SimulatorThread(simulator))

        yield start


def write_config(tmp_path: Path, url: str, **overrides: Any) -> Path:
    document: dict[str, Any] = {
        "credentials": {"secret_id": "${TENCENTCLOUD_SECRET_ID}", "secret_key": "${TENCENTCLOUD_SECRET_KEY}"},
        "region": REGION,
        "apis": {s.name: {"endpoint": url} for s in PRODUCTS},
        "polling": {"timeout": "2s", "max_backoff": "1s"},
        **overrides,
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


def run(tmp_path: Path, *args: str, config: Path | None = None) -> subprocess.CompletedProcess[str]:
    flags = ["--config.file", str(config)] if config is not None else []
    return subprocess.run(
        [sys.executable, "-m", "exporter", *args, *flags],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        env={**os.environ, **ENV, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
    )


def tasks_of(result: subprocess.CompletedProcess[str]) -> dict[tuple[str, str], dict[str, Any]]:
    document = json.loads(result.stdout)
    return {(t["product"], t["id"]): t for t in document["tasks"]}


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released, now)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --------------------------------------------------------------------------------------------------- get


def test_get_prints_each_task_and_exits_0(tmp_path: Path, start_simulator: StartSimulator) -> None:
    sim = start_simulator(
        SimTask(CDB.name, "req-1", (Phase(0, "running", info="resizing"),)),
        SimTask(MARIADB.name, "7", (Phase(0, 0),)),
        SimTask(MONGODB.name, "mongo-9", (Phase(0, "success"),), started=-60),
    )
    config = write_config(tmp_path, sim.url)
    result = run(
        tmp_path,
        "get",
        CDB.name,
        "req-1",
        MARIADB.name,
        "007",
        MONGODB.name,
        "mongo-9",
        "--output",
        "json",
        config=config,
    )
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert (document["result"], document["exit_code"]) == ("ok", 0)
    tasks = tasks_of(result)
    assert set(tasks) == {
        (CDB.name, "req-1"),
        (MARIADB.name, "7"),
        (MONGODB.name, "mongo-9"),
    }  # 007 canonicalised
    cdb = tasks[CDB.name, "req-1"]
    assert cdb == {
        "product": CDB.name,
        "region": REGION,
        "account": "default",
        "id": "req-1",
        "status": "running",
        "phase": "running",
        "final": False,
        "succeeded": False,
        "not_found": False,
        "info": "resizing",
        "started": None,
        "ended": None,
        "error": None,
    }
    assert (tasks[MARIADB.name, "7"]["status"], tasks[MARIADB.name, "7"]["final"]) == ("success", True)
    mongo = tasks[MONGODB.name, "mongo-9"]
    assert mongo["succeeded"]
    assert mongo["started"]
    assert mongo["started"].endswith("Z")
    assert result.stderr == ""  # quiet by default

    text = run(tmp_path, "get", CDB.name, "req-1", MARIADB.name, "7", config=config)
    assert text.returncode == 0, text.stderr
    header, *rows = text.stdout.splitlines()
    assert header.split() == ["PRODUCT", "REGION", "ID", "STATUS", "FINAL", "STARTED", "ENDED", "INFO"]
    assert rows[0].split() == [CDB.name, REGION, "req-1", "running", "no", "-", "-", "resizing"]
    assert rows[1].split() == [MARIADB.name, REGION, "7", "success", "yes", "-", "-", "-"]
    assert CREDS.secret_key not in text.stdout + text.stderr


def test_get_exit_3_when_an_id_is_not_found_and_3_wins_over_4(
    tmp_path: Path, start_simulator: StartSimulator
) -> None:
    sim = start_simulator(
        SimTask(MARIADB.name, "1", (Phase(0, 2),)), SimTask(MARIADB.name, "2", (Phase(0, 2),))
    )
    sim.set_task_faults(MARIADB.name, "2", Faults(error_code="InternalError"))
    config = write_config(tmp_path, sim.url)
    result = run(tmp_path, "get", MARIADB.name, "1", "404", "--output", "json", config=config)
    assert result.returncode == 3, result.stderr
    tasks = tasks_of(result)
    assert tasks[MARIADB.name, "404"]["not_found"] is True
    assert tasks[MARIADB.name, "1"]["status"] == "running"
    assert json.loads(result.stdout)["result"] == "not_found"
    both = run(tmp_path, "get", MARIADB.name, "2", "404", config=config)
    assert both.returncode == 3, both.stderr
    assert "not-found" in both.stdout
    assert "error: InternalError" in both.stdout


def test_get_exit_4_on_an_api_error(tmp_path: Path, start_simulator: StartSimulator) -> None:
    sim = start_simulator(SimTask(CDB.name, "bad", (Phase(0, "running"),)))
    sim.set_task_faults(CDB.name, "bad", Faults(http_status=502))
    result = run(tmp_path, "get", CDB.name, "bad", "--output", "json", config=write_config(tmp_path, sim.url))
    assert result.returncode == 4, result.stderr
    task = tasks_of(result)[CDB.name, "bad"]
    assert task["status"] is None
    assert task["error"]["code"] == "Transport.HTTPStatus"


def test_get_exit_4_when_the_endpoint_is_unreachable(tmp_path: Path) -> None:
    config = write_config(tmp_path, f"http://127.0.0.1:{closed_port()}")
    result = run(tmp_path, "get", MARIADB.name, "1", "--output", "json", config=config)
    assert result.returncode == 4, result.stderr
    assert tasks_of(result)[MARIADB.name, "1"]["error"]["code"] == "Transport.ConnectionError"


@pytest.mark.parametrize(
    ("args", "config", "message"),
    [
        ([CDB.name, "not an id"], {}, "cdb: expected an async request ID string"),
        ([MARIADB.name, "-1x"], {}, ""),  # argparse: not a flag it knows
        ([MARIADB.name, "abc"], {}, "mariadb: expected a positive integer flow ID, got 'abc'"),
        (["42"], {}, "expected a product first"),
        ([CDB.name, "a", MARIADB.name], {}, "no ID given for mariadb"),
        ([MARIADB.name, "1"], {"region": None}, "no region"),
        ([MARIADB.name, "1", "--account", "nobody"], {}, "no account 'nobody'"),
        ([MARIADB.name, "1"], {"polling": {"interval": "soon"}}, "invalid configuration"),
    ],
)
def test_bad_input_exits_2_with_the_reason(
    tmp_path: Path, args: list[str], config: dict[str, Any], message: str
) -> None:
    path = write_config(tmp_path, f"http://127.0.0.1:{closed_port()}", **config)
    if config.get("region", REGION) is None:
        document = yaml.safe_load(path.read_text())
        del document["region"]
        path.write_text(yaml.safe_dump(document))
    result = run(tmp_path, "get", *args, config=path)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout == ""


def test_a_missing_config_file_given_by_flag_exits_2(tmp_path: Path) -> None:
    result = run(tmp_path, "wait", MARIADB.name, "1", config=tmp_path / "absent.yaml")
    assert result.returncode == 2
    assert "absent.yaml" in result.stderr
    assert "Traceback" not in result.stderr


def test_help_shows_examples() -> None:
    for command in ("get", "wait"):
        result = subprocess.run(
            [sys.executable, "-m", "exporter", command, "--help"], capture_output=True, text=True, timeout=60
        )
        assert result.returncode == 0
        assert f"tencentcloud-task-exporter {command} mariadb 3340" in result.stdout
        assert "exit status" in result.stdout


# -------------------------------------------------------------------------------------------------- wait


def change_lines(stderr: str) -> list[str]:
    assert "\r" not in stderr
    assert "\x1b" not in stderr
    return [line for line in stderr.splitlines() if line]


def test_wait_until_success_exits_0(tmp_path: Path, start_simulator: StartSimulator) -> None:
    """The task succeeds only once `wait` has reported it running (the simulator's task is replaced then),
    so a slow start on a busy machine cannot skip the running line."""
    sim = start_simulator(SimTask(CDB.name, "req-1", (Phase(0, "running"),)))
    flags = ["--config.file", str(write_config(tmp_path, sim.url)), "--interval", "100ms"]
    stderr = tmp_path / "stderr.txt"
    with stderr.open("w") as errors:
        waiting = subprocess.Popen(
            [sys.executable, "-m", "exporter", "wait", CDB.name, "req-1", *flags],
            stdout=subprocess.PIPE,
            stderr=errors,
            text=True,
            cwd=tmp_path,
            env={**os.environ, **ENV, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
        )
        try:
            wait_for(lambda: "running" in stderr.read_text(), 30, "wait to report the task running")
            assert waiting.poll() is None  # still waiting: the task is not final
            sim.add_task(SimTask(CDB.name, "req-1", (Phase(0, "success"),)))
            stdout, _ = waiting.communicate(timeout=30)
        finally:
            if waiting.poll() is None:
                waiting.kill()
                waiting.communicate()
    assert waiting.returncode == 0, stderr.read_text()
    lines = change_lines(stderr.read_text())
    # One line per change: running once (however many polls saw it), then success.
    assert len(lines) == 2, lines
    assert lines[0].endswith("cdb req-1: running (0/1 done)")
    assert lines[1].endswith("cdb req-1: success (1/1 done)")
    assert "success  yes" in stdout
    assert stdout.splitlines()[-1] == "result: all 1 succeeded (exit 0)"


def test_wait_exits_1_when_a_task_fails(tmp_path: Path, start_simulator: StartSimulator) -> None:
    sim = start_simulator(
        SimTask(MARIADB.name, "5", (Phase(0, 2), Phase(0.5, 1))), SimTask(MARIADB.name, "6", (Phase(0, 0),))
    )
    result = run(
        tmp_path,
        "wait",
        MARIADB.name,
        "5",
        "6",
        "--interval",
        "100ms",
        "--output",
        "json",
        config=write_config(tmp_path, sim.url),
    )
    assert result.returncode == 1, result.stderr
    document = json.loads(result.stdout)
    assert (document["result"], document["exit_code"]) == ("failed", 1)
    tasks = tasks_of(result)
    assert (tasks[MARIADB.name, "5"]["status"], tasks[MARIADB.name, "5"]["final"]) == ("failed", True)
    assert tasks[MARIADB.name, "5"]["succeeded"] is False
    assert tasks[MARIADB.name, "6"]["succeeded"] is True
    assert (tasks[MARIADB.name, "5"]["phase"], tasks[MARIADB.name, "6"]["phase"]) == ("failed", "succeeded")
    assert set(tasks[MARIADB.name, "6"]) >= {"product", "region", "account", "id", "info", "started", "ended"}


def test_wait_exits_3_for_an_unknown_id_after_the_grace(
    tmp_path: Path, start_simulator: StartSimulator
) -> None:
    sim = start_simulator(SimTask(MARIADB.name, "1", (Phase(0, 0),)))
    result = run(
        tmp_path,
        "wait",
        MARIADB.name,
        "1",
        "999",
        "--interval",
        "200ms",
        "--not-found-grace",
        "600ms",
        "--output",
        "json",
        config=write_config(tmp_path, sim.url),
    )
    assert result.returncode == 3, result.stderr
    tasks = tasks_of(result)
    assert tasks[MARIADB.name, "999"]["not_found"] is True
    assert tasks[MARIADB.name, "999"]["phase"] == "not_found"
    assert tasks[MARIADB.name, "1"]["succeeded"] is True
    lines = change_lines(result.stderr)
    assert any("mariadb 999: not found yet (" in line for line in lines), lines
    assert lines[-2].endswith("mariadb 999: not found (2/2 done)"), lines
    assert lines[-1] == "wait: 1 of 2 not found after --not-found-grace 0.6s: mariadb 999 (exit 3)"
    # Asked more than once: within the grace, an unknown ID is asked about again.
    assert sim.stats()["actions"]["DescribeFlow"]["accepted"] >= 3


def test_wait_exits_124_on_timeout(tmp_path: Path, start_simulator: StartSimulator) -> None:
    sim = start_simulator(SimTask(CDB.name, "slow", (Phase(0, "running"),)))
    started = time.monotonic()
    result = run(
        tmp_path,
        "wait",
        CDB.name,
        "slow",
        "--timeout",
        "2s",
        "--interval",
        "500ms",
        config=write_config(tmp_path, sim.url),
    )
    assert result.returncode == 124, result.stderr
    assert 2.0 <= time.monotonic() - started < 20
    assert result.stdout.splitlines()[-1] == "result: timed out after 2s with 1 of 1 not final (exit 124)"


@pytest.mark.parametrize("configured_rate", [None, 2.0])
def test_wait_under_a_low_quota_still_succeeds(
    tmp_path: Path, start_simulator: StartSimulator, configured_rate: float | None
) -> None:
    """The simulator allows 2 requests a second. Configured to match, nothing is throttled; left at the
    published 20/s, answers are throttled and retried with backoff, never an early exit."""
    ids = [str(n) for n in range(1, 5)]  # four tasks every 200 ms: ten times what the quota allows
    sim = start_simulator(
        *(SimTask(MARIADB.name, i, (Phase(0, 2), Phase(0.5, 0))) for i in ids), quotas={MARIADB.name: 2}
    )
    apis: dict[str, Any] = {s.name: {"endpoint": sim.url} for s in PRODUCTS}
    if configured_rate is not None:
        apis[MARIADB.name]["rate_limit"] = configured_rate
    config = write_config(tmp_path, sim.url, apis=apis)
    result = run(
        tmp_path, "wait", MARIADB.name, *ids, "--interval", "200ms", "--output", "json", config=config
    )
    assert result.returncode == 0, result.stderr
    tasks = tasks_of(result)
    assert [tasks[MARIADB.name, i]["status"] for i in ids] == ["success"] * len(ids)
    stats = sim.stats()["actions"]["DescribeFlow"]
    if configured_rate is None:
        assert stats["throttled"] > 0  # retried, not given up on
        assert "RequestLimitExceeded" in result.stderr
    else:
        assert stats["throttled"] == 0
    assert stats["max_in_window"] <= 2


def test_wait_across_two_products(tmp_path: Path, start_simulator: StartSimulator) -> None:
    sim = start_simulator(
        SimTask(CDB.name, "A", (Phase(0, "running"), Phase(0.5, "success"))),
        SimTask(MARIADB.name, "1", (Phase(0, 2), Phase(0.3, 0))),
        SimTask(MARIADB.name, "2", (Phase(0, 0),)),
    )
    result = run(
        tmp_path,
        "wait",
        CDB.name,
        "A",
        MARIADB.name,
        "1",
        "2",
        "--interval",
        "100ms",
        "--output",
        "json",
        config=write_config(tmp_path, sim.url),
    )
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert document["result"] == "succeeded"
    assert [(t["product"], t["id"], t["status"]) for t in document["tasks"]] == [
        (CDB.name, "A", "success"),
        (MARIADB.name, "1", "success"),
        (MARIADB.name, "2", "success"),
    ]
    services = sim.stats()["services"]
    assert services[CDB.name]["DescribeAsyncRequestInfo"]["accepted"] >= 1
    assert services[MARIADB.name]["DescribeFlow"]["accepted"] >= 2
