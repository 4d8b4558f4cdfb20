"""Arbitrary Unicode (lone surrogates, control characters, newlines, quotes, backslashes) as label names,
label values, regions and IDs, through the real task API and the config loader: every input is refused
with a clear error, or exported so that promtool and prometheus_client's parser both accept the result."""

from __future__ import annotations

import asyncio
import json
import subprocess
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from exporter.catalogue.products import CDB, MARIADB
from exporter.config.parser import ConfigError, parse_config
from exporter.credentials.chain import StaticProvider
from exporter.credentials.signing import Credentials
from exporter.daemon.core import API_TOKEN_ENV, Daemon, Options
from exporter.exposition.metrics import Metrics
from exporter.exposition.state import TaskState
from exporter.web.app import create_app
from tests.helpers import Samples, require_binary

TOKEN = "hostile-text-token"
NASTY = list('\n\r\t"\\{}=,# \x00\x01\x7f\x85\u2028\u2029\ufeff\ud800\udbff\udc00\udfff\U0001f600aZ_9é-')
hostile = st.text(alphabet=st.sampled_from(NASTY) | st.characters(), max_size=24)
names = st.from_regex(r"[a-z_][a-z0-9_]{0,8}", fullmatch=True) | hostile
regions = st.sampled_from(["ap-guangzhou", "ap-shanghai-fsi"]) | hostile
ids = st.integers(-5, 2**70) | st.from_regex(r"[a-z0-9][a-z0-9-]{0,20}", fullmatch=True) | hostile
labels = st.dictionaries(names, hostile | st.integers() | st.booleans(), max_size=3)


class ServedDaemon:
    """A daemon and its app on a loopback port, run by an event loop in a thread of its own."""

    def __init__(self, tmp_path: Path) -> None:
        # Polls go to a closed port: they fail fast, which also puts error series in the exposition.
        config = parse_config(
            {
                "region": "ap-guangzhou",
                "apis": {
                    MARIADB.name: {"endpoint": "http://127.0.0.1:9"},
                    CDB.name: {"endpoint": "http://127.0.0.1:9"},
                },
                "limits": {"registered_tasks": 100000},
            },
            "hostile.yaml",
            {},
        )
        self.daemon = Daemon(
            config,
            StaticProvider(Credentials("AKIDhostile", "hostile-key"), "test"),
            Options(storage_path=tmp_path / "store.db"),
            env={API_TOKEN_ENV: TOKEN},
        )
        self.loop = asyncio.new_event_loop()
        self.url = ""
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        self.loop.run_until_complete(self._serve())
        self.loop.close()

    async def _serve(self) -> None:
        self._stop = asyncio.Event()
        runner = web.AppRunner(create_app(self.daemon), access_log=None)
        await runner.setup()
        try:
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            host, port = runner.addresses[0][:2]
            self.url = f"http://{host}:{port}"
            self._ready.set()
            await self._stop.wait()
        finally:
            self._ready.set()
            await runner.cleanup()

    def __enter__(self) -> ServedDaemon:
        self._thread.start()
        assert self._ready.wait(30), "the daemon did not start"
        assert self.url, "the daemon did not start"
        return self

    def __exit__(self, *exc: object) -> None:
        if self._stop is not None:
            self.loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)

    def post(self, body: object) -> tuple[int, Any]:
        request = urllib.request.Request(
            self.url + "/api/v1/tasks",
            data=json.dumps(body).encode(),  # ensure_ascii: lone surrogates travel as \ud800 escapes
            headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())

    def metrics(self) -> str:
        with urllib.request.urlopen(self.url + "/metrics", timeout=10) as response:
            return str(response.read().decode("utf-8"))


@pytest.fixture
def served(tmp_path: Path) -> Iterator[ServedDaemon]:
    with ServedDaemon(tmp_path) as daemon:
        yield daemon


def promtool_accepts(text: str) -> None:
    promtool = require_binary("promtool")
    checked = subprocess.run(
        [promtool, "check", "metrics"], input=text.encode(), capture_output=True, timeout=60
    )
    findings = [line for line in checked.stderr.decode().splitlines() if line]
    # Exit 3 is lint findings only (1 is a parse error). The one finding allowed is the style hint on a label
    # name the user chose in camelCase: valid Prometheus, so the exporter does not refuse it.
    style = "label names should be written in 'snake_case' not 'camelCase'"
    clean = checked.returncode == 0 or (checked.returncode == 3 and all(style in f for f in findings))
    assert clean, findings


def exported_exactly(text: str, task_id: str, expected: dict[str, str]) -> None:
    """The task's info series carries every label value exactly as registered."""
    samples = Samples(text)
    found = [labels for labels, _ in samples.all("tencentcloud_task_info", task_id=task_id)]
    assert any(all(labels.get(k) == v for k, v in expected.items()) for labels in found), (expected, found)


@pytest.mark.slow
def test_hostile_registrations_are_refused_or_exported_safely(served: ServedDaemon) -> None:
    accepted = 0

    @given(st.sampled_from([MARIADB.name, CDB.name]), ids, regions, labels)
    @settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    def register(product: str, task_id: object, region: str, task_labels: dict[str, object]) -> None:
        nonlocal accepted
        status, answer = served.post(
            {"product": product, "id": task_id, "region": region, "labels": task_labels}
        )
        if status >= 400:
            assert status in (400, 413, 429), (status, answer)
            assert isinstance(answer["error"], str)
            assert answer["error"]
            return
        assert status in (200, 201), answer
        accepted += 1
        text = served.metrics()  # prometheus_client's parser must accept the whole exposition, every time
        exported_exactly(text, answer["id"], answer["labels"])

    register()
    assert accepted > 0  # the strategies reach the accepting side too
    promtool_accepts(served.metrics())


@pytest.mark.slow
def test_hostile_config_files_are_refused_or_exported_safely() -> None:
    states: dict[tuple[str, str, str], TaskState] = {}

    @given(st.sampled_from(["mariadb_flows", "cdb_async_requests"]), ids, regions, labels)
    @settings(max_examples=400, deadline=None)
    def load(key: str, task_id: object, region: str, task_labels: dict[str, object]) -> None:
        document = {"watch": {key: [{"id": task_id, "region": region, "labels": task_labels}]}}
        try:
            config = parse_config(document, "hostile.yaml", {})
        except ConfigError as exc:
            problems = exc.problems
        else:
            problems = []
        if problems:
            assert all(p.startswith("hostile.yaml: ") for p in problems)
            "\n".join(problems).encode("utf-8")  # the message itself can be printed
            return
        for task in config.tasks:
            state = states[task.key] = TaskState(task)
            exported_exactly(b"".join(state.lines).decode("utf-8"), task.task_id, dict(task.labels))

    load()
    assert states
    promtool_accepts(Metrics().render(states.values()).decode("utf-8"))
