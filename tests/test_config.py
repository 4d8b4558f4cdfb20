from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from exporter.catalogue.products import CDB, MARIADB
from exporter.config.parser import (
    Config,
    ConfigError,
    PollingConfig,
    expand_env,
    load_config,
    parse_config,
    parse_duration,
)
from exporter.credentials.chain import CredentialsError, open_provider
from exporter.credentials.signing import Credentials

ROOT = Path(__file__).resolve().parent.parent


def problems(document: object, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(document, "cfg.yaml", env or {})
    return caught.value.problems


def test_example_config_is_valid_and_documents_every_default() -> None:
    env = {"TENCENTCLOUD_SECRET_ID": "AKIDexample", "TENCENTCLOUD_SECRET_KEY": "key"}
    config = load_config(ROOT / "config.example.yaml", env)
    assert config.credentials.secret_id == "AKIDexample"
    assert config.polling == PollingConfig()
    assert config.apis[MARIADB.name].rate_limit == 20
    assert config.apis[CDB.name].rate_limit == 40
    assert {t.product for t in config.tasks} == {MARIADB.name, CDB.name}


def test_minimal_config_takes_defaults() -> None:
    config = parse_config({"region": "ap-guangzhou", "watch": {"mariadb_flows": [3340]}}, "cfg.yaml", {})
    assert config.apis[MARIADB.name].endpoint == "https://mariadb.tencentcloudapi.com"
    assert config.apis[CDB.name].endpoint == "https://cdb.tencentcloudapi.com"
    assert config.polling.interval == 30
    assert config.polling.finished_interval == 600
    assert config.polling.timeout == 10
    [task] = config.tasks
    assert (task.product, task.region, task.task_id) == (MARIADB.name, "ap-guangzhou", "3340")


def test_task_entries_take_their_own_region_and_labels() -> None:
    config = parse_config(
        {
            "region": "ap-guangzhou",
            "watch": {
                "mariadb_flows": [3340, {"id": 3341, "region": "ap-shanghai", "labels": {"team": "dba"}}],
                "cdb_async_requests": [
                    {"id": "f96e4f3c-8fc96c86-2ec79ac8-cb63a7a7", "region": "ap-singapore"}
                ],
            },
        },
        "cfg.yaml",
        {},
    )
    assert [(t.task_id, t.region, t.labels) for t in config.tasks] == [
        ("3340", "ap-guangzhou", ()),
        ("3341", "ap-shanghai", (("team", "dba"),)),
        ("f96e4f3c-8fc96c86-2ec79ac8-cb63a7a7", "ap-singapore", ()),
    ]


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("500ms", 0.5), ("30s", 30), ("10m", 600), ("1h", 3600), ("1h30m", 5400), (15, 15), ("2.5", 2.5)],
)
def test_durations(text: object, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "10 minutes", "m10", "1x", True, None, [1], "nan", "30s5"])
def test_bad_durations(text: object) -> None:
    assert parse_duration(text) is None


def test_env_expansion_with_defaults_and_unset_variables() -> None:
    document = {"a": "${X}", "b": ["${UNSET}", "${UNSET:-fallback}"], "c": "x${X}y", "d": 5}
    assert expand_env(document, {"X": "1"}) == {"a": "1", "b": ["", "fallback"], "c": "x1y", "d": 5}


def test_env_values_cannot_change_the_document_structure() -> None:
    config = parse_config({"credentials": {"secret_key": "${K}"}}, "cfg.yaml", {"K": "a: b # c\n- d"})
    assert config.credentials.secret_key == "a: b # c\n- d"


def test_every_problem_is_reported_with_its_key_path() -> None:
    found = problems(
        {
            "regoin": "ap-guangzhou",
            "apis": {MARIADB.name: {"rate_limit": 0, "endpoint": "ftp://x"}, CDB.name: {"ratelimit": 5}},
            "polling": {"interval": "soon", "finished_interval": -1},
            "watch": {
                "mariadb_flows": [3340, "abc", {"id": 7, "labels": {"job": "x", "ok-name": "y"}}, True],
                "cdb_async_requests": "f96e4f3c",
            },
        }
    )
    text = "\n".join(found)
    for expected in [
        "cfg.yaml: regoin: unknown key",
        "cfg.yaml: apis.mariadb.rate_limit: expected a positive number, got 0",
        "cfg.yaml: apis.mariadb.endpoint: expected a URL",
        "cfg.yaml: apis.cdb.ratelimit: unknown key",
        "cfg.yaml: polling.interval: expected a duration",
        "cfg.yaml: polling.finished_interval: expected 0 or at least",
        "cfg.yaml: watch.mariadb_flows[1]: expected a positive integer flow ID, got str 'abc'",
        "cfg.yaml: watch.mariadb_flows[2].labels.job: label name is reserved",
        "cfg.yaml: watch.mariadb_flows[2].labels.ok-name: expected a Prometheus label name",
        "cfg.yaml: watch.mariadb_flows[3]: expected a positive integer flow ID, got a boolean (True)",
        "cfg.yaml: watch.cdb_async_requests: expected a list of task IDs",
    ]:
        assert expected in text
    # The valid flow IDs have no region only because of the misspelt `regoin`: reported there, once.
    assert "no region" not in text


@pytest.mark.parametrize(
    "endpoint", ["ht\ntp://x", "https://x\t", "https://\rx", " https://x", "https://x\x7f"]
)
def test_an_endpoint_with_whitespace_or_a_control_character_is_refused(endpoint: str) -> None:
    """urlsplit drops tabs and line breaks; an endpoint's (or the metadata URL's) text is refused instead of
    silently mended."""
    found = problems(
        {
            "region": "ap-guangzhou",
            "apis": {CDB.name: {"endpoint": endpoint}},
            "discovery": {"regions": ["ap-guangzhou"], "cloudaudit": {"endpoint": endpoint}},
            "credentials": {"metadata_url": endpoint},
        }
    )
    assert any(f.startswith("cfg.yaml: apis.cdb.endpoint: expected a URL like") for f in found), found
    assert any(f.startswith("cfg.yaml: discovery.cloudaudit.endpoint: expected a URL like") for f in found)
    assert any(f.startswith("cfg.yaml: credentials.metadata_url: expected an http(s) URL") for f in found)


def test_duplicates_are_reported_with_both_places() -> None:
    found = problems({"region": "ap-guangzhou", "watch": {"mariadb_flows": [3340, "3340", {"id": 3340}]}})
    assert found == [
        "cfg.yaml: watch.mariadb_flows[1]: duplicate task mariadb 3340 in ap-guangzhou "
        "(first at watch.mariadb_flows[0])",
        "cfg.yaml: watch.mariadb_flows[2]: duplicate task mariadb 3340 in ap-guangzhou "
        "(first at watch.mariadb_flows[0])",
    ]


def test_same_id_in_two_regions_is_two_tasks() -> None:
    config = parse_config(
        {"region": "ap-guangzhou", "watch": {"mariadb_flows": [3340, {"id": 3340, "region": "ap-beijing"}]}},
        "cfg.yaml",
        {},
    )
    assert len(config.tasks) == 2


def test_top_level_must_be_a_mapping() -> None:
    assert problems(["a"]) == ["cfg.yaml: <top level>: expected a mapping, got a list"]


def test_yaml_syntax_errors_name_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("region: ap-guangzhou\nwatch:\n  mariadb_flows: [1, 2\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    [problem] = caught.value.problems
    assert problem.startswith(f"{path}: line ")
    assert "invalid YAML" in problem


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="file not found"):
        load_config(tmp_path / "nope.yaml")


async def resolve(config: Config, env: dict[str, str]) -> Credentials:
    provider = await open_provider(config.credentials, env, where=f"{config.source}: credentials")
    return await provider.get()


async def test_credentials_come_from_config_then_environment() -> None:
    from_file = parse_config({"credentials": {"secret_id": "id1", "secret_key": "k1"}}, "c.yaml", {})
    env = {
        "TENCENTCLOUD_SECRET_ID": "id2",
        "TENCENTCLOUD_SECRET_KEY": "k2",
        "TENCENTCLOUD_SESSION_TOKEN": "t",
    }
    assert (await resolve(from_file, env)).secret_id == "id1"
    # cvm_role: false keeps the test off the network (no metadata service lookup).
    empty = parse_config(
        {"credentials": {"secret_id": "${UNSET}", "secret_key": "${UNSET}", "cvm_role": False}}, "c.yaml", {}
    )
    creds = await resolve(empty, env)
    assert (creds.secret_id, creds.secret_key, creds.token) == ("id2", "k2", "t")
    with pytest.raises(CredentialsError) as caught:
        await resolve(empty, {})
    assert "c.yaml: credentials.secret_id/secret_key" in str(caught.value)
    assert "TENCENTCLOUD_SECRET_ID" in str(caught.value)


async def test_half_a_key_pair_is_an_error_not_a_fallback() -> None:
    half = parse_config({"credentials": {"secret_id": "id1"}}, "c.yaml", {})
    with pytest.raises(CredentialsError, match="secret_key is empty"):
        await resolve(half, {"TENCENTCLOUD_SECRET_ID": "id2", "TENCENTCLOUD_SECRET_KEY": "k2"})


async def test_secrets_stay_out_of_reprs() -> None:
    config = parse_config({"credentials": {"secret_id": "id1", "secret_key": "s3cr3t"}}, "c.yaml", {})
    assert "s3cr3t" not in repr(config)
    assert "s3cr3t" not in repr(await resolve(config, {}))


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "exporter", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env if env is not None else {"PATH": "/usr/bin:/bin"},
    )


def test_check_config_exit_codes(tmp_path: Path) -> None:
    good = tmp_path / "good.yaml"
    good.write_text(yaml.safe_dump({"region": "ap-guangzhou", "watch": {"mariadb_flows": [1]}}))
    result = run_cli("--config.file", str(good), "--check-config")
    assert result.returncode == 0, result.stderr
    assert "valid, 1 task(s)" in result.stdout

    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"region": "ap-guangzhou", "watch": {"mariadb_flows": [1, "x"]}}))
    result = run_cli("--config.file", str(bad), "--check-config")
    assert result.returncode == 2
    assert f"{bad}: watch.mariadb_flows[1]: expected a positive integer flow ID" in result.stderr


def test_daemon_without_credentials_exits_2_naming_sources(tmp_path: Path) -> None:
    good = tmp_path / "good.yaml"
    document = {"region": "ap-guangzhou", "credentials": {"cvm_role": False}, "watch": {"mariadb_flows": [1]}}
    good.write_text(yaml.safe_dump(document))
    result = run_cli("--config.file", str(good), "--web.listen-address", "127.0.0.1:0")
    assert result.returncode == 2
    assert "no Tencent Cloud credentials found" in result.stderr
    assert "TENCENTCLOUD_SECRET_ID" in result.stderr
    assert "metadata service disabled" in result.stderr


def test_bad_config_stops_the_daemon_with_exit_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("polling:\n  intervall: 5s\n")
    result = run_cli("--config.file", str(bad))
    assert result.returncode == 2
    assert f"{bad}: polling.intervall: unknown key" in result.stderr


def test_endpoint_host_is_lower_cased_for_signing() -> None:
    config = parse_config(
        {"apis": {CDB.name: {"endpoint": "https://CDB.intl.TencentCloudAPI.com/"}}}, "c.yaml", {}
    )
    assert config.apis[CDB.name].endpoint == "https://cdb.intl.tencentcloudapi.com"


def test_a_yaml_value_its_type_cannot_hold_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("region: ap-guangzhou\nwatch:\n  mariadb_flows: [0000-0-0 0:00:00]\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path, {})
    assert caught.value.problems == [f"{path}: invalid YAML: a value cannot be read (ValueError)"]


def test_a_misspelt_key_is_one_problem_without_those_that_follow_from_it() -> None:
    """Before: `regoin:` gave seven problems, the typo and a "no region" for each of six tasks."""
    watch = {"mariadb_flows": [1, 2, 3], "cdb_async_requests": ["a", "b", {"id": "c", "labels": {"t": "x"}}]}
    assert problems({"regoin": "ap-guangzhou", "watch": watch}) == [
        "cfg.yaml: regoin: unknown key (did you mean region? expected one of: accounts, apis, credentials, "
        "discovery, limits, metrics, polling, region, watch)"
    ]
    # On one entry, with no region at the top: the entry's typo only.
    entry = {"id": 1, "regin": "ap-guangzhou"}
    assert problems({"watch": {"mariadb_flows": [entry]}}) == [
        "cfg.yaml: watch.mariadb_flows[0].regin: unknown key (did you mean region? expected one of: account, "
        "id, labels, region)"
    ]
    # A misspelt `accounts:`: the typo, not every task and discovery entry naming one of its accounts.
    accounts = [{"name": "prod", "credentials": {"secret_id": "AKIDp", "secret_key": "k"}}]
    found = problems(
        {
            "acounts": accounts,
            "region": "ap-guangzhou",
            "watch": {"mariadb_flows": [{"id": 1, "account": "prod"}]},
            "discovery": {"regions": ["ap-guangzhou"], "accounts": ["prod"]},
        }
    )
    assert [p.split(": ")[1] for p in found] == ["acounts"]
    # An unknown key that resembles nothing is reported as before, and the problems that are real stay.
    found = problems({"colour": "blue", "watch": {"mariadb_flows": [1]}})
    assert found == [
        "cfg.yaml: colour: unknown key (expected one of: accounts, apis, credentials, discovery, limits, "
        "metrics, polling, region, watch)",
        "cfg.yaml: watch.mariadb_flows[0]: no region: set `region` at the top level or on this task",
    ]
