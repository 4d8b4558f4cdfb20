"""Fleet conventions of the command line: --version and build info, promslog log keys and --log.level,
several --web.listen-address, --web.systemd-socket, --web.telemetry-path, the healthcheck subcommand, and the
Dockerfile that installs the locked dependencies and records the build."""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import re
import shutil
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import bcrypt
import pytest
import trustme
from aiohttp.test_utils import TestClient
from prometheus_client import generate_latest

from exporter import __version__, buildinfo, cli, cliflags, httpserver
from exporter import healthcheck as healthchecks
from exporter import log as logsetup
from exporter.buildinfo import UNKNOWN, BuildInfo
from exporter.config import parse_config
from exporter.credentials import StaticProvider
from exporter.daemon import Daemon
from exporter.metrics import Metrics
from exporter.signing import Credentials
from exporter.web import create_app, telemetry_path_flag
from tests.helpers import DaemonProcess, Samples, require_binary, wait_for

REPO = Path(__file__).resolve().parent.parent
SHA1 = "0123456789abcdef0123456789abcdef01234567"
SHA2 = "89abcdef0123456789abcdef0123456789abcdef"
PASSWORD = "healthcheck-Pa55word"


def run_exporter(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "exporter", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
    )


# --- --version and build information ---------------------------------------------------------------------


def test_version_prints_what_prometheus_programs_print() -> None:
    result = run_exporter("--version")
    assert result.returncode == 0, result.stderr
    info = buildinfo.read()  # the package the subprocess runs too; in a clone, read from its .git
    python = re.escape(platform.python_version())
    expected = (
        rf"tencentcloud-task-exporter, version {re.escape(__version__)} "
        rf"\(branch: {re.escape(info.branch)}, revision: {info.revision}\)\n"
        rf"  build user:       {re.escape(info.build_user)}\n"
        rf"  build date:       {re.escape(info.build_date)}\n"
        rf"  python version:   {python}\n"
        r"  platform:         [a-z]+/[a-z0-9]+\n"
    )
    assert re.fullmatch(expected, result.stdout), result.stdout
    assert re.fullmatch(r"[0-9a-f]{40}|unknown", info.revision)
    checkout = buildinfo.PACKAGE_DIR.parent
    if shutil.which("git") and (checkout / ".git").exists():
        git = subprocess.run(
            ["git", "-C", str(checkout), "rev-parse", "HEAD"], capture_output=True, text=True
        )
        if git.returncode == 0:
            assert info.revision == git.stdout.strip(), "read from .git without git, the same answer"
    # The subcommand's parser has the flag too.
    assert run_exporter("healthcheck", "--version").stdout == result.stdout


def test_version_text_layout() -> None:
    info = BuildInfo("9.8.7", SHA1, "release-9.8", "ci@builder", "20261123-10:00:00")
    lines = buildinfo.version_text(info).splitlines()
    assert lines[:3] == [
        f"tencentcloud-task-exporter, version 9.8.7 (branch: release-9.8, revision: {SHA1})",
        "  build user:       ci@builder",
        "  build date:       20261123-10:00:00",
    ]
    assert lines[3] == f"  python version:   {platform.python_version()}"
    assert lines[4] == f"  platform:         {buildinfo.platform_name()}"
    assert len(lines) == 5


def fake_checkout(root: Path, head: str | bytes) -> Path:
    """A directory with a package in it and a .git beside it; returns the package directory."""
    git = root / ".git"
    (git / "refs" / "heads").mkdir(parents=True)
    (git / "HEAD").write_bytes(head if isinstance(head, bytes) else head.encode())
    package = root / "exporter"
    package.mkdir()
    return package


def test_checkout_with_a_loose_ref(tmp_path: Path) -> None:
    package = fake_checkout(tmp_path, "ref: refs/heads/feature/fleet\n")
    (tmp_path / ".git" / "refs" / "heads" / "feature").mkdir()
    (tmp_path / ".git" / "refs" / "heads" / "feature" / "fleet").write_text(SHA1 + "\n")
    (tmp_path / ".git" / "packed-refs").write_text(f"{SHA2} refs/heads/feature/fleet\n")  # older: loose wins
    assert buildinfo.read(package, "1.0.0") == BuildInfo("1.0.0", SHA1, "feature/fleet")


def test_checkout_with_packed_refs(tmp_path: Path) -> None:
    package = fake_checkout(tmp_path, "ref: refs/heads/main\n")
    (tmp_path / ".git" / "packed-refs").write_text(
        "# pack-refs with: peeled fully-peeled sorted \n"
        f"{SHA2} refs/heads/other\n"
        f"{SHA1} refs/heads/main\n"
        f"{SHA2} refs/tags/v1\n"
        f"^{SHA2}\n"
    )
    assert buildinfo.git_head(package.parent) == (SHA1, "main")


def test_detached_head_and_unborn_branch(tmp_path: Path) -> None:
    detached = fake_checkout(tmp_path / "a", SHA1 + "\n")
    assert buildinfo.git_head(detached.parent) == (SHA1, "HEAD")
    unborn = fake_checkout(tmp_path / "b", "ref: refs/heads/main\n")  # `git init`, nothing committed
    assert buildinfo.git_head(unborn.parent) == (UNKNOWN, "main")


def test_worktree_reads_branches_from_the_common_dir(tmp_path: Path) -> None:
    main = tmp_path / "main"
    fake_checkout(main, "ref: refs/heads/main\n")
    (main / ".git" / "packed-refs").write_text(f"{SHA2} refs/heads/topic\n")
    worktree_git = main / ".git" / "worktrees" / "topic"
    worktree_git.mkdir(parents=True)
    (worktree_git / "HEAD").write_text("ref: refs/heads/topic\n")
    (worktree_git / "commondir").write_text("../..\n")
    checkout = tmp_path / "topic"
    checkout.mkdir()
    (checkout / ".git").write_text(f"gitdir: {worktree_git}\n")
    assert buildinfo.git_head(checkout) == (SHA2, "topic")


@pytest.mark.parametrize(
    "head",
    [
        b"",
        b"\xff\xfe\x00garbage",
        b"ref: refs/heads/../../../../etc/passwd\n",
        b"ref: ../HEAD\n",
        b"ref: refs/heads/a b\n",
        b"ref: refs/heads/main.lock\n",
        b"not a ref at all\n",
        SHA1[:20].encode(),
        b"x" * 200_000,
    ],
)
def test_odd_heads_read_as_unknown(tmp_path: Path, head: bytes) -> None:
    package = fake_checkout(tmp_path, head)
    assert buildinfo.read(package, "1.0.0") == BuildInfo("1.0.0")


@pytest.mark.parametrize(
    ("ref_content", "expected"),
    [
        (b"garbage\n", UNKNOWN),
        (b"\xff\xff", UNKNOWN),
        (b"ref: refs/heads/main\n", UNKNOWN),  # a symbolic ref pointing at itself
        (b"ref: refs/heads/real\n", SHA1),  # one that leads somewhere
    ],
)
def test_odd_refs_read_as_unknown(tmp_path: Path, ref_content: bytes, expected: str) -> None:
    package = fake_checkout(tmp_path, "ref: refs/heads/main\n")
    (tmp_path / ".git" / "refs" / "heads" / "main").write_bytes(ref_content)
    (tmp_path / ".git" / "refs" / "heads" / "real").write_text(SHA1)
    assert buildinfo.git_head(package.parent) == (expected, "main")


def test_odd_checkouts_read_as_unknown(tmp_path: Path) -> None:
    no_git = tmp_path / "plain" / "exporter"
    no_git.mkdir(parents=True)
    assert buildinfo.read(no_git, "1.0.0") == BuildInfo("1.0.0")
    head_is_a_directory = fake_checkout(tmp_path / "dir", "")
    (tmp_path / "dir" / ".git" / "HEAD").unlink()
    (tmp_path / "dir" / ".git" / "HEAD").mkdir()
    assert buildinfo.git_head(head_is_a_directory.parent) == (UNKNOWN, UNKNOWN)
    dangling = tmp_path / "dangling"
    dangling.mkdir()
    (dangling / ".git").write_text("gitdir: /nonexistent/worktree\n")
    assert buildinfo.git_head(dangling) == (UNKNOWN, UNKNOWN)
    packed_garbage = fake_checkout(tmp_path / "packed", "ref: refs/heads/main\n")
    (tmp_path / "packed" / ".git" / "packed-refs").write_bytes(
        b"\xff\xfe refs/heads/main\nzz refs/heads/main\n"
    )
    assert buildinfo.git_head(packed_garbage.parent) == (UNKNOWN, "main")


def write_build_info(package: Path, **fields: object) -> None:
    (package / buildinfo.BUILD_INFO_FILE).write_text(json.dumps(fields))


def test_build_info_file_comes_before_the_checkout(tmp_path: Path) -> None:
    package = fake_checkout(tmp_path, SHA2 + "\n")
    write_build_info(
        package,
        version="1.0.0",
        revision=SHA1,
        branch="main",
        build_user="ci@builder",
        build_date="20261123-10:00:00",
    )
    assert buildinfo.read(package, "1.0.0") == BuildInfo(
        "1.0.0", SHA1, "main", "ci@builder", "20261123-10:00:00"
    )
    # A file left from another version says nothing about this one: the checkout answers.
    assert buildinfo.read(package, "2.0.0") == BuildInfo("2.0.0", SHA2, "HEAD")


@pytest.mark.parametrize(
    "content",
    ["", "{", "[]", '"text"', "null", '{"version": 1}', "x" * 100_000, "[" * 100_000],
)
def test_garbage_build_info_file_is_ignored(tmp_path: Path, content: str) -> None:
    package = tmp_path / "exporter"
    package.mkdir()
    (package / buildinfo.BUILD_INFO_FILE).write_text(content)
    assert buildinfo.read(package, "1.0.0") == BuildInfo("1.0.0")


def test_odd_fields_of_the_build_info_file_read_as_unknown(tmp_path: Path) -> None:
    package = tmp_path / "exporter"
    package.mkdir()
    write_build_info(
        package, version="1.0.0", revision="not-hex", branch=["main"], build_user="a\nb", build_date="today"
    )
    assert buildinfo.read(package, "1.0.0") == BuildInfo("1.0.0")


def test_image_build_writes_the_build_info(tmp_path: Path) -> None:
    # What the Dockerfile's `python -m exporter.buildinfo` does with the build arguments.
    target = tmp_path / buildinfo.BUILD_INFO_FILE
    env = {
        "VERSION": __version__,
        "REVISION": SHA1.upper(),
        "BRANCH": "main",
        "BUILD_DATE": "2026-11-23T18:30:05+08:00",
        "BUILD_USER": "ci@builder",
    }
    result = run_exporter_module("exporter.buildinfo", str(target), env=env)
    assert result.returncode == 0, result.stderr
    expected = BuildInfo(__version__, SHA1, "main", "ci@builder", "20261123-10:30:05")
    assert buildinfo.read(tmp_path, __version__) == expected
    assert buildinfo.version_text(expected) == result.stdout
    # Nothing given: every field unknown, still a valid file.
    empty = {k: "" for k in env}
    assert run_exporter_module("exporter.buildinfo", str(target), env=empty).returncode == 0
    assert buildinfo.read(tmp_path, __version__) == BuildInfo(__version__)


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("VERSION", "0.0.1", "VERSION: the build argument says '0.0.1'"),
        ("REVISION", "HEAD", "REVISION: expected a commit ID"),
        ("BUILD_DATE", "yesterday", "BUILD_DATE: expected RFC 3339"),
        ("BUILD_DATE", "2026-11-23T10:00:00", "BUILD_DATE: expected a time zone"),
        ("BRANCH", "a\tb", "BRANCH: expected up to 200 printable characters"),
    ],
)
def test_a_bad_build_argument_fails_the_build(tmp_path: Path, name: str, value: str, message: str) -> None:
    target = tmp_path / buildinfo.BUILD_INFO_FILE
    result = run_exporter_module("exporter.buildinfo", str(target), env={name: value})
    assert result.returncode == 2
    assert message in result.stderr
    assert not target.exists()


def run_exporter_module(module: str, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if k not in ("VERSION", "REVISION", "BRANCH", "BUILD_DATE")}
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**clean, "BUILD_USER": "", **env},
    )


def test_build_info_metric_has_revision_and_branch() -> None:
    samples = Samples(generate_latest(Metrics().registry).decode())
    current = buildinfo.current()
    labels = {
        "version": __version__,
        "revision": current.revision,
        "branch": current.branch,
        "python_version": platform.python_version(),
    }
    assert samples.get("tencentcloud_exporter_build_info", **labels) == 1


# --- logs -------------------------------------------------------------------------------------------------


def _record(level: int, message: str, **fields: object) -> logging.LogRecord:
    record = logging.LogRecord("exporter.test", level, "/src/exporter/daemon.py", 42, message, (), None)
    record.fields = fields
    record.created = 1795428000.25  # 2026-11-23T10:00:00.250Z
    return record


def test_log_keys_follow_promslog() -> None:
    event = json.loads(logsetup.JsonFormatter().format(_record(logging.WARNING, "slow", task_id="7")))
    assert list(event) == ["time", "level", "source", "msg", "logger", "task_id"]
    assert event == {
        "time": "2026-11-23T10:00:00.250Z",
        "level": "warn",
        "source": "daemon.py:42",
        "msg": "slow",
        "logger": "exporter.test",
        "task_id": "7",
    }
    line = logsetup.LogfmtFormatter().format(_record(logging.INFO, "task poll failed", error="a b"))
    assert line == (
        "time=2026-11-23T10:00:00.250Z level=info source=daemon.py:42 "
        'msg="task poll failed" logger=exporter.test error="a b"'
    )


def test_log_levels_are_promslog_names() -> None:
    names = [logsetup.level_name(n) for n in (5, logging.DEBUG, logging.INFO, logging.WARNING, logging.ERROR)]
    assert names == ["debug", "debug", "info", "warn", "error"]
    assert logsetup.level_name(logging.CRITICAL) == "error"


def test_a_field_named_like_a_leading_key_does_not_replace_it() -> None:
    record = _record(logging.INFO, "credentials source chosen", source="CVM role", time="t", msg="m")
    event = json.loads(logsetup.JsonFormatter().format(record))
    assert event["source"] == "daemon.py:42"
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


# --- healthcheck ------------------------------------------------------------------------------------------


def healthcheck(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("TENCENTCLOUD_EXPORTER_HEALTHCHECK")}
    return subprocess.run(
        [sys.executable, "-m", "exporter", "healthcheck", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**clean, **(env or {})},
    )


@pytest.mark.parametrize(
    ("address", "host", "port"),
    [
        (":10123", "127.0.0.1", 10123),
        ("0.0.0.0:9", "127.0.0.1", 9),
        ("[::]:9", "::1", 9),
        ("[::1]:9", "::1", 9),
        ("192.0.2.1:9", "192.0.2.1", 9),
        ("exporter.example:9", "exporter.example", 9),
    ],
)
def test_healthcheck_asks_the_first_address_on_loopback(address: str, host: str, port: int) -> None:
    args = cli.build_parser("healthcheck").parse_args(
        ["--web.listen-address", address, "--web.listen-address", "127.0.0.9:1"]
    )
    target = healthchecks.healthcheck_target(args, {})
    assert (target.host, target.port, target.tls) == (host, port, None)
    assert "Authorization" not in target.headers


def test_healthcheck_without_flags_asks_the_default_address() -> None:
    target = healthchecks.healthcheck_target(cli.build_parser("healthcheck").parse_args([]), {})
    assert (target.host, target.port) == ("127.0.0.1", 10123)


@pytest.mark.parametrize("content", ["", "{", '{"address": 5}', '{"address": "nope"}', "[]", '{"x": 1}'])
def test_an_odd_healthcheck_file_falls_back_to_the_default(tmp_path: Path, content: str) -> None:
    path = tmp_path / "hc.json"
    path.write_text(content)
    args = cli.build_parser("healthcheck").parse_args([])
    target = healthchecks.healthcheck_target(args, {cliflags.HEALTHCHECK_FILE_ENV: str(path)})
    assert (target.host, target.port) == ("127.0.0.1", 10123)


def test_healthcheck_exit_status(tmp_path: Path) -> None:
    record = tmp_path / "healthcheck.json"
    with DaemonProcess(["--demo"], env={cliflags.HEALTHCHECK_FILE_ENV: str(record)}) as daemon:
        address = daemon.url.removeprefix("http://")
        written = json.loads(record.read_text())
        assert written["address"] == address
        assert written["web_config_file"] == ""
        ok = healthcheck("--web.listen-address", address, "--config.file", "ignored.yaml", "--log.level=warn")
        assert ok.returncode == 0, ok.stderr
        assert ok.stdout == f"healthy: GET http://{address}/-/healthy: 200 OK\n"
        # No flags: the address the daemon recorded.
        assert healthcheck(env={cliflags.HEALTHCHECK_FILE_ENV: str(record)}).returncode == 0
    assert not record.exists(), "removed when the daemon stops"
    refused = healthcheck("--web.listen-address", address)
    assert refused.returncode == 1
    assert refused.stderr.startswith(f"unhealthy: GET http://{address}/-/healthy: ")
    # Never 2, which Docker reserves: a flag it does not know is unhealthy too.
    assert healthcheck("--no-such-flag").returncode == 1
    assert healthcheck("--healthcheck.timeout", "0s").returncode == 1
    assert healthcheck("--help").returncode == 0


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CA, a server certificate for localhost only (the check connects to 127.0.0.1: it pins the
    certificate rather than checking the name) and a client certificate; returns their directory."""
    directory = tmp_path_factory.mktemp("pki")
    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(directory / "ca.pem"))
    server = ca.issue_cert("exporter.example")
    for blob in server.cert_chain_pems:
        blob.write_to_path(str(directory / "server.pem"), append=True)
    server.private_key_pem.write_to_path(str(directory / "server.key"))
    client = ca.issue_cert("prometheus.example")
    client.cert_chain_pems[0].write_to_path(str(directory / "client.pem"))
    client.private_key_pem.write_to_path(str(directory / "client.key"))
    other = trustme.CA().issue_cert("exporter.example")  # the same name from another CA: not the server's
    other.cert_chain_pems[0].write_to_path(str(directory / "impostor.pem"))
    return directory


def web_config(directory: Path, pki: Path, extra: str = "") -> Path:
    hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(4)).decode()
    path = directory / "web.yml"
    path.write_text(
        "tls_server_config:\n"
        f"  cert_file: {pki / 'server.pem'}\n"
        f"  key_file: {pki / 'server.key'}\n"
        f"{extra}"
        "basic_auth_users:\n"
        f"  prometheus: '{hashed}'\n"
    )
    return path


def test_healthcheck_over_tls_with_basic_auth(tmp_path: Path, pki: Path) -> None:
    config = web_config(tmp_path, pki)
    record = tmp_path / "healthcheck.json"
    env = {cliflags.HEALTHCHECK_FILE_ENV: str(record)}
    with DaemonProcess(["--demo", "--web.config.file", str(config)], env=env) as daemon:
        address = daemon.url.removeprefix("http://")
        assert json.loads(record.read_text())["web_config_file"] == str(config)
        unauthorized = healthcheck(env=env)
        assert unauthorized.returncode == 1
        assert unauthorized.stderr == f"unhealthy: GET https://{address}/-/healthy: 401 Unauthorized\n"
        authorized = healthcheck(env={**env, cliflags.HEALTHCHECK_AUTH_ENV: f"prometheus:{PASSWORD}"})
        assert authorized.returncode == 0, authorized.stderr
        password_file = tmp_path / "password"
        password_file.write_text(PASSWORD + "\n")
        flags = ["--healthcheck.username", "prometheus", "--healthcheck.password-file", str(password_file)]
        explicit = healthcheck("--web.listen-address", address, "--web.config.file", str(config), *flags)
        assert explicit.returncode == 0, explicit.stderr
        wrong = healthcheck(env={**env, cliflags.HEALTHCHECK_AUTH_ENV: "prometheus:wrong"})
        assert wrong.returncode == 1
        assert "wrong" not in wrong.stderr + wrong.stdout
        # Plain HTTP to a TLS port, or TLS trusting another certificate of the same name: unhealthy.
        assert healthcheck("--web.listen-address", address).returncode == 1
        impostor = tmp_path / "impostor.yml"
        impostor.write_text(config.read_text().replace(str(pki / "server.pem"), str(pki / "impostor.pem")))
        mistrust = healthcheck(
            "--web.listen-address",
            address,
            "--web.config.file",
            str(impostor),
            env={cliflags.HEALTHCHECK_AUTH_ENV: f"prometheus:{PASSWORD}"},
        )
        assert mistrust.returncode == 1
        assert "TLS" in mistrust.stderr or "certificate" in mistrust.stderr


def test_healthcheck_presents_a_client_certificate_when_required(tmp_path: Path, pki: Path) -> None:
    extra = f"  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: {pki / 'ca.pem'}\n"
    config = web_config(tmp_path, pki, extra)
    auth = {cliflags.HEALTHCHECK_AUTH_ENV: f"prometheus:{PASSWORD}"}
    with DaemonProcess(["--demo", "--web.config.file", str(config)]) as daemon:
        address = daemon.url.removeprefix("http://")
        flags = ["--web.listen-address", address, "--web.config.file", str(config)]
        # By default the server's own certificate and key, issued by the client CA here.
        assert healthcheck(*flags, env=auth).returncode == 0
        client = [
            "--healthcheck.cert-file",
            str(pki / "client.pem"),
            "--healthcheck.key-file",
            str(pki / "client.key"),
        ]
        assert healthcheck(*flags, *client, env=auth).returncode == 0
        half = healthcheck(*flags, "--healthcheck.cert-file", str(pki / "client.pem"), env=auth)
        assert half.returncode == 1
        assert "go together" in half.stderr


def test_subcommands_are_the_first_word_only(tmp_path: Path) -> None:
    assert set(cli.SUBCOMMANDS) >= {"healthcheck"}
    # After a flag, the word is the daemon's (which takes no positional arguments).
    result = run_exporter("--log.level", "info", "healthcheck")
    assert result.returncode == 2
    assert "unrecognized arguments: healthcheck" in result.stderr
    # The daemon's invocations work as before, flags in any order.
    good = tmp_path / "config.yaml"
    good.write_text("region: ap-guangzhou\nwatch:\n  mariadb_flows: [1]\n")
    for argv in (
        ["--config.file", str(good), "--check-config"],
        ["--check-config", "--log.level=warning", f"--config.file={good}"],
    ):
        checked = run_exporter(*argv)
        assert checked.returncode == 0, checked.stderr


# --- Dockerfile -------------------------------------------------------------------------------------------

DOCKERFILE = REPO / "Dockerfile"
LOCK = REPO / "requirements.lock"


def _stages() -> list[str]:
    return re.split(r"^FROM ", DOCKERFILE.read_text(encoding="utf-8"), flags=re.M)[1:]


def _runs(stage: str) -> list[str]:
    """The RUN instructions of a stage, continuation lines joined."""
    text = stage.replace("\\\n", " ")
    return [" ".join(line.split()) for line in re.findall(r"^RUN (.+)$", text, flags=re.M)]


def test_dockerfile_installs_exactly_the_locked_dependencies() -> None:
    build, runtime = _stages()
    runs = _runs(build)
    lock_install = (
        "pip --python /opt/exporter/bin/python install --require-hashes --no-deps -r requirements.lock"
    )
    assert lock_install in runs
    package = next(i for i, run in enumerate(runs) if "install --no-deps /tmp/wheels/" in run)
    assert runs.index(lock_install) < package, "dependencies from the lock first, then the package alone"
    assert "pip wheel --no-deps --no-build-isolation" in runs[package]
    assert "pip --python /opt/exporter/bin/python check" in runs[package]
    assert "COPY requirements.lock ./" in build
    assert "COPY --from=build /opt/exporter /opt/exporter" in runtime


def test_requirements_lock_pins_every_package_with_hashes() -> None:
    text = LOCK.read_text(encoding="utf-8")
    requirements = re.findall(
        r"^([A-Za-z0-9_.-]+)==(\S+) \\\n((?:    --hash=sha256:[0-9a-f]{64}.*\n)+)", text, re.M
    )
    names = re.findall(r"^([A-Za-z0-9_.-]+)==", text, re.M)
    assert names
    assert len(requirements) == len(names), "every pin has hashes"
    runtime = {"aiohttp", "prometheus-client", "pyyaml", "bcrypt"}
    assert runtime <= {n.lower() for n in names}


def test_dockerfile_records_the_build() -> None:
    build, runtime = _stages()
    args = dict(re.findall(r"^ARG (\w+)=(\S+)", build, flags=re.M))
    assert args["VERSION"] == __version__, "the image's version label is the package's"
    assert {"REVISION", "BRANCH", "BUILD_DATE", "BUILD_USER"} <= set(args)
    assert _runs(build)[-1] == "/opt/exporter/bin/python -m exporter.buildinfo", "written last, from the args"
    runtime_args = dict(re.findall(r"^ARG (\w+)=(\S+)", runtime, flags=re.M))
    assert runtime_args["VERSION"] == __version__
    labels = dict(re.findall(r'(org\.opencontainers\.image\.\w+)="([^"]*)"', runtime))
    assert labels["org.opencontainers.image.version"] == "${VERSION}"
    assert labels["org.opencontainers.image.revision"] == "${REVISION}"
    assert labels["org.opencontainers.image.created"] == "${BUILD_DATE}"
    assert labels["org.opencontainers.image.source"].startswith("https://github.com/")


def test_dockerfile_healthcheck_finds_the_daemon() -> None:
    runtime = _stages()[1]
    assert 'CMD ["tencentcloud-task-exporter", "healthcheck"]' in runtime
    recorded = re.search(rf"{cliflags.HEALTHCHECK_FILE_ENV}=(\S+)", runtime)
    assert recorded is not None, "the daemon records its address for the check"
    workdir = re.search(r"^WORKDIR (\S+)", runtime, flags=re.M)
    assert workdir is not None
    assert recorded.group(1).startswith(workdir.group(1) + "/"), "in the writable state directory"


def test_image_python_is_the_one_the_lock_was_compiled_for() -> None:
    text = DOCKERFILE.read_text(encoding="utf-8")
    image = re.search(
        r"^ARG PYTHON_IMAGE=python:(\d+\.\d+)\.\d+-slim-bookworm@sha256:[0-9a-f]{64}$", text, re.M
    )
    assert image is not None
    compiled = re.search(
        r"autogenerated by pip-compile with Python (\d+\.\d+)", LOCK.read_text(encoding="utf-8")
    )
    assert compiled is not None
    assert image.group(1) == compiled.group(1) == "3.11"


def test_hadolint_passes() -> None:
    hadolint = require_binary("hadolint")
    result = subprocess.run([hadolint, "--no-color", str(DOCKERFILE)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
