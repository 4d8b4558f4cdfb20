"""The healthcheck subcommand: the address it asks (flags, the daemon's address file, the default), exit
statuses, TLS, basic auth and client certificates; subcommands as the first word only."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import bcrypt
import pytest
import trustme

from exporter.cli import flags as cliflags
from exporter.cli import healthcheck as healthchecks
from exporter.cli import main as cli
from tests.helpers import DaemonProcess

PASSWORD = "healthcheck-Pa55word"


def run_exporter(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "exporter", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
    )


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
