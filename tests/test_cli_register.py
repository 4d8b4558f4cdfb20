"""The register subcommand, run as a pipeline runs it: a subprocess posting to a real exporter's task API.
Exit statuses (0 registered, 2 unusable command line, 4 not registered), the reason printed, HTTPS with a
private CA and client certificates, bearer token past basic auth, and the token never shown."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import bcrypt
import pytest
import trustme

from exporter.catalogue.products import CDB, MARIADB, REDIS
from exporter.daemon.core import API_TOKEN_ENV
from tests.helpers import DaemonProcess, wait_for

TOKEN = "register-test-token-7c2d9e"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
ASYNC_ID = "c0ffee01-4c3a9f08-a16e2d5b-0f9c8e73"


def register(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`tencentcloud-task-exporter register ARGS` with no token in its environment unless given."""
    clean = {k: v for k, v in os.environ.items() if k != API_TOKEN_ENV}
    result = subprocess.run(
        [sys.executable, "-m", "exporter", "register", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**clean, **(env or {})},
    )
    assert TOKEN not in result.stdout + result.stderr
    return result


WITH_TOKEN = {API_TOKEN_ENV: TOKEN}


@pytest.fixture(scope="module")
def token_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("token") / "token"
    path.write_text(TOKEN + "\n")
    return path


@pytest.fixture(scope="module")
def exporter(token_file: Path) -> Iterator[DaemonProcess]:
    """The demo exporter (accounts prod and staging, region ap-guangzhou) with the task API on."""
    with DaemonProcess(["--demo", "--demo.speed", "20", "--tasks.api-token-file", str(token_file)]) as daemon:
        yield daemon


def registered(daemon: DaemonProcess) -> dict[tuple[str, str], dict[str, object]]:
    status, answer = daemon.request("GET", "/api/v1/tasks", headers=AUTH)
    assert status == 200
    return {(t["product"], t["id"]): t for t in answer["tasks"]}


def test_register_puts_the_task_on_the_dashboard(exporter: DaemonProcess) -> None:
    args = ["--url", exporter.url, "--label", "pipeline=deploy-42", "--label", "team=dba"]
    first = register(*args, "--account", "staging", CDB.name, ASYNC_ID, env=WITH_TOKEN)
    assert first.returncode == 0, first.stderr
    assert first.stdout == (
        f"registered: cdb {ASYNC_ID} in ap-guangzhou (account staging) labels pipeline=deploy-42,team=dba: "
        "new, polled here\n"
    )
    assert first.stderr == ""
    task = registered(exporter)[(CDB.name, ASYNC_ID)]
    assert task["account"] == "staging"
    assert task["region"] == "ap-guangzhou"
    assert task["labels"] == {"pipeline": "deploy-42", "team": "dba"}
    wait_for(
        lambda: exporter.scrape().all("tencentcloud_task_info", task_id=ASYNC_ID, pipeline="deploy-42"),
        15,
        "the registered task's series with its labels",
    )
    # Again, with a trailing slash on the URL and the JSON answer: already registered, still exit 0.
    again = register(
        *args, "--url", exporter.url + "/", "--output", "json", CDB.name, ASYNC_ID, env=WITH_TOKEN
    )
    assert again.returncode == 0, again.stderr
    answer = json.loads(again.stdout)
    assert answer["new"] is False
    assert answer["polled_here"] is True
    assert answer["account"] == "prod"  # the config's first account: registering again moves it


def test_the_token_file_wins_over_the_environment(exporter: DaemonProcess, token_file: Path) -> None:
    wrong = {API_TOKEN_ENV: "not-the-token"}
    by_file = register(
        "--url", exporter.url, "--token-file", str(token_file), MARIADB.name, "4101", env=wrong
    )
    assert by_file.returncode == 0, by_file.stderr
    # The daemon's own flag names a token file too; given to the subcommand, it is read the same way.
    daemon_flag = register(
        "--url", exporter.url, "--tasks.api-token-file", str(token_file), REDIS.name, "4102"
    )
    assert daemon_flag.returncode == 0, daemon_flag.stderr
    assert {(MARIADB.name, "4101"), (REDIS.name, "4102")} <= set(registered(exporter))
    # --config.file, like every subcommand's, is accepted and changes nothing.
    with_config = register(
        "--config.file", "absent.yaml", "--url", exporter.url, REDIS.name, "4103", env=WITH_TOKEN
    )
    assert with_config.returncode == 0, with_config.stderr


def test_a_wrong_token_exits_4_with_the_reason(exporter: DaemonProcess) -> None:
    result = register("--url", exporter.url, CDB.name, ASYNC_ID, env={API_TOKEN_ENV: "wrong-" + TOKEN[:5]})
    assert result.returncode == 4
    assert result.stdout == ""
    assert result.stderr == (
        f"error: POST {exporter.url}/api/v1/tasks: 401 Unauthorized: a valid bearer token is required\n"
    )


@pytest.mark.parametrize(
    ("args", "reason"),
    [
        (["db2", "1"], "400 Bad Request: product: expected one of mariadb, "),
        (
            ["--account", "finance", CDB.name, ASYNC_ID],
            "400 Bad Request: account: expected one of the accounts ",
        ),
        ([MARIADB.name, "not-a-number"], "400 Bad Request: id: expected a positive integer flow ID"),
        (["--region", "Mars", CDB.name, ASYNC_ID], "400 Bad Request: region: "),
        (["--label", "product=x", CDB.name, ASYNC_ID], None),  # reserved: refused before asking (exit 2)
    ],
)
def test_a_refused_task_exits_4_with_the_exporters_reason(
    exporter: DaemonProcess, args: list[str], reason: str | None
) -> None:
    result = register("--url", exporter.url, *args, env=WITH_TOKEN)
    if reason is None:
        assert result.returncode == 2
        assert "product is reserved" in result.stderr
        return
    assert result.returncode == 4, result.stdout
    assert result.stderr.startswith(f"error: POST {exporter.url}/api/v1/tasks: {reason}"), result.stderr
    assert result.stdout == ""


def test_the_exporters_path_prefix_is_kept(exporter: DaemonProcess) -> None:
    result = register("--url", exporter.url + "/behind/a/proxy", CDB.name, ASYNC_ID, env=WITH_TOKEN)
    assert result.returncode == 4
    assert result.stderr.startswith(f"error: POST {exporter.url}/behind/a/proxy/api/v1/tasks: 404 Not Found")


def test_an_unreachable_exporter_exits_4() -> None:
    # Bound but not listening: connections to it are refused for as long as the socket is held.
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{closed.getsockname()[1]}"
        result = register("--url", url, "--timeout", "5s", CDB.name, ASYNC_ID, env=WITH_TOKEN)
    assert result.returncode == 4
    assert result.stderr == f"error: POST {url}/api/v1/tasks: Connection refused\n"
    assert result.stdout == ""


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["--label", "pipeline"], WITH_TOKEN, "--label 'pipeline': expected NAME=VALUE"),
        (["--label", "9lives=1"], WITH_TOKEN, "--label '9lives=1': expected a Prometheus label name"),
        (["--label", "__x=1"], WITH_TOKEN, "--label '__x=1': expected a Prometheus label name"),
        (["--label", "a-b=1"], WITH_TOKEN, "--label 'a-b=1': expected a Prometheus label name"),
        (["--label", "team=a", "--label", "team=b"], WITH_TOKEN, "--label 'team=b': team given twice"),
        ([], {}, f"no API token: set {API_TOKEN_ENV} or give --token-file"),
        ([], {API_TOKEN_ENV: "  \n"}, f"no API token: set {API_TOKEN_ENV} or give --token-file"),
        (["--timeout", "soon"], WITH_TOKEN, "--timeout: expected a duration like 10s, got 'soon'"),
        (["--ca-file", "ca.pem"], WITH_TOKEN, "--ca-file, --cert-file and --key-file need an https:// --url"),
    ],
)
def test_an_unusable_command_line_exits_2(args: list[str], env: dict[str, str], message: str) -> None:
    # Port 9 (discard) on loopback is never asked: the command line is checked first.
    result = register("--url", "http://127.0.0.1:9", *args, CDB.name, ASYNC_ID, env=env)
    assert result.returncode == 2
    assert result.stderr.startswith(f"error: {message}"), result.stderr
    assert result.stderr.count("\n") == 1
    assert result.stdout == ""


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("exporter:10123", "--url: expected http://HOST[:PORT] or https://HOST[:PORT]"),
        ("ftp://exporter", "--url: expected http://HOST[:PORT] or https://HOST[:PORT]"),
        ("http://user:secret@exporter:10123", "--url: expected no user:password@"),
        ("http://exporter:10123/?x=1", "--url: expected the exporter's base URL"),
        ("http://exporter:port", "--url: Port could not be cast to integer value"),
    ],
)
def test_an_unusable_url_exits_2(url: str, message: str) -> None:
    result = register("--url", url, CDB.name, ASYNC_ID, env=WITH_TOKEN)
    assert result.returncode == 2
    assert result.stderr.startswith(f"error: {message}"), result.stderr
    assert "secret" not in result.stderr


def test_an_empty_or_unreadable_token_file_exits_2(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.write_text("\n")
    result = register(
        "--url", "http://127.0.0.1:9", "--token-file", str(empty), CDB.name, ASYNC_ID, env=WITH_TOKEN
    )
    assert result.returncode == 2
    assert result.stderr == f"error: --token-file {empty}: the file is empty\n"
    missing = tmp_path / "missing"
    result = register("--url", "http://127.0.0.1:9", "--token-file", str(missing), CDB.name, ASYNC_ID)
    assert result.returncode == 2
    assert result.stderr == f"error: --token-file {missing}: cannot read it (No such file or directory)\n"


def test_argparse_errors_exit_2_and_help_exits_0() -> None:
    assert register(CDB.name, ASYNC_ID).returncode == 2  # --url is required
    assert register("--url", "http://127.0.0.1:9").returncode == 2  # PRODUCT ID missing
    shown = register("--help")
    assert shown.returncode == 0
    assert "examples:" in shown.stdout
    assert "register --url http://exporter:10123 cdb" in shown.stdout
    assert "--web.listen-address" not in shown.stdout  # the daemon's flags are accepted, not listed


# --- HTTPS ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tls_exporter(tmp_path_factory: pytest.TempPathFactory, token_file: Path) -> Iterator[tuple[str, Path]]:
    """An exporter over HTTPS from a private CA, requiring client certificates and basic auth on every path;
    yields its https:// URL and the directory holding ca.pem and client.pem (certificate and key)."""
    directory = tmp_path_factory.mktemp("pki")
    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(directory / "ca.pem"))
    server = ca.issue_cert("localhost", "127.0.0.1")
    server.private_key_and_cert_chain_pem.write_to_path(str(directory / "server.pem"))
    ca.issue_cert("pipeline.example").private_key_and_cert_chain_pem.write_to_path(
        str(directory / "client.pem")
    )
    hashed = bcrypt.hashpw(b"scrape-password", bcrypt.gensalt(4)).decode()
    web = directory / "web.yml"
    web.write_text(
        "tls_server_config:\n"
        f"  cert_file: {directory / 'server.pem'}\n"
        f"  key_file: {directory / 'server.pem'}\n"
        "  client_auth_type: RequireAndVerifyClientCert\n"
        f"  client_ca_file: {directory / 'ca.pem'}\n"
        "basic_auth_users:\n"
        f"  prometheus: '{hashed}'\n"
    )
    args = ["--demo", "--web.config.file", str(web), "--tasks.api-token-file", str(token_file)]
    with DaemonProcess(args) as daemon:
        yield daemon.url.replace("http://", "https://"), directory


def test_https_verifies_the_exporters_certificate(tls_exporter: tuple[str, Path]) -> None:
    url, pki = tls_exporter
    # The system trust store does not know the private CA.
    untrusted = register("--url", url, CDB.name, ASYNC_ID, env=WITH_TOKEN)
    assert untrusted.returncode == 4
    assert untrusted.stderr.startswith(f"error: POST {url}/api/v1/tasks: TLS: certificate verify failed")
    # Trusted, but no client certificate: the server ends the handshake.
    anonymous = register("--url", url, "--ca-file", str(pki / "ca.pem"), CDB.name, ASYNC_ID, env=WITH_TOKEN)
    assert anonymous.returncode == 4
    assert anonymous.stderr.startswith(f"error: POST {url}/api/v1/tasks: ")
    assert "certificate" in anonymous.stderr  # the hint, or the server's alert (TLS 1.2)
    # With both, and no basic auth credentials: the bearer token alone opens the task API.
    tls = ["--ca-file", str(pki / "ca.pem"), "--cert-file", str(pki / "client.pem")]
    accepted = register("--url", url, *tls, "--label", "via=https", CDB.name, ASYNC_ID, env=WITH_TOKEN)
    assert accepted.returncode == 0, accepted.stderr
    assert accepted.stdout.startswith(f"registered: cdb {ASYNC_ID} in ap-guangzhou")
    wrong = register("--url", url, *tls, CDB.name, ASYNC_ID, env={API_TOKEN_ENV: "wrong"})
    assert wrong.returncode == 4
    assert "401 Unauthorized: a valid bearer token is required" in wrong.stderr


def test_unusable_tls_files_exit_2(tmp_path: Path) -> None:
    missing = tmp_path / "missing.pem"
    result = register(
        "--url", "https://127.0.0.1:9", "--ca-file", str(missing), CDB.name, ASYNC_ID, env=WITH_TOKEN
    )
    assert result.returncode == 2
    assert result.stderr == "error: TLS settings: No such file or directory\n"
    half = register(
        "--url", "https://127.0.0.1:9", "--key-file", str(missing), CDB.name, ASYNC_ID, env=WITH_TOKEN
    )
    assert half.returncode == 2
    assert half.stderr == "error: --key-file needs --cert-file\n"


def test_a_short_token_is_redacted_as_a_word_without_mangling_the_message() -> None:
    from exporter.cli.httpcall import Redactor

    assert Redactor(["Bearer t"])("POST x: Connection refused") == "POST x: Connection refused"
    assert Redactor(["Bearer s3cr.et"])("bad token s3cr.et") == "bad token <redacted>"
    assert Redactor(["Bearer abc"])("x=abc,abc.") == "x=<redacted>,<redacted>."
