"""Running it for months: reloads, tasks registered over HTTP, restarts, the status page, shutdown, shards."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import http.client
import json
import os
import signal
import sqlite3
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import bcrypt
import pytest
import trustme

from exporter.catalogue.products import CDB, MARIADB
from exporter.simulator import Phase, SimTask, Simulator, SimulatorThread
from exporter.store.database import Store
from tests.helpers import CREDS, ENV, DaemonProcess, require_binary, wait_for, write_config
from tests.simulator_sdk import SimulatorProcess

TOKEN = "test-api-token-5f1e"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def add_tasks(simulator: SimulatorThread) -> SimulatorThread:
    """A few running flows, a finished one and a running CDB request."""
    for n in (1, 2, 3, 7, 8):
        simulator.add_task(SimTask(MARIADB.name, str(n), (Phase(0, 2),)))
    simulator.add_task(SimTask(MARIADB.name, "9", (Phase(0, 0),)))  # finished from the start
    simulator.add_task(SimTask(CDB.name, "cdb-x", (Phase(0, "RUNNING"),)))
    return simulator


@pytest.fixture
def simulator(shared_simulator: SimulatorThread) -> SimulatorThread:
    """conftest's shared simulator, with this module's tasks (the same ones each time)."""
    return add_tasks(shared_simulator)


@pytest.fixture
def own_simulator() -> Iterator[SimulatorThread]:
    """A simulator of the test's own with the same tasks, for a test that reads the statistics."""
    with SimulatorThread(Simulator([CREDS])) as own:
        yield add_tasks(own)


def stored_ids(path: Path) -> set[str]:
    """IDs of the registrations in a store file, read through the store itself."""

    async def read() -> set[str]:
        store = Store(path)
        await store.open()
        try:
            return {r.task.task_id for r in store.registrations()}
        finally:
            await store.close()

    return asyncio.run(read())


def ids_read_beside(path: Path) -> set[str]:
    """IDs of the registrations in the store file of a running daemon, which holds the store's lock: read
    with SQLite alone, read-only (WAL readers do not wait for the writer)."""
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as connection:
        return {row[0] for row in connection.execute("SELECT task_id FROM registrations")}


def polled(daemon: DaemonProcess, product: str, task_id: str) -> bool:
    return daemon.scrape().status(product, task_id) is not None


def test_reload_keeps_state_drops_removed_tasks_and_rejects_bad_configs(
    simulator: SimulatorThread, tmp_path: Path
) -> None:
    path = tmp_path / "config.yaml"
    write_config(path, simulator.url, {"mariadb_flows": [1, 2]})
    with DaemonProcess(["--config.file", str(path), "--web.enable-lifecycle"], env=ENV) as daemon:
        wait_for(
            lambda: polled(daemon, MARIADB.name, "1") and polled(daemon, MARIADB.name, "2"), 15, "first polls"
        )
        since = daemon.scrape().get("tencentcloud_task_status_change_timestamp_seconds", task_id="1")

        write_config(
            path,
            simulator.url,
            {"mariadb_flows": [{"id": 1, "labels": {"team": "dba"}}], "cdb_async_requests": ["cdb-x"]},
        )
        status, body = daemon.request("POST", "/-/reload")
        assert status == 200, body
        samples = daemon.scrape()
        assert samples.all("tencentcloud_task_info", task_id="2") == []  # removed: its series are gone
        assert samples.get("tencentcloud_task_info", task_id="1", team="dba") == 1
        # Still watched: what was learnt survives, status and since-when included.
        assert samples.status(MARIADB.name, "1") == "running"
        assert samples.get("tencentcloud_task_status_change_timestamp_seconds", task_id="1") == since
        assert samples.get("tencentcloud_exporter_config_last_reload_successful") == 1
        wait_for(lambda: polled(daemon, CDB.name, "cdb-x"), 15, "the added task's first poll")

        path.write_text("polling:\n  interval: fast\n")
        status, body = daemon.request("POST", "/-/reload")
        assert status == 500
        assert "polling.interval: expected a duration" in body
        samples = daemon.scrape()
        assert samples.get("tencentcloud_exporter_config_last_reload_successful") == 0
        last = samples.get("tencentcloud_task_last_poll_success_timestamp_seconds", task_id="1")
        wait_for(
            lambda: (
                daemon.scrape().get("tencentcloud_task_last_poll_success_timestamp_seconds", task_id="1")
                != last
            ),
            10,
            "the old config to keep polling after a rejected reload",
        )

        write_config(path, simulator.url, {"mariadb_flows": [1, 2]})
        daemon.signal(signal.SIGHUP)
        wait_for(lambda: polled(daemon, MARIADB.name, "2"), 15, "SIGHUP to bring task 2 back")
        samples = daemon.scrape()
        assert samples.get("tencentcloud_exporter_config_last_reload_successful") == 1
        assert samples.all("tencentcloud_task_info", task_id="cdb-x") == []
        events = daemon.events()
    assert any(e.get("msg", "").startswith("config reload failed") for e in events)


def test_task_api_registers_validates_and_persists_across_kill_9(
    own_simulator: SimulatorThread, tmp_path: Path
) -> None:
    config = write_config(tmp_path / "config.yaml", own_simulator.url, {"mariadb_flows": [1]})
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    storage = tmp_path / "state" / "store.db"
    args = [
        "--config.file",
        str(config),
        "--tasks.api-token-file",
        str(token_file),
        "--storage.path",
        str(storage),
    ]
    with DaemonProcess(args, env=ENV) as daemon:
        assert daemon.request("GET", "/api/v1/tasks")[0] == 401
        assert daemon.request("GET", "/api/v1/tasks", headers={"Authorization": "Bearer wrong"})[0] == 401
        before = own_simulator.stats()["actions"].get("DescribeFlow", {}).get("errors", {})

        bad = [
            ({"product": "rds", "id": 1}, "product: expected one of mariadb, cdb, dcdb"),
            ({"product": MARIADB.name, "id": "12; DROP"}, "id: expected a positive integer flow ID"),
            ({"product": MARIADB.name, "id": -4}, "id: expected a positive integer flow ID"),
            ({"product": CDB.name, "id": "has spaces"}, "id: expected an async request ID string"),
            (
                {"product": CDB.name, "id": "ok-id", "labels": {"job": "x"}},
                "labels.job: label name is reserved",
            ),
            ({"product": MARIADB.name, "id": 5, "extra": 1}, "unknown fields: extra"),
            ({"product": MARIADB.name, "id": "${TENCENTCLOUD_SECRET_KEY}"}, "id: expected"),
            ([1, 2], "expected a JSON object"),
        ]
        for body, reason in bad:
            status, answer = daemon.request("POST", "/api/v1/tasks", body, AUTH)
            assert status == 400, (body, answer)
            assert reason in answer["error"], (body, answer)
            assert CREDS.secret_key not in json.dumps(answer)

        status, answer = daemon.request(
            "POST",
            "/api/v1/tasks",
            {"product": MARIADB.name, "id": 7, "labels": {"pipeline": "deploy-42"}},
            AUTH,
        )
        assert (status, answer["id"], answer["region"]) == (201, "7", "ap-guangzhou")
        assert (
            daemon.request(
                "POST",
                "/api/v1/tasks",
                {"product": MARIADB.name, "id": "7", "labels": {"pipeline": "deploy-42"}},
                AUTH,
            )[0]
            == 200
        )
        status, _ = daemon.request("POST", "/api/v1/tasks", {"product": CDB.name, "id": "cdb-x"}, AUTH)
        assert status == 201
        wait_for(
            lambda: polled(daemon, MARIADB.name, "7") and polled(daemon, CDB.name, "cdb-x"),
            15,
            "registered polls",
        )
        listed = {t["id"]: t for t in daemon.request("GET", "/api/v1/tasks", headers=AUTH)[1]["tasks"]}
        assert listed["7"]["status"] == "running"
        assert listed["7"]["source"] == "api"
        assert listed["7"]["labels"] == {"pipeline": "deploy-42"}
        assert listed["1"]["source"] == "config"
        assert listed["7"]["last_poll"] is not None
        # Nothing malformed ever reached the API.
        after = own_simulator.stats()["actions"]["DescribeFlow"]["errors"]
        assert after == before
        assert ids_read_beside(storage) == {"7", "cdb-x"}  # read while the exporter runs
        daemon.kill()  # no shutdown hook runs

    with DaemonProcess(args, env=ENV) as daemon:
        wait_for(lambda: polled(daemon, MARIADB.name, "7"), 15, "the registered task to survive kill -9")
        assert daemon.scrape().get("tencentcloud_task_info", task_id="7", pipeline="deploy-42") == 1
        assert daemon.request("DELETE", "/api/v1/tasks/mariadb/1", headers=AUTH)[0] == 409
        assert daemon.request("DELETE", "/api/v1/tasks/mariadb/404", headers=AUTH)[0] == 404
        assert daemon.request("DELETE", "/api/v1/tasks/mariadb/7", headers=AUTH)[0] == 204
        assert daemon.scrape().all("tencentcloud_task_info", task_id="7") == []
        ids = {t["id"] for t in daemon.request("GET", "/api/v1/tasks", headers=AUTH)[1]["tasks"]}
        assert ids == {"1", "cdb-x"}
    assert stored_ids(storage) == {"cdb-x"}


def test_finished_registered_tasks_are_forgotten_after_retention(
    simulator: SimulatorThread, tmp_path: Path
) -> None:
    config = write_config(tmp_path / "config.yaml", simulator.url, {})
    storage = tmp_path / "store.db"
    args = ["--config.file", str(config), "--storage.path", str(storage), "--tasks.retention", "1s"]
    with DaemonProcess(args, env={**ENV, "TENCENTCLOUD_EXPORTER_API_TOKEN": TOKEN}) as daemon:
        assert daemon.request("POST", "/api/v1/tasks", {"product": MARIADB.name, "id": 9}, AUTH)[0] == 201
        assert daemon.request("POST", "/api/v1/tasks", {"product": MARIADB.name, "id": 8}, AUTH)[0] == 201
        wait_for(
            lambda: daemon.scrape().status(MARIADB.name, "9") == "success", 15, "the finished task's poll"
        )
        wait_for(
            lambda: (
                {t["id"] for t in daemon.request("GET", "/api/v1/tasks", headers=AUTH)[1]["tasks"]} == {"8"}
            ),
            15,
            "the finished task to be forgotten while the running one stays",
        )
    assert stored_ids(storage) == {"8"}


def test_status_page_renders_in_a_real_browser(simulator: SimulatorThread, tmp_path: Path) -> None:
    chromium = require_binary("chromium")
    simulator.add_task(SimTask(CDB.name, "cdb-info", (Phase(0, "FAILED", 'Disk <full> & "stuck"'),)))
    config = write_config(
        tmp_path / "config.yaml",
        simulator.url,
        {"mariadb_flows": [1, 404], "cdb_async_requests": ["cdb-info"]},
    )
    with DaemonProcess(["--config.file", str(config)], env=ENV) as daemon:
        wait_for(
            lambda: polled(daemon, CDB.name, "cdb-info") and polled(daemon, MARIADB.name, "1"),
            15,
            "first polls",
        )
        wait_for(
            lambda: b"InvalidParameter.FlowNotFound" in daemon.get("/tasks")[1], 15, "the not-found error"
        )
        result = subprocess.run(
            [
                chromium,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                f"--user-data-dir={tmp_path / 'chromium'}",
                "--virtual-time-budget=2000",
                "--dump-dom",
                daemon.url + "/tasks",
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
    dom = result.stdout
    assert '<table id="tasks">' in dom, result.stderr[-2000:]
    rows = [r for r in dom.split("<tr") if "<td>" in r]
    assert len(rows) == 3
    failed = next(r for r in rows if "cdb-info" in r)
    assert 'class="phase-failed"' in failed
    assert 'Disk &lt;full&gt; &amp; "stuck"' in failed  # escaped, rendered as text
    assert "InvalidParameter.FlowNotFound" in next(r for r in rows if "<td>404</td>" in r)
    assert "running" in next(r for r in rows if "<td>1</td>" in r)


def test_sigterm_stops_within_5_seconds_with_calls_in_flight(tmp_path: Path) -> None:
    with SimulatorThread(Simulator([CREDS], latency=30)) as slow:
        for n in range(20):
            slow.add_task(SimTask(MARIADB.name, str(n + 1), (Phase(0, 2),)))
        config = write_config(
            tmp_path / "config.yaml",
            slow.url,
            {"mariadb_flows": list(range(1, 21))},
            timeout="60s",
            interval="100ms",
        )
        storage = tmp_path / "store.db"
        args = ["--config.file", str(config), "--storage.path", str(storage)]
        with DaemonProcess(args, env={**ENV, "TENCENTCLOUD_EXPORTER_API_TOKEN": TOKEN}) as daemon:
            assert (
                daemon.request("POST", "/api/v1/tasks", {"product": CDB.name, "id": "late"}, AUTH)[0] == 201
            )
            wait_for(
                lambda: slow.stats()["actions"].get("DescribeFlow", {}).get("accepted", 0) >= 5,
                15,
                "calls waiting on the slow API",
            )
            started = time.monotonic()
            daemon.signal(signal.SIGTERM)
            assert daemon.wait(10) == 0
            elapsed = time.monotonic() - started
    assert elapsed < 5, f"took {elapsed:.1f}s to stop"
    assert stored_ids(storage) == {"late"}


def test_shards_partition_the_tasks_and_share_the_quota(tmp_path: Path) -> None:
    per_api, count = 120, 3
    # The simulator in a process of its own: it counts requests when it handles them, and three exporters
    # share each quota to within one request (3 x floor(40 / 3) = 39 of 40), so its count must not wait on
    # this process (a thread here would, behind the scrapes' parsing).
    credentials = f"--credentials={CREDS.secret_id}:{CREDS.secret_key}"
    with SimulatorProcess(["--latency", "0.05", credentials]) as sim:
        flows = [1000 + n for n in range(per_api)]
        requests = [f"req-{n:05d}" for n in range(per_api)]
        tasks = [SimTask(MARIADB.name, str(f), (Phase(0, 2),)) for f in flows]
        tasks += [SimTask(CDB.name, r, (Phase(0, "RUNNING"),)) for r in requests]
        sim.add_tasks(tasks)
        watch: dict[str, list[Any]] = {"mariadb_flows": flows, "cdb_async_requests": requests}
        config = write_config(tmp_path / "config.yaml", sim.url, watch, interval="500ms")
        seen: list[set[tuple[str, str]]] = []
        daemons = [
            DaemonProcess(
                ["--config.file", str(config), "--shard.index", str(i), "--shard.count", str(count)], env=ENV
            )
            for i in range(count)
        ]
        try:
            for daemon in daemons:
                daemon.__enter__()

            def accepted(action: str) -> int:
                return int(sim.stats()["actions"].get(action, {}).get("accepted", 0))

            # Every shard at work for two seconds of the shared quota, which binds all along.
            wait_for(
                lambda: accepted("DescribeFlow") >= 40 and accepted("DescribeAsyncRequestInfo") >= 80,
                30,
                "40 DescribeFlow and 80 DescribeAsyncRequestInfo answers",
                interval=0.5,
            )
            for index, daemon in enumerate(daemons):
                samples = daemon.scrape()
                assert samples.get("tencentcloud_exporter_shard_index") == index
                assert samples.get("tencentcloud_exporter_total_shards") == count
                assert (
                    samples.get("tencentcloud_api_rate_limit_requests_per_second", product=CDB.name)
                    == 40 / count
                )
                seen.append(
                    {
                        (labels["product"], labels["task_id"])
                        for labels, _ in samples.all("tencentcloud_task_info")
                    }
                )
        finally:
            for daemon in daemons:
                daemon.__exit__(None, None, None)
        stats = sim.stats()["actions"]
    everything = {(MARIADB.name, str(f)) for f in watch["mariadb_flows"]} | {
        (CDB.name, r) for r in watch["cdb_async_requests"]
    }
    assert set().union(*seen) == everything  # none lost
    assert sum(len(s) for s in seen) == len(everything)  # none twice
    assert all(len(s) > 0.2 * len(everything) for s in seen)  # and roughly balanced
    for action, quota in [("DescribeFlow", 20), ("DescribeAsyncRequestInfo", 40)]:
        assert stats[action]["throttled"] == 0, (action, stats[action])
        assert stats[action]["max_in_window"] <= quota, (action, stats[action])


def test_web_config_guards_the_real_daemon_with_tls_and_basic_auth(
    simulator: SimulatorThread, tmp_path: Path
) -> None:
    ca = trustme.CA()
    server_cert = ca.issue_cert("127.0.0.1", "localhost")
    server_cert.private_key_and_cert_chain_pem.write_to_path(str(tmp_path / "server.pem"))
    password = "correct horse battery staple"
    hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=4)).decode()
    web_config = tmp_path / "web.yml"
    web_config.write_text(
        "tls_server_config:\n  cert_file: server.pem\n  key_file: server.pem\n"
        f"basic_auth_users:\n  prometheus: '{hashed}'\n"
    )
    config = write_config(tmp_path / "config.yaml", simulator.url, {"mariadb_flows": [1]})
    client_tls = ssl.create_default_context()
    ca.configure_trust(client_tls)

    def get(url: str, auth: str | None) -> int:
        request = urllib.request.Request(url)
        if auth is not None:
            request.add_header("Authorization", "Basic " + base64.b64encode(auth.encode()).decode())
        try:
            with urllib.request.urlopen(request, context=client_tls, timeout=10) as response:
                return int(response.status)
        except urllib.error.HTTPError as exc:
            return exc.code

    with DaemonProcess(
        ["--config.file", str(config), "--web.config.file", str(web_config)], env=ENV
    ) as daemon:
        base = daemon.url.replace("http://", "https://")
        for path in ("/", "/metrics", "/-/healthy", "/tasks"):
            assert get(base + path, None) == 401
            assert get(base + path, "prometheus:wrong") == 401
        assert get(base + "/metrics", f"prometheus:{password}") == 200
        with pytest.raises((OSError, http.client.HTTPException)):
            urllib.request.urlopen(daemon.url + "/metrics", timeout=5)  # plain HTTP is not served
        lines = list(daemon.lines)
    assert all(password not in line and hashed not in line for line in lines)

    web_config.write_text(
        "tls_server_config:\n  cert_file: missing.pem\n  key_file: missing.pem\n  bogus: 1\n"
    )
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "exporter",
            "--config.file",
            str(config),
            "--web.config.file",
            str(web_config),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **ENV},
    )
    assert result.returncode == 2
    assert f"{web_config}: tls_server_config.bogus" in result.stderr
