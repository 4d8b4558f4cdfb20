"""Accounts and endpoints: the config sections, where each task's requests go, and one bucket per lane."""

from __future__ import annotations

import contextlib
import copy
import sqlite3
from pathlib import Path
from typing import Any

import pytest
import yaml

from exporter.catalogue.products import CDB, MARIADB, POSTGRES, REDIS
from exporter.config.lanes import Lane
from exporter.config.parser import ConfigError, load_config, parse_config, parse_task, redacted
from exporter.credentials.chain import StaticProvider
from exporter.credentials.signing import Credentials
from exporter.daemon.core import Daemon, Options, ReloadError
from exporter.store.database import Store

TWO_ACCOUNTS: dict[str, Any] = {
    "accounts": [
        {"name": "prod", "credentials": {"secret_id": "AKIDprod", "secret_key": "prod-key"}},
        {"name": "staging", "credentials": {"secret_id": "AKIDstaging", "secret_key": "staging-key"}},
    ],
    "region": "ap-guangzhou",
}


def problems(document: object) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(document, "cfg.yaml", {})
    return caught.value.problems


def test_without_accounts_the_credentials_section_is_the_default_account() -> None:
    config = parse_config({"credentials": {"secret_id": "AKIDx", "secret_key": "k"}}, "cfg.yaml", {})
    [account] = config.accounts
    assert (account.name, account.credentials.secret_id, account.use_env) == ("default", "AKIDx", True)
    assert config.where(account) == "cfg.yaml: credentials"


def test_accounts_each_have_their_credentials_and_tasks_default_to_the_first() -> None:
    document = {
        **TWO_ACCOUNTS,
        "watch": {"mariadb_flows": [1, {"id": 2, "account": "staging"}]},
        "discovery": {"regions": ["ap-guangzhou"]},
    }
    config = parse_config(document, "cfg.yaml", {})
    assert config.account_names == ("prod", "staging")
    assert [a.credentials.secret_id for a in config.accounts] == ["AKIDprod", "AKIDstaging"]
    assert [a.use_env for a in config.accounts] == [False, False]  # the environment is the default's
    assert config.where(config.accounts[1]) == "cfg.yaml: accounts[1].credentials"
    assert [(t.task_id, t.account) for t in config.tasks] == [("1", "prod"), ("2", "staging")]
    assert config.discovery is not None
    assert config.discovery.accounts == ("prod", "staging")
    shown = redacted(config)
    assert "credentials" not in shown  # each account's section once, under accounts
    assert [a["credentials"]["secret_key"] for a in shown["accounts"]] == ["<secret>", "<secret>"]


def test_bad_accounts_are_reported_with_their_key_paths() -> None:
    found = problems(
        {
            "credentials": {"secret_id": "x"},
            "accounts": [
                {"name": "prod", "credentials": {"secret_idd": "typo"}},
                {"name": "prod"},
                {"name": "has space"},
                "staging",
            ],
            "watch": {"mariadb_flows": [{"id": 1, "region": "ap-guangzhou", "account": "qa"}]},
            "discovery": {"regions": ["ap-guangzhou"], "accounts": ["prod", "qa"]},
        }
    )
    expected = [
        "cfg.yaml: credentials: expected either `credentials:` (one account) or `accounts:`",
        "cfg.yaml: accounts[0].credentials.secret_idd: unknown key",
        "cfg.yaml: accounts[1].name: account 'prod' is already defined at accounts[0]",
        "cfg.yaml: accounts[2].name: expected an account name",
        "cfg.yaml: accounts[3]: expected a mapping",
        "cfg.yaml: watch.mariadb_flows[0].account: expected one of the accounts prod, got str 'qa'",
        "cfg.yaml: discovery.accounts[1]: expected one of the accounts prod, got 'qa'",
    ]
    for line in expected:
        assert any(p.startswith(line) for p in found), (line, found)
    twins = [{"name": n, "credentials": {"secret_id": "AKIDsame", "secret_key": "k"}} for n in ("a", "b")]
    assert problems({"accounts": twins}) == [
        "cfg.yaml: accounts[1].credentials.secret_id: the same SecretId as account 'a': Tencent counts one "
        "quota for both; give each account its own keys"
    ]
    assert problems({"accounts": []}) == [
        "cfg.yaml: accounts: expected a list of {name, credentials}, got an empty list"
    ]


def test_the_task_api_checks_the_account() -> None:
    task = parse_task(
        CDB.name, {"id": "cdb-1", "account": "staging"}, "ap-guangzhou", "request", None, ["a", "staging"]
    )
    assert task.account == "staging"
    assert task.as_json()["account"] == "staging"
    with pytest.raises(ConfigError, match="account: expected one of the accounts a, staging"):
        parse_task(
            CDB.name, {"id": "cdb-1", "account": "nope"}, "ap-guangzhou", "request", None, ["a", "staging"]
        )


def test_endpoints_by_region_template_override_and_financial_zones() -> None:
    config = parse_config(
        {
            "apis": {
                CDB.name: {
                    "endpoint": "https://cdb.{region}.tencentcloudapi.com",
                    "endpoints": {"ap-shanghai": "http://127.0.0.1:8080"},
                },
                MARIADB.name: {"endpoint": "https://mariadb.ap-guangzhou.tencentcloudapi.com"},
            }
        },
        "cfg.yaml",
        {},
    )
    cdb, mariadb, redis = config.apis[CDB.name], config.apis[MARIADB.name], config.apis[REDIS.name]
    assert cdb.endpoint_for("ap-beijing") == "https://cdb.ap-beijing.tencentcloudapi.com"
    assert cdb.endpoint_for("ap-shanghai") == "http://127.0.0.1:8080"
    # A financial zone answers only on its own host: it goes there without any config...
    assert redis.endpoint_for("ap-shanghai-fsi") == "https://redis.ap-shanghai-fsi.tencentcloudapi.com"
    assert redis.endpoint_for("ap-guangzhou") == "https://redis.tencentcloudapi.com"
    assert mariadb.endpoint_for("ap-shenzhen-fsi") == "https://mariadb.ap-shenzhen-fsi.tencentcloudapi.com"
    # ...and every ordinary region to the one configured endpoint.
    assert mariadb.endpoint_for("ap-beijing") == "https://mariadb.ap-guangzhou.tencentcloudapi.com"


def test_bad_endpoints_are_reported() -> None:
    found = problems(
        {
            "apis": {
                CDB.name: {"endpoint": "https://{region}x/path", "endpoints": {"Bad Region": "http://x"}},
                REDIS.name: {"endpoints": {"ap-shanghai": "ftp://x", "ap-beijing": "https://r.{region}.com"}},
                MARIADB.name: {"endpoint": "https://example.com/?{region}"},
                POSTGRES.name: {"endpoints": ["https://x"]},
            }
        }
    )
    expected = [
        "cfg.yaml: apis.cdb.endpoint: expected a URL without path or query",
        "cfg.yaml: apis.cdb.endpoints.Bad Region: expected a region name",
        "cfg.yaml: apis.redis.endpoints.ap-shanghai: expected a URL like https://host[:port]",
        "cfg.yaml: apis.redis.endpoints.ap-beijing: expected the region's own endpoint, without {region}",
        "cfg.yaml: apis.mariadb.endpoint: expected {region} in the host name",
        "cfg.yaml: apis.postgres.endpoints: expected a mapping of region names to endpoint URLs",
    ]
    for line in expected:
        assert any(p.startswith(line) for p in found), (line, found)


def _daemon(document: dict[str, Any], tmp_path: Path, **options: Any) -> Daemon:
    return Daemon(
        parse_config(document, "cfg.yaml", {}),
        StaticProvider(Credentials("id", "key"), "test"),
        Options(storage_path=tmp_path / "store.db", **options),
        env={},
    )


async def test_one_lane_per_account_product_and_endpoint(tmp_path: Path) -> None:
    document = {
        **TWO_ACCOUNTS,
        "apis": {
            CDB.name: {"endpoint": "http://127.0.0.1:9", "endpoints": {"ap-shanghai": "http://127.0.0.1:10"}},
            MARIADB.name: {"endpoint": "http://127.0.0.1:9", "rate_limit": 6},
        },
        "watch": {
            "cdb_async_requests": [
                "a",
                {"id": "b", "region": "ap-shanghai"},
                {"id": "c", "account": "staging"},
                {"id": "d", "account": "staging", "region": "ap-shanghai"},
                {"id": "e", "account": "staging", "region": "ap-shanghai"},
            ],
            "mariadb_flows": [1, {"id": 2, "region": "ap-shanghai"}],
        },
    }
    daemon = _daemon(document, tmp_path)
    await daemon.start()
    try:
        assert daemon._scheduler is not None
        lanes = daemon._scheduler.lanes
        action = "DescribeAsyncRequestInfo"
        assert {lane: s.watched for lane, s in lanes.items()} == {
            Lane("prod", CDB.name, action, "http://127.0.0.1:9"): 1,
            Lane("prod", CDB.name, action, "http://127.0.0.1:10"): 1,
            Lane("staging", CDB.name, action, "http://127.0.0.1:9"): 1,
            Lane("staging", CDB.name, action, "http://127.0.0.1:10"): 2,
            # Two regions, one endpoint: one quota, one lane.
            Lane("prod", MARIADB.name, "DescribeFlow", "http://127.0.0.1:9"): 2,
        }
        buckets = {id(s.bucket) for s in lanes.values()}
        assert len(buckets) == len(lanes)  # no two lanes share a bucket
        # Each lane at the whole quota: Tencent counts it per account and endpoint.
        assert {s.bucket.max_rate for lane, s in lanes.items() if lane.product == CDB.name} == {40.0}
        get = daemon.metrics.registry.get_sample_value
        labels = {"account": "staging", "product": CDB.name, "action": action, "api_endpoint": "127.0.0.1:10"}
        assert get("tencentcloud_api_rate_limit_requests_per_second", labels) == 40.0
        assert get("tencentcloud_api_current_rate_limit_requests_per_second", labels) == 40.0
        assert get("tencentcloud_exporter_watched_tasks", {"account": "staging", "product": CDB.name}) == 3
    finally:
        await daemon.stop()


async def test_a_reload_moves_a_task_to_its_new_lane_keeping_what_was_learnt(tmp_path: Path) -> None:
    path = tmp_path / "cfg.yaml"
    document: dict[str, Any] = {
        **TWO_ACCOUNTS,
        "apis": {CDB.name: {"endpoint": "http://127.0.0.1:9"}},
        "watch": {"cdb_async_requests": ["a", "b"]},
    }
    path.write_text(yaml.safe_dump(document))
    daemon = _daemon(document, tmp_path, config_path=path)
    await daemon.start()
    try:
        assert daemon._scheduler is not None
        state = daemon.store.get((CDB.name, "ap-guangzhou", "a"))
        assert state is not None
        document["watch"] = {"cdb_async_requests": [{"id": "a", "account": "staging"}]}
        path.write_text(yaml.safe_dump(document))
        await daemon.reload()
        assert daemon.store.get((CDB.name, "ap-guangzhou", "a")) is state  # the same state, in a new lane
        assert state.task.account == "staging"
        assert daemon.store.get((CDB.name, "ap-guangzhou", "b")) is None
        [lane] = daemon._scheduler.lanes  # prod's lane, left empty, is closed
        assert lane.account == "staging"
        get = daemon.metrics.registry.get_sample_value
        gone = {"account": "prod", "product": CDB.name, "action": lane.action, "api_endpoint": "127.0.0.1:9"}
        assert get("tencentcloud_api_rate_limit_requests_per_second", gone) is None
        assert b'account="staging"' in b"".join(state.lines)
        # An account removed by a reload: its registered tasks stay stored, and are not polled.
        await daemon.register(parse_task(CDB.name, {"id": "r"}, "ap-guangzhou", "api", None, ["staging"]))
        document["accounts"] = document["accounts"][:1]
        document["watch"] = {}
        path.write_text(yaml.safe_dump(document))
        await daemon.reload()
        assert daemon.store.get((CDB.name, "ap-guangzhou", "r")) is None
        assert (CDB.name, "ap-guangzhou", "r") in daemon._registered
    finally:
        await daemon.stop()


async def test_a_version_1_store_is_migrated_and_its_tasks_belong_to_the_default_account(
    tmp_path: Path,
) -> None:
    path = tmp_path / "store.db"
    with contextlib.closing(sqlite3.connect(path)) as raw:
        raw.execute(
            "CREATE TABLE registrations (service TEXT NOT NULL, region TEXT NOT NULL, task_id TEXT NOT NULL,"
            " labels TEXT NOT NULL, registered_at REAL NOT NULL, final_since REAL,"
            " PRIMARY KEY (service, region, task_id)) WITHOUT ROWID"
        )
        raw.execute(
            "CREATE TABLE statuses (service TEXT NOT NULL, region TEXT NOT NULL, task_id TEXT NOT NULL,"
            " status TEXT NOT NULL, since REAL NOT NULL,"
            " PRIMARY KEY (service, region, task_id)) WITHOUT ROWID"
        )
        raw.execute(
            f"INSERT INTO registrations VALUES ('{CDB.name}', 'ap-guangzhou', 'old', '{{}}', 1.0, NULL)"
        )
        raw.execute("PRAGMA application_id = 1413698629")
        raw.execute("PRAGMA user_version = 1")
        raw.commit()
    store = Store(path)
    await store.open()
    [registration] = store.registrations()
    assert registration.task.account == "default"
    staged = parse_task(CDB.name, {"id": "new", "account": "staging"}, "ap-guangzhou", "api", None, None)
    await store.put_registration(type(registration)(staged, 2.0))
    await store.close()
    again = Store(path)
    await again.open()
    assert {r.task.task_id: r.task.account for r in again.registrations()} == {
        "old": "default",
        "new": "staging",
    }
    await again.close()
    with contextlib.closing(sqlite3.connect(path)) as raw:
        assert raw.execute("PRAGMA user_version").fetchone()[0] == 4  # then product columns, durations


async def test_two_accounts_ending_at_one_identity_are_warned_about(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    profile = tmp_path / "credentials"
    profile.write_text("[default]\nsecret_id = AKIDshared\nsecret_key = shared-key\n")
    section = {"profile": str(profile), "cvm_role": False}
    document = {"accounts": [{"name": n, "credentials": section} for n in ("a", "b")]}
    daemon = Daemon(parse_config(document, "cfg.yaml", {}), None, Options(), env={})
    await daemon.start()
    try:
        [record] = [r for r in caplog.records if "same credentials" in r.getMessage()]
        assert record.fields["accounts"] == "a, b"  # type: ignore[attr-defined]
        assert "shared-key" not in caplog.text
    finally:
        await daemon.stop()


async def test_a_reload_replaces_only_the_accounts_whose_credentials_changed(tmp_path: Path) -> None:
    path = tmp_path / "cfg.yaml"
    # A deep copy: the test edits the accounts, which other tests read from TWO_ACCOUNTS in any order.
    document: dict[str, Any] = {
        **copy.deepcopy(TWO_ACCOUNTS),
        "apis": {CDB.name: {"endpoint": "http://127.0.0.1:9"}},
    }
    path.write_text(yaml.safe_dump(document))
    daemon = Daemon(load_config(path, {}), None, Options(config_path=path), env={})
    await daemon.start()
    try:
        before = dict(daemon.credentials)
        assert (await before["staging"].get()).secret_id == "AKIDstaging"
        document["accounts"][1]["credentials"] = {"secret_id": "AKIDstaging2", "secret_key": "new-key"}
        path.write_text(yaml.safe_dump(document))
        await daemon.reload()
        after = daemon.credentials
        assert after["prod"] is before["prod"]  # unchanged section: same provider, same cached keys
        assert after["staging"] is not before["staging"]
        assert (await after["staging"].get()).secret_id == "AKIDstaging2"
        # A section that cannot give keys keeps the running config whole.
        document["accounts"][1]["credentials"] = {"secret_id": "AKIDhalf", "cvm_role": False}
        path.write_text(yaml.safe_dump(document))
        with pytest.raises(ReloadError, match=r"accounts\[1\]\.credentials"):
            await daemon.reload()
        assert daemon.credentials["staging"] is after["staging"]
    finally:
        await daemon.stop()
