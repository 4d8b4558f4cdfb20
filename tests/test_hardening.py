"""No input takes the exporter down: hostile registrations, config files, API answers and signals.

Each test here failed on the code before the hardening work (the defect it guards against is named).
"""

from __future__ import annotations

import asyncio
import base64
import gc
import json
import signal
import sqlite3
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import aiohttp
import bcrypt
import pytest
import yaml
from aiohttp.test_utils import TestClient

from exporter.catalogue.products import CDB, MARIADB, Product
from exporter.config.parser import PollingConfig, WatchedTask, parse_config
from exporter.credentials.chain import StaticProvider
from exporter.credentials.signing import Credentials
from exporter.daemon.core import API_TOKEN_ENV, Daemon, Options
from exporter.exposition.metrics import Metrics
from exporter.exposition.state import TaskState, TaskStore
from exporter.polling.client import INTERNAL_ERROR, INVALID_RESPONSE, ApiClient, Outcome, classify
from exporter.polling.ratelimit import Ticket, TokenBucket
from exporter.polling.scheduler import LaneScheduler
from exporter.simulator import Phase, SimTask, SimulatorThread
from exporter.web.app import TASK_API_PREFIX, create_app
from exporter.web.config import middlewares, parse_web_config
from tests.conftest import eventually
from tests.fake_metadata import FakeMetadata
from tests.helpers import CREDS, DaemonProcess, Samples, wait_for

TOKEN = "hardening-token-7c1d"
BEARER = {"Authorization": f"Bearer {TOKEN}"}


async def serve(
    aiohttp_client: Any, config: dict[str, Any], tmp_path: Path, **options: Any
) -> tuple[TestClient, Daemon]:  # type: ignore[type-arg]
    daemon = Daemon(
        parse_config({"region": "ap-guangzhou", **config}, "test.yaml", {}),
        StaticProvider(CREDS, "test"),
        Options(storage_path=tmp_path / "store.db", **options),
        env={API_TOKEN_ENV: TOKEN},
    )
    return await aiohttp_client(create_app(daemon)), daemon


async def post(client: TestClient, body: bytes | object) -> tuple[int, dict[str, Any]]:  # type: ignore[type-arg]
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    response = await client.post("/api/v1/tasks", data=data, headers=BEARER)
    return response.status, await response.json()


# ---- defects 1 and 2: text that would break the exposition or the store


async def test_registrations_that_would_break_the_exposition_are_refused(
    aiohttp_client: Any, tmp_path: Path
) -> None:
    client, _ = await serve(aiohttp_client, {}, tmp_path)
    refused = [
        {"product": MARIADB.name, "id": 1, "labels": {"team\n": "x"}},  # re.match(...$) let the newline in
        {"product": MARIADB.name, "id": 2, "region": "ap-guangzhou\n"},
        {"product": CDB.name, "id": "abc\n"},
    ]
    for body in refused:
        status, answer = await post(client, body)
        assert status == 400, (body, answer)
        assert answer["error"]
    # A lone surrogate, as JSON's \ud800 escape carries it: refused before it reaches the store.
    status, answer = await post(
        client, b'{"product": "%s", "id": "x1", "labels": {"team": "\\ud800"}}' % CDB.name.encode()
    )
    assert status == 400
    assert "UTF-8" in answer["error"]
    # The exporter is unharmed: later registrations work and the exposition parses.
    status, _ = await post(client, {"product": CDB.name, "id": "x2", "labels": {"team": 'a"b\\c\nd'}})
    assert status == 201
    samples = Samples(await (await client.get("/metrics")).text())
    assert samples.get("tencentcloud_task_info", task_id="x2", team='a"b\\c\nd') == 1


def test_config_label_names_with_newlines_are_invalid(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text('region: ap-guangzhou\nwatch:\n  mariadb_flows:\n    - {id: 1, labels: {"team\\n": x}}\n')
    checked = subprocess.run(
        [sys.executable, "-m", "exporter", "--config.file", str(path), "--check-config"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert checked.returncode == 2, checked.stdout
    assert "watch.mariadb_flows[0].labels.'team\\n': expected a Prometheus label name" in checked.stderr


def test_endpoint_with_user_info_is_a_config_error_that_hides_the_password(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(
        "region: ap-guangzhou\napis:\n  cdb:\n    endpoint: https://admin:hunter2@cdb.tencentcloudapi.com\n"
    )
    checked = subprocess.run(
        [sys.executable, "-m", "exporter", "--config.file", str(path), "--check-config"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert checked.returncode == 2
    assert "apis.cdb.endpoint: expected a URL without user info" in checked.stderr
    assert "hunter2" not in checked.stderr + checked.stdout


# ---- defect 3: an exception in one poll


class FlakyClient(ApiClient):
    """The real client, raising once per task before answering normally."""

    def __init__(self, session: aiohttp.ClientSession) -> None:
        super().__init__(session, 2.0)
        self.calls = 0

    async def describe(
        self,
        product: Product,
        endpoint: str,
        region: str,
        credentials: Credentials,
        task_id: str,
        ticket: Ticket | None = None,
    ) -> Outcome:
        self.calls += 1
        if self.calls == 1:
            raise RuntimeError("injected failure")
        return await super().describe(product, endpoint, region, credentials, task_id, ticket)


@pytest.fixture
def simulator(shared_simulator: SimulatorThread) -> SimulatorThread:
    """conftest's shared simulator with a finished flow (5105) and a running one (5107)."""
    shared_simulator.add_task(SimTask(MARIADB.name, "5105", (Phase(0, 0),)))
    shared_simulator.add_task(SimTask(MARIADB.name, "5107", (Phase(0, 2),)))
    return shared_simulator


async def test_an_exception_in_a_poll_is_counted_and_the_task_polled_again(
    simulator: SimulatorThread, caplog: pytest.LogCaptureFixture
) -> None:
    url = simulator.url
    store = TaskStore()
    async with aiohttp.ClientSession() as session:
        client = FlakyClient(session)
        scheduler = LaneScheduler(
            MARIADB,
            url,
            TokenBucket(50),
            client,
            StaticProvider(CREDS, "test"),
            store,
            Metrics(),
            PollingConfig(interval=0.05, finished_interval=60, max_backoff=0.1),
        )
        scheduler.sync([WatchedTask(MARIADB.name, "5105", "ap-guangzhou")], spread=False)
        worker = asyncio.create_task(scheduler.run())
        key = (MARIADB.name, "ap-guangzhou", "5105")
        try:
            await eventually(
                lambda: (s := store.get(key)) is not None and s.status is not None, 10, "a status"
            )
        finally:
            worker.cancel()
            await asyncio.gather(worker, return_exceptions=True)
    state = store.get(key)
    assert state is not None
    assert state.status == "success"
    assert state.errors == {INTERNAL_ERROR: 1}
    assert b'code="Exporter.InternalError"} 1' in b"".join(state.lines)
    logged = [r for r in caplog.records if "unexpected error while polling" in r.getMessage()]
    assert len(logged) == 1
    assert logged[0].exc_info is not None


def test_deeply_nested_or_unencodable_api_answers_are_handled() -> None:
    nested = b'{"Response": ' + b"[" * 200_000 + b"]" * 200_000 + b"}"
    assert classify(200, nested, MARIADB).code == INVALID_RESPONSE  # was RecursionError, ending the poll
    answer = json.dumps(
        {"Response": {"Status": "RUNNING\ud800", "Info": "bad \udfff text", "RequestId": "r"}}
    )
    outcome = classify(200, answer.encode(), CDB)
    assert outcome.observation is not None
    state = TaskState(WatchedTask(CDB.name, "x", "ap-guangzhou"))
    state.observe(outcome.observation, time.time())  # rendering encodes the text: it must be valid UTF-8
    samples = Samples(b"".join(state.lines).decode())
    assert samples.get("tencentcloud_task_info", info="bad \ufffd text") == 1


# ---- defect 4: the task API beside basic auth


async def test_task_api_works_when_basic_auth_guards_the_endpoints(
    aiohttp_client: Any, tmp_path: Path
) -> None:
    hashed = bcrypt.hashpw(b"scrape-pw", bcrypt.gensalt(rounds=4)).decode()
    web_config = parse_web_config({"basic_auth_users": {"prometheus": hashed}}, "web.yml", tmp_path)
    daemon = Daemon(
        parse_config({"region": "ap-guangzhou"}, "test.yaml", {}),
        StaticProvider(CREDS, "test"),
        Options(storage_path=tmp_path / "store.db"),
        env={API_TOKEN_ENV: TOKEN},
    )
    client = await aiohttp_client(
        create_app(daemon, middlewares(web_config, bearer_paths=(TASK_API_PREFIX,)))
    )
    basic = {"Authorization": "Basic " + base64.b64encode(b"prometheus:scrape-pw").decode()}
    body = {"product": CDB.name, "id": "with-basic-auth"}
    assert (await client.post("/api/v1/tasks", json=body, headers=BEARER)).status == 201
    assert (await client.get("/api/v1/tasks", headers=BEARER)).status == 200
    # Basic auth alone does not open the task API, nor a bearer token the other endpoints.
    assert (await client.post("/api/v1/tasks", json=body, headers=basic)).status == 401
    assert (await client.get("/metrics", headers=BEARER)).status == 401
    assert (
        await client.post("/api/v1/tasks", json=body, headers={"Authorization": "Bearer nope"})
    ).status == 401
    assert (await client.get("/metrics", headers=basic)).status == 200


# ---- defect 6: limits, answered with clear errors


async def test_limits_are_answered_with_clear_json_errors(aiohttp_client: Any, tmp_path: Path) -> None:
    limits = {
        "labels_per_task": 2,
        "label_name_length": 8,
        "label_value_length": 10,
        "registered_tasks": 2,
        "request_body_bytes": 400,
    }
    client, _ = await serve(aiohttp_client, {"limits": limits}, tmp_path)
    cases = [
        (
            {"product": CDB.name, "id": "a", "labels": {"a": "1", "b": "2", "c": "3"}},
            400,
            "limits.labels_per_task",
        ),
        ({"product": CDB.name, "id": "a", "labels": {"muchtoolong": "1"}}, 400, "at most 8 characters"),
        ({"product": CDB.name, "id": "a", "labels": {"a": "x" * 11}}, 400, "at most 10 characters"),
        ({"product": CDB.name, "id": "a", "labels": {"a": "x" * 500}}, 413, "limits.request_body_bytes"),
    ]
    for body, status, reason in cases:
        got, answer = await post(client, body)
        assert (got, reason in answer["error"]) == (status, True), answer
    assert (await post(client, b"[" * 5000 + b"]" * 5000))[0] == 413
    deep = b"[" * 150 + b"]" * 150
    got, answer = await post(client, deep)  # was a 500 (RecursionError) with a big enough body
    assert got == 400
    assert "nested" in answer["error"]
    for task_id in ("a", "b"):
        assert (await post(client, {"product": CDB.name, "id": task_id}))[0] == 201
    got, answer = await post(client, {"product": CDB.name, "id": "c"})
    assert got == 429
    assert "limits.registered_tasks" in answer["error"]
    assert (await post(client, {"product": CDB.name, "id": "a", "labels": {"x": "1"}}))[0] == 200  # not new


# ---- defect 8: smaller ones


async def test_reload_over_http_needs_enable_lifecycle(aiohttp_client: Any, tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({"region": "ap-guangzhou"}))
    client, _ = await serve(aiohttp_client, {}, tmp_path, config_path=path)
    response = await client.post("/-/reload")
    assert response.status == 403
    assert "--web.enable-lifecycle" in await response.text()
    enabled, _ = await serve(aiohttp_client, {}, tmp_path / "b", config_path=path, enable_lifecycle=True)
    assert (await enabled.post("/-/reload")).status == 200


async def test_reload_resizes_the_concurrency_cap(aiohttp_client: Any, tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    # Unreachable endpoint: the lane exists for the watched flow; what it answers does not matter here.
    base = {"region": "ap-guangzhou", "watch": {"mariadb_flows": [1]}}
    apis = {MARIADB.name: {"endpoint": "http://127.0.0.1:9"}}
    path.write_text(yaml.safe_dump({**base, "apis": apis}))
    _, daemon = await serve(aiohttp_client, {**base, "apis": apis}, tmp_path, config_path=path)
    assert daemon._scheduler is not None
    [lane] = daemon._scheduler.lanes.values()  # the one watched flow's
    before = lane.concurrency
    apis[MARIADB.name]["rate_limit"] = 40
    path.write_text(yaml.safe_dump({**base, "apis": apis, "polling": {"timeout": "20s"}}))
    await daemon.reload()
    # rate x timeout: 20 x 10 s before, 40 x 20 s after (it stayed at the first figure before the fix).
    [after] = daemon._scheduler.lanes.values()
    assert after is lane
    assert (before, lane.concurrency) == (201, 801)


def test_a_bad_entry_in_the_state_file_exits_2_naming_it(tmp_path: Path) -> None:
    legacy = tmp_path / "registered-tasks.json"
    tasks = [
        {"service": CDB.name, "id": "fine", "region": "ap-guangzhou", "labels": {}, "registered_at": 1.0},
        {"service": "nosuch", "id": "1", "region": "ap-guangzhou", "labels": {}, "registered_at": 1.0},
    ]
    legacy.write_text(json.dumps({"version": 1, "tasks": tasks}))
    config = tmp_path / "config.yaml"
    config.write_text(
        yaml.safe_dump({"region": "ap-guangzhou", "credentials": {"secret_id": "a", "secret_key": "b"}})
    )
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "exporter",
            "--config.file",
            str(config),
            "--tasks.state-file",
            str(legacy),
            "--storage.path",
            str(tmp_path / "store.db"),
            "--web.listen-address",
            "127.0.0.1:0",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 2, run.stderr
    assert "nosuch" in run.stderr
    assert "Traceback" not in run.stderr
    assert legacy.exists()  # nothing migrated, nothing lost


def _config(path: Path, url: str) -> list[str]:
    document = {
        "credentials": {"secret_id": CREDS.secret_id, "secret_key": CREDS.secret_key},
        "region": "ap-guangzhou",
        "apis": {MARIADB.name: {"endpoint": url}, CDB.name: {"endpoint": url}},
        "polling": {"interval": "200ms", "timeout": "2s"},
        "watch": {"mariadb_flows": [5107]},
    }
    path.write_text(yaml.safe_dump(document))
    return ["--config.file", str(path)]


def test_sighup_during_shutdown_does_not_kill_the_process(simulator: SimulatorThread, tmp_path: Path) -> None:
    with DaemonProcess(_config(tmp_path / "config.yaml", simulator.url)) as daemon:
        wait_for(lambda: daemon.scrape().status(MARIADB.name, "5107") is not None, 15, "the first poll")
        daemon.signal(signal.SIGTERM)
        deadline = time.monotonic() + 10
        # SIGHUPs for as long as the process lives, into every stage of shutdown.
        while daemon.returncode is None and time.monotonic() < deadline:
            daemon.signal(signal.SIGHUP)
            time.sleep(0.002)  # paces the signals; not a synchronisation
        assert daemon.wait(10) == 0


def test_status_first_seen_time_survives_a_restart(simulator: SimulatorThread, tmp_path: Path) -> None:
    args = [*_config(tmp_path / "config.yaml", simulator.url), "--storage.path", str(tmp_path / "s.db")]
    with DaemonProcess(args) as daemon:
        wait_for(lambda: daemon.scrape().status(MARIADB.name, "5107") == "running", 15, "the first poll")
        since = daemon.scrape().get("tencentcloud_task_status_change_timestamp_seconds", task_id="5107")
        daemon.kill()  # no clean shutdown: what the store holds must already be on disk
    with DaemonProcess(args) as daemon:
        wait_for(
            lambda: daemon.scrape().status(MARIADB.name, "5107") == "running", 15, "the first poll again"
        )
        again = daemon.scrape().get("tencentcloud_task_status_change_timestamp_seconds", task_id="5107")
    assert since is not None
    assert again == since


def test_registrations_write_a_bounded_amount_each(simulator: SimulatorThread, tmp_path: Path) -> None:
    io = Path("/proc/self/io")
    if not io.exists():
        pytest.skip("needs /proc/<pid>/io (Linux)")
    args = [*_config(tmp_path / "config.yaml", simulator.url), "--storage.path", str(tmp_path / "s.db")]
    with DaemonProcess(args, env={API_TOKEN_ENV: TOKEN}) as daemon:
        pid = daemon.pid

        def written() -> int:
            fields = dict(line.split(": ") for line in Path(f"/proc/{pid}/io").read_text().splitlines())
            return int(fields["wchar"])

        count = 600
        before = written()
        for n in range(count):
            status, _ = daemon.request(
                "POST", "/api/v1/tasks", {"product": CDB.name, "id": f"bulk-{n:05d}"}, headers=BEARER
            )
            assert status == 201
        per_registration = (written() - before) / count
    # Rewriting the whole JSON file on each change wrote ~count/2 x 150 bytes a registration (~45 KB here,
    # growing with the registry); a row insert writes a few pages of the write-ahead log.
    assert per_registration < 20_000, per_registration


# ---- lifecycle: one owner closes everything once


async def test_start_credential_reloads_and_stop_leave_nothing_open(tmp_path: Path) -> None:
    loop = asyncio.get_running_loop()
    loop.set_debug(True)
    reported: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _, context: reported.append(context))
    path = tmp_path / "config.yaml"
    async with FakeMetadata() as metadata:

        def write(session_name: str) -> None:
            credentials = {"metadata_url": metadata.url, "role_session_name": session_name}
            path.write_text(yaml.safe_dump({"region": "ap-guangzhou", "credentials": credentials}))

        write("first")
        daemon = Daemon(
            parse_config(yaml.safe_load(path.read_text()), str(path), {}),
            None,  # the daemon opens (and so owns) the credential chain
            Options(config_path=path, storage_path=tmp_path / "store.db"),
            env={},
        )
        gc.collect()  # what earlier tests left behind is not this test's to report
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ResourceWarning)
            await daemon.start()
            for name in ("second", "third", "fourth"):
                write(name)
                await daemon.reload()
            await daemon.stop()
            await daemon.stop()  # twice is harmless
            gc.collect()
        assert metadata.fetches >= 4  # each reload opened a provider of its own
    leftover = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    assert leftover == []
    assert [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)] == []
    assert [c for c in reported if "Unclosed" in str(c.get("message"))] == []


async def test_a_failed_start_closes_what_it_opened(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    path.write_bytes(b"SQLite format 3\x00" + b"\xff" * 4000)  # a corrupt store
    closed: list[bool] = []

    class Provider(StaticProvider):
        async def close(self) -> None:
            closed.append(True)

    daemon = Daemon(
        parse_config({"region": "ap-guangzhou"}, "t.yaml", {}),
        Provider(CREDS, "test"),
        Options(storage_path=path),
        env={},
    )
    with pytest.raises(Exception, match=str(path)):
        await daemon.start()
    await daemon.stop()
    assert closed == [True]  # closed once, by the failed start
    with pytest.raises(sqlite3.DatabaseError):
        sqlite3.connect(path).execute("select * from sqlite_master").fetchall()  # left as it was
