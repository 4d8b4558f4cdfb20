"""Fleet conventions of the command line: promslog log keys and --log.level, several --web.listen-address,
--web.systemd-socket and --web.telemetry-path."""

from __future__ import annotations

import argparse
import json
import logging
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from exporter import log as logsetup
from exporter.cli import main as cli
from exporter.config.parser import parse_config
from exporter.credentials.chain import StaticProvider
from exporter.credentials.signing import Credentials
from exporter.daemon.core import Daemon
from exporter.web import httpserver
from exporter.web.app import create_app, telemetry_path_flag
from tests.helpers import DaemonProcess, Samples, wait_for


def run_exporter(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "exporter", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
    )


# --- logs -------------------------------------------------------------------------------------------------


def _record(level: int, message: str, **fields: object) -> logging.LogRecord:
    record = logging.LogRecord("exporter.test", level, "/src/exporter/daemon/core.py", 42, message, (), None)
    record.fields = fields
    record.created = 1795428000.25  # 2026-11-23T10:00:00.250Z
    return record


def test_log_keys_follow_promslog() -> None:
    event = json.loads(logsetup.JsonFormatter().format(_record(logging.WARNING, "slow", task_id="7")))
    assert list(event) == ["time", "level", "source", "msg", "logger", "task_id"]
    assert event == {
        "time": "2026-11-23T10:00:00.250Z",
        "level": "warn",
        "source": "core.py:42",
        "msg": "slow",
        "logger": "exporter.test",
        "task_id": "7",
    }
    line = logsetup.LogfmtFormatter().format(_record(logging.INFO, "task poll failed", error="a b"))
    assert line == (
        "time=2026-11-23T10:00:00.250Z level=info source=core.py:42 "
        'msg="task poll failed" logger=exporter.test error="a b"'
    )


def test_log_levels_are_promslog_names() -> None:
    names = [logsetup.level_name(n) for n in (5, logging.DEBUG, logging.INFO, logging.WARNING, logging.ERROR)]
    assert names == ["debug", "debug", "info", "warn", "error"]
    assert logsetup.level_name(logging.CRITICAL) == "error"


def test_a_field_named_like_a_leading_key_does_not_replace_it() -> None:
    record = _record(logging.INFO, "credentials source chosen", source="CVM role", time="t", msg="m")
    event = json.loads(logsetup.JsonFormatter().format(record))
    assert event["source"] == "core.py:42"
    assert event["msg"] == "credentials source chosen"
    assert (event["field_source"], event["field_time"], event["field_msg"]) == ("CVM role", "t", "m")


@pytest.mark.parametrize(
    ("flag", "level"),
    [
        ("debug", logging.DEBUG),
        ("info", logging.INFO),
        ("warn", logging.WARNING),
        ("warning", logging.WARNING),
        ("error", logging.ERROR),
    ],
)
def test_log_level_flag(flag: str, level: int) -> None:
    args = cli.build_parser().parse_args(["--log.level", flag])
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        logsetup.setup(args.log_level, "logfmt")
        assert root.level == level
    finally:
        root.handlers[:], root.level = saved[0], saved[1]


def test_unknown_log_level_is_refused() -> None:
    result = run_exporter("--log.level", "fatal", "--check-config")
    assert result.returncode == 2
    assert "invalid choice: 'fatal'" in result.stderr


# --- listening: several addresses, all or nothing; systemd sockets ------------------------------------------


@pytest.fixture
def busy_port() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield int(sock.getsockname()[1])


def test_bind_is_all_or_nothing(busy_port: int, monkeypatch: pytest.MonkeyPatch) -> None:
    opened: list[socket.socket] = []
    create_server = socket.create_server

    def recording(*args: Any, **kwargs: Any) -> socket.socket:
        opened.append(create_server(*args, **kwargs))
        return opened[-1]

    monkeypatch.setattr(socket, "create_server", recording)
    with pytest.raises(httpserver.ListenError) as caught:
        httpserver.bind([("127.0.0.1", 0), ("127.0.0.1", 0), ("127.0.0.1", busy_port)])
    assert str(caught.value).startswith(f"--web.listen-address 127.0.0.1:{busy_port}: ")
    assert "in use" in str(caught.value)
    assert len(opened) == 2
    assert all(sock.fileno() == -1 for sock in opened), "the sockets bound before are closed"


def test_every_listen_address_is_served_and_the_telemetry_path_moves() -> None:
    args = [
        "--demo",
        "--web.listen-address",
        "127.0.0.2:0",
        "--web.listen-address=127.0.0.3:0",
        "--web.telemetry-path",
        "/exporter/metrics",
    ]
    with DaemonProcess(args) as daemon:  # the helper adds --web.listen-address 127.0.0.1:0 first

        def listening() -> list[str]:
            return [e["address"] for e in daemon.events() if e.get("msg") == "listening"]

        wait_for(lambda: len(listening()) == 3, 10, "a listening line for each address")
        addresses = listening()
        assert [a.rsplit(":", 1)[0] for a in addresses] == ["127.0.0.1", "127.0.0.2", "127.0.0.3"]
        for address in addresses:
            daemon.url = f"http://{address}"
            assert daemon.get("/-/healthy")[0] == 200
            status, body = daemon.get("/exporter/metrics")
            assert status == 200
            assert b"tencentcloud_exporter_build_info" in body
            assert daemon.get("/metrics")[0] == 404
        assert b'href="exporter/metrics"' in daemon.get("/")[1]
        assert b'href="exporter/metrics"' in daemon.get("/tasks")[1]
        # One cap for every address together.
        assert Samples(daemon.get("/exporter/metrics")[1].decode()).get(
            "tencentcloud_exporter_http_max_connections"
        )


def test_an_address_that_cannot_be_bound_exits_2_naming_it(busy_port: int) -> None:
    result = run_exporter(
        "--demo",
        "--web.listen-address",
        "127.0.0.1:0",
        "--web.listen-address",
        f"127.0.0.1:{busy_port}",
        "--log.format",
        "json",
    )
    assert result.returncode == 2
    assert f"error: --web.listen-address 127.0.0.1:{busy_port}: Address already in use" in result.stderr
    assert '"msg": "listening"' not in result.stderr
    assert "Traceback" not in result.stderr


# systemd hands the sockets over at descriptor 3 and sets LISTEN_PID to the pid it then execs: this wrapper
# does the same with the socket the test passes (pass_fds), then execs the exporter in the same process.
SOCKET_ACTIVATION = """
import os, sys
fd = int(sys.argv[1])
os.dup2(fd, 3)
if fd != 3:
    os.close(fd)
os.environ["LISTEN_FDS"] = "1"
os.environ["LISTEN_PID"] = os.environ.get("TEST_LISTEN_PID") or str(os.getpid())
os.execv(sys.executable, [sys.executable, "-m", "exporter", *sys.argv[2:]])
"""


def _socket_activated(
    sock: socket.socket, *args: str, env: dict[str, str] | None = None
) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", SOCKET_ACTIVATION, str(sock.fileno()), *args],
        pass_fds=(sock.fileno(),),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
    )


def _first_listening(process: subprocess.Popen[str], lines: list[str]) -> dict[str, Any] | None:
    assert process.stderr is not None
    found: list[dict[str, Any]] = []

    def read() -> None:
        assert process.stderr is not None
        for line in process.stderr:
            lines.append(line)
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if event.get("msg") == "listening":
                found.append(event)
                return

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(30)
    return found[0] if found else None


def test_systemd_socket_activation(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        process = _socket_activated(
            sock,
            "--demo",
            "--web.systemd-socket",
            "--web.listen-address",
            "127.0.0.1:1",  # ignored, as the exporter-toolkit does
            "--log.format",
            "json",
            "--storage.path",
            str(tmp_path / "store.db"),
        )
    lines: list[str] = []
    try:
        event = _first_listening(process, lines)
        assert event is not None, "".join(lines)
        assert event["address"] == f"127.0.0.1:{port}"
        result = run_exporter("healthcheck", "--web.listen-address", f"127.0.0.1:{port}")
        assert result.returncode == 0, result.stderr
    finally:
        process.terminate()
        process.communicate(timeout=10)
    assert process.returncode == 0
    assert any("--web.listen-address ignored" in line for line in lines)


def test_systemd_sockets_meant_for_another_process_are_refused(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        process = _socket_activated(sock, "--demo", "--web.systemd-socket", env={"TEST_LISTEN_PID": "1"})
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 2
    assert "error: --web.systemd-socket: the sockets were passed to process '1' (LISTEN_PID)" in stderr


def test_systemd_sockets_checks() -> None:
    with pytest.raises(httpserver.ListenError, match="LISTEN_PID and LISTEN_FDS are not set"):
        httpserver.systemd_sockets({}, 100)
    with pytest.raises(httpserver.ListenError, match="expected LISTEN_FDS to be a number"):
        httpserver.systemd_sockets({"LISTEN_PID": "100", "LISTEN_FDS": "x"}, 100)


# --- --web.telemetry-path ---------------------------------------------------------------------------------


async def test_metrics_only_at_the_telemetry_path(aiohttp_client: Any) -> None:
    config = parse_config({}, "empty.yaml", {})
    daemon = Daemon(config, StaticProvider(Credentials("id", "key"), "test"))
    client: TestClient = await aiohttp_client(create_app(daemon, telemetry_path="/probe:1/metrics"))  # type: ignore[type-arg]
    assert (await client.get("/probe:1/metrics")).status == 200
    assert (await client.get("/metrics")).status == 404
    page = await (await client.get("/")).text()
    assert 'href="./probe:1/metrics"' in page, "relative, and not read as a URL scheme"


@pytest.mark.parametrize("good", ["/metrics", "/federate/metrics", "/m", "/metrics/", "/tasks-metrics"])
def test_telemetry_path_accepted(good: str) -> None:
    assert telemetry_path_flag(good) == good


@pytest.mark.parametrize(
    "bad",
    ["metrics", "/", "/-/healthy", "/api/v1/metrics", "/tasks", "/a b", "/m?x", "/a//b", "/a/../b", "/{x}"],
)
def test_telemetry_path_refused(bad: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match=r"expected|taken"):
        telemetry_path_flag(bad)


def test_a_refused_telemetry_path_exits_2() -> None:
    result = run_exporter("--web.telemetry-path", "/-/healthy", "--check-config")
    assert result.returncode == 2
    assert "argument --web.telemetry-path: '/-/healthy' is taken" in result.stderr
