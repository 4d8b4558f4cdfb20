"""A failing account is that account's problem: the others start and poll, it is retried with backoff and
shows on /metrics and /-/ready; and a token file that is not a regular file is refused, never waited on."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from exporter.catalogue.products import MARIADB
from exporter.config.parser import parse_config
from exporter.credentials.signing import Credentials
from exporter.daemon.core import Daemon, Options
from exporter.simulator import Phase, SimTask, SimulatorThread
from tests.conftest import eventually
from tests.fake_metadata import FakeSts
from tests.helpers import CREDS, DaemonProcess, Samples, wait_for

GOOD_FLOW, OTHER_FLOW = "8801", "8802"  # IDs no other module's tasks use
BASE = Credentials("AKIDbase00000", "base-secret-key")


def closed_port_url() -> str:
    """A loopback URL nothing listens on: connecting is refused at once, as with STS unreachable."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"


def two_accounts(url: str, other: dict[str, Any]) -> dict[str, Any]:
    """`good` with working keys, `other` with the given credentials section; a task of each."""
    return {
        "accounts": [
            {"name": "good", "credentials": {"secret_id": CREDS.secret_id, "secret_key": CREDS.secret_key}},
            {"name": "other", "credentials": other},
        ],
        "region": "ap-guangzhou",
        "apis": {MARIADB.name: {"endpoint": url}},
        "polling": {"interval": "200ms", "timeout": "2s", "max_backoff": "1s"},
        "watch": {"mariadb_flows": [GOOD_FLOW, {"id": OTHER_FLOW, "account": "other"}]},
    }


@pytest.fixture
def simulator(shared_simulator: SimulatorThread) -> SimulatorThread:
    for flow in (GOOD_FLOW, OTHER_FLOW):
        shared_simulator.add_task(SimTask(MARIADB.name, flow, (Phase(0, 2),)))
    return shared_simulator


def test_sts_unreachable_for_one_account_leaves_the_other_polled(
    simulator: SimulatorThread, tmp_path: Path
) -> None:
    """Before: exit 2 at start, and the good account was never polled."""
    other = {"secret_id": BASE.secret_id, "secret_key": BASE.secret_key}
    other |= {"role_arn": "qcs::cam::uin/1:roleName/x", "sts_endpoint": closed_port_url()}
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(two_accounts(simulator.url, other)))
    with DaemonProcess(["--config.file", str(config)]) as daemon:
        wait_for(lambda: daemon.scrape().status(MARIADB.name, GOOD_FLOW) == "running", 15, "good polled")

        def failures() -> float:
            return (
                daemon.scrape().get("tencentcloud_exporter_credentials_failures_total", account="other") or 0
            )

        # Retried with backoff (1 s, then 2 s...): the start's failure and at least one retry.
        wait_for(lambda: failures() >= 2, 15, "a retry of the failing account")
        samples = daemon.scrape()
        assert samples.get("tencentcloud_exporter_credentials_available", account="other") == 0
        assert samples.get("tencentcloud_exporter_credentials_available", account="good") == 1
        assert samples.get("tencentcloud_exporter_credentials_failures_total", account="good") == 0
        assert samples.status(MARIADB.name, OTHER_FLOW) is None  # its polls fail, counted as errors
        wait_for(
            lambda: daemon.scrape().get(
                "tencentcloud_api_errors_total", account="other", code="Exporter.CredentialsUnavailable"
            ),
            10,
            "the other account's polls to fail as CredentialsUnavailable",
        )
        status, body = daemon.get("/-/ready")
        lines = body.decode().splitlines()
        assert status == 200, body  # one account with keys is still a serving replica
        assert lines[0] == "Ready."
        assert lines[1].startswith("account other: no credentials (retrying): ")
        assert "STS" in lines[1]
        assert BASE.secret_key not in body.decode()
        events = [e for e in daemon.events() if e.get("account") == "other" and e["level"] == "warn"]
        assert events
        assert "its tasks wait" in events[0]["msg"]


async def test_an_account_comes_up_once_its_source_answers(simulator: SimulatorThread) -> None:
    """In process, with a fast backoff: STS failing, then answering; the account gets its keys."""
    async with FakeSts([BASE]) as sts:
        sts.error_code = "InternalError"
        other = {"secret_id": BASE.secret_id, "secret_key": BASE.secret_key}
        other |= {"role_arn": "qcs::cam::uin/1:roleName/x", "sts_endpoint": sts.endpoint}
        config = parse_config(two_accounts(simulator.url, other), "cfg.yaml", {})
        daemon = Daemon(config, None, Options(), env={})
        daemon.accounts.retry = (0.05, 0.2)
        await daemon.start()
        try:
            assert daemon.readiness()[0]
            await eventually(lambda: daemon.accounts.failures["other"] >= 3, 10, "retries")
            assert not daemon.accounts.has_keys("other")
            assert [line.split(": ")[0] for line in daemon.readiness()[1]] == ["account other"]
            requests = sts.requests
            sts.error_code = None
            await eventually(lambda: daemon.accounts.has_keys("other"), 10, "the account's keys")
            assert sts.requests > requests
            assert daemon.readiness() == (True, [])
            assert (await daemon.credentials["other"].get()).secret_id.startswith("AKIDsts")
            samples = Samples(daemon.metrics.render(daemon.store).decode())
            assert samples.get("tencentcloud_exporter_credentials_available", account="other") == 1
        finally:
            await daemon.stop()


async def test_every_account_failing_is_not_ready(simulator: SimulatorThread) -> None:
    other = {"secret_id": BASE.secret_id, "secret_key": BASE.secret_key}
    other |= {"role_arn": "qcs::cam::uin/1:roleName/x", "sts_endpoint": closed_port_url()}
    document = two_accounts(simulator.url, other)
    document["accounts"][0]["credentials"] = dict(other, secret_id="AKIDbase00001")
    daemon = Daemon(parse_config(document, "cfg.yaml", {}), None, Options(), env={})
    await daemon.start()
    try:
        ready, lines = daemon.readiness()
        assert not ready
        assert [line.split(": ")[0] for line in lines] == ["account good", "account other"]
    finally:
        await daemon.stop()


@pytest.mark.parametrize("kind", ["fifo", "missing"])
def test_a_tke_token_file_that_is_a_fifo_or_missing_fails_its_account_only(
    kind: str, simulator: SimulatorThread, tmp_path: Path
) -> None:
    """Before: a FIFO hung the start with no message (the start waited for a writer); a missing file exited
    2. Either way the good account was never polled."""
    token = tmp_path / "token"
    if kind == "fifo":
        os.mkfifo(token)
    env = {
        "TKE_REGION": "ap-guangzhou",
        "TKE_PROVIDER_ID": "oidc-provider",
        "TKE_WEB_IDENTITY_TOKEN_FILE": str(token),
        "TKE_ROLE_ARN": "qcs::cam::uin/1:roleName/pod",
        "HOME": str(tmp_path),  # no profile file of the machine's own in the chain
    }
    other = {"cvm_role": False, "sts_endpoint": closed_port_url()}
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(two_accounts(simulator.url, other)))
    with DaemonProcess(["--config.file", str(config)], env=env) as daemon:
        wait_for(lambda: daemon.scrape().status(MARIADB.name, GOOD_FLOW) == "running", 15, "good polled")
        assert daemon.scrape().get("tencentcloud_exporter_credentials_available", account="other") == 0
        [event, *_] = [e for e in daemon.events() if e.get("account") == "other"]
        expected = "not a regular file (a FIFO)" if kind == "fifo" else "No such file or directory"
        assert f"web identity token file {token}" in event["error"]
        assert expected in event["error"], event


def test_an_api_token_file_that_is_a_fifo_is_refused_at_once(tmp_path: Path) -> None:
    """Before: the start hung, waiting for a writer to open the FIFO."""
    fifo = tmp_path / "api-token"
    os.mkfifo(fifo)
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"credentials": {"secret_id": "AKIDx", "secret_key": "k"}}))
    base = [
        sys.executable,
        "-m",
        "exporter",
        "--config.file",
        str(config),
        "--tasks.api-token-file",
        str(fifo),
    ]
    for extra in (
        ["--check-config"],
        ["--web.listen-address", "127.0.0.1:0", "--storage.path", str(tmp_path / "s")],
    ):
        result = subprocess.run([*base, *extra], capture_output=True, text=True, timeout=30)
        assert result.returncode == 2, result.stderr
        assert f"{fifo}: cannot read the API token file: not a regular file (a FIFO)" in result.stderr


def test_check_config_refuses_half_a_key_pair_as_the_daemon_does(tmp_path: Path) -> None:
    """Before: --check-config said valid (exit 0), then the daemon exited 2."""
    config = tmp_path / "config.yaml"
    document = {"credentials": {"secret_id": "${TENCENTCLOUD_SECRET_ID}", "secret_key": ""}}
    config.write_text(yaml.safe_dump({**document, "region": "ap-guangzhou", "watch": {"mariadb_flows": [1]}}))
    env = {"PATH": "/usr/bin:/bin", "TENCENTCLOUD_SECRET_ID": "AKIDhalf"}
    outcomes = []
    for extra in (
        ["--check-config"],
        ["--web.listen-address", "127.0.0.1:0", "--storage.path", str(tmp_path / "s")],
    ):
        command = [sys.executable, "-m", "exporter", "--config.file", str(config), *extra]
        result = subprocess.run(command, capture_output=True, text=True, timeout=30, env=env)
        outcomes.append((result.returncode, result.stderr.strip().splitlines()[-1]))
    message = f"error: {config}: credentials: secret_key is empty while the other half of the key pair is set"
    assert outcomes == [(2, message), (2, message)]
    # A source that is only unreachable now passes: the daemon would start and retry it.
    document = {"credentials": {"role_arn": "qcs::cam::uin/1:roleName/x", "cvm_role": True}}
    config.write_text(yaml.safe_dump(document))
    result = subprocess.run(
        [sys.executable, "-m", "exporter", "--config.file", str(config), "--check-config"],
        capture_output=True,
        text=True,
        timeout=30,
        env={"PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"{config}: valid, 0 task(s) watched\n"
