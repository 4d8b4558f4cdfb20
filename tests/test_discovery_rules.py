"""Discovery's rules on their own: reading list pages (hostile ones too), which tasks are kept and for how
long, and how a shared quota is split."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from exporter.catalogue.listapis import TAG_MAX, Listed
from exporter.catalogue.products import CDB, MARIADB, POSTGRES, InvalidResponse
from exporter.config.parser import DISCOVERED, DiscoveryConfig, Key, WatchedTask, parse_config
from exporter.daemon.core import Daemon
from exporter.exposition.metrics import Metrics
from exporter.polling.discovery import ABSORB_BATCH, Discovery


def _cdb_page(items: list[Any], total: object = None) -> dict[str, Any]:
    return {"TotalCount": len(items) if total is None else total, "Items": items, "RequestId": "r"}


def test_a_cdb_page_gives_ids_times_instances_and_progress() -> None:
    assert CDB.listing is not None
    item = {
        "AsyncRequestId": "f96e4f3c-8fc96c86-2ec79ac8-cb63a7a7",
        "TaskType": "MODIFY PARAM",
        "TaskStatus": "RUNNING",
        "StartTime": "2017-12-31 10:40:01",
        "EndTime": "0000-00-00 00:00:00",
        "InstanceIds": ["cdb-c1nl9rpv"],
        "Progress": 40,
    }
    page = CDB.listing.page(_cdb_page([item, {"AsyncRequestId": ""}], total=205), CDB.id_kind)
    assert (page.total, page.size) == (205, 2)  # the entry without an ID still counts towards paging
    [listed] = page.items
    assert listed.task_id == "f96e4f3c-8fc96c86-2ec79ac8-cb63a7a7"
    assert listed.start_time == 1514688001.0  # 10:40:01 in UTC+8 is 02:40:01 UTC
    assert listed.end_time is None
    assert (listed.instance_id, listed.task_type, listed.progress) == ("cdb-c1nl9rpv", "MODIFY PARAM", 0.4)


def test_a_request_asks_for_one_page_of_the_window_in_utc_plus_8() -> None:
    assert CDB.listing is not None
    assert MARIADB.listing is not None
    assert CDB.listing.payload(200, 1514688001.0, 1514688061.0) == {
        "Offset": 200,
        "Limit": 100,
        "StartTimeBegin": "2017-12-31 10:40:01",
        "StartTimeEnd": "2017-12-31 10:41:01",
    }
    # MariaDB lists the instances busy with a flow instead of a time window.
    assert MARIADB.listing.payload(0, 0.0, 1.0) == {"Status": [1], "Offset": 0, "Limit": 100}


def test_instances_give_their_running_flow_with_tags_and_names() -> None:
    assert MARIADB.listing is not None
    tags = [{"TagKey": f"k{n}", "TagValue": "v"} for n in range(TAG_MAX + 10)]
    instances = [
        {
            "InstanceId": "tdsql-ow728lmc",
            "InstanceName": "orders\ud800",
            "Locker": 3340,
            "ResourceTags": tags,
        },
        {"InstanceId": "tdsql-idle", "Locker": 0},  # not busy: no flow
        {"InstanceId": "tdsql-odd", "Locker": "3341"},  # an integer in a string is still the flow
    ]
    page = MARIADB.listing.page({"TotalCount": 3, "Instances": instances}, MARIADB.id_kind)
    assert [(i.task_id, i.instance_id) for i in page.items] == [
        ("3340", "tdsql-ow728lmc"),
        ("3341", "tdsql-odd"),
    ]
    assert page.items[0].instance_name == "orders\ufffd"  # made valid UTF-8 before it can be exported
    assert len(page.items[0].tags) == TAG_MAX


@pytest.mark.parametrize(
    ("response", "problem"),
    [
        ({"Items": []}, "TotalCount"),
        ({"TotalCount": True, "Items": []}, "TotalCount"),
        ({"TotalCount": -1, "Items": []}, "TotalCount"),
        ({"TotalCount": 1, "Items": {"a": 1}}, "Items is not a list"),
        ({"TotalCount": 1, "Items": ["x"]}, "Items holds a str"),
    ],
)
def test_a_page_without_what_the_api_documents_is_an_invalid_response(
    response: dict[str, Any], problem: str
) -> None:
    assert CDB.listing is not None
    with pytest.raises(InvalidResponse, match=problem):
        CDB.listing.page(response, CDB.id_kind)
    # An empty page may come as null.
    assert CDB.listing.page({"TotalCount": 0, "Items": None}, CDB.id_kind).items == ()


class _Watcher:
    def __init__(self) -> None:
        self.watched: list[tuple[WatchedTask, Listed]] = []

    def __call__(self, batch: list[tuple[WatchedTask, Listed]]) -> None:
        self.watched.extend(batch)


def _discovery(config: DiscoveryConfig, owns: bool = True) -> tuple[Discovery, _Watcher]:
    watcher = _Watcher()
    discovery = Discovery(watcher, lambda task: owns, Metrics())
    discovery.config = config
    return discovery, watcher


def test_discovered_tasks_take_only_the_configured_tags_and_are_forgotten_after_retention() -> None:
    config = DiscoveryConfig(regions=("ap-guangzhou",), retention=100.0, interval=10.0, lookback=1000.0)
    discovery, watcher = _discovery(config)
    listed = Listed("3340", tags=(("cost", "1"), ("team", "dba")))
    discovery._absorb("default", MARIADB, "ap-guangzhou", [listed], now=0.0)
    key: Key = (MARIADB.name, "ap-guangzhou", "3340")
    [(task, _)] = watcher.watched
    assert task == WatchedTask(MARIADB.name, "3340", "ap-guangzhou", ())  # tag_labels is empty: no labels
    assert task.origin == DISCOVERED
    assert key in discovery.found

    final: dict[Key, float] = {}
    assert discovery.expire(50.0, final.get, lambda k: True) == []  # still running
    final[key] = 20.0
    assert discovery.expire(119.0, final.get, lambda k: True) == []
    assert discovery.expire(120.0, final.get, lambda k: True) == [key]
    # The list may still show it: it does not come back while the tombstone lasts...
    discovery._absorb("default", MARIADB, "ap-guangzhou", [listed], now=121.0)
    assert key not in discovery.found
    # ...which is as long as the list can show it (lookback plus three intervals).
    discovery.expire(120.0 + 1030.1, final.get, lambda k: True)
    discovery._absorb("default", MARIADB, "ap-guangzhou", [listed], now=1200.0)
    assert key in discovery.found


def test_tasks_the_status_api_never_knew_go_once_no_sweep_lists_them() -> None:
    config = DiscoveryConfig(regions=("ap-guangzhou",), retention=30.0, interval=60.0, tag_labels=("team",))
    discovery, watcher = _discovery(config)
    discovery._absorb("default", MARIADB, "ap-guangzhou", [Listed("77", tags=(("team", "dba"),))], now=0.0)
    assert watcher.watched[0][0].labels == (("team", "dba"),)
    key: Key = (MARIADB.name, "ap-guangzhou", "77")
    none: dict[Key, float] = {}
    # At least three intervals, even with a shorter retention, so one failed sweep does not drop it.
    assert discovery.expire(179.0, none.get, lambda k: False) == []
    assert discovery.expire(180.0, none.get, lambda k: True) == []  # the status API knows it: kept
    assert discovery.expire(180.0, none.get, lambda k: False) == [key]


def test_tasks_of_other_shards_are_neither_kept_nor_watched() -> None:
    discovery, watcher = _discovery(DiscoveryConfig(regions=("ap-guangzhou",)), owns=False)
    discovery._absorb("default", MARIADB, "ap-guangzhou", [Listed("3340")], now=0.0)
    assert watcher.watched == []
    assert discovery.found == {}


def test_postgres_status_polling_gives_discovery_its_share_of_the_one_quota() -> None:
    document = {"discovery": {"regions": ["ap-guangzhou"]}, "apis": {POSTGRES.name: {"list_rate_limit": 5}}}
    rates = Daemon(parse_config(document, "c.yaml", env={}))._rate_limits(
        parse_config(document, "c.yaml", {})
    )
    assert rates["default", POSTGRES.name] == 15.0  # DescribeTasks is both: 20 per second between them
    assert rates["default", CDB.name] == 40.0  # its list API is another action with a quota of its own
    without = Daemon(parse_config({}, "c.yaml", env={}))
    assert without._rate_limits(without.config)["default", POSTGRES.name] == 20.0


def test_a_task_two_accounts_list_stays_with_the_first_that_found_it() -> None:
    """Sub-accounts of one main account list the same operations; the task must not change account (and
    so label, bucket and keys) from one sweep to the next."""
    discovery, watcher = _discovery(DiscoveryConfig(regions=("ap-guangzhou",), accounts=("a", "b")))
    discovery._absorb("a", MARIADB, "ap-guangzhou", [Listed("5")], now=0.0)
    discovery._absorb("b", MARIADB, "ap-guangzhou", [Listed("5")], now=1.0)
    # Listed as before, so not handed over again: it stays watched as the first account's.
    assert [task.account for task, _ in watcher.watched] == ["a"]
    found = discovery.found[(MARIADB.name, "ap-guangzhou", "5")]
    assert (found.task.account, found.last_listed) == ("a", 1.0)


async def test_taking_a_large_sweep_leaves_the_loop_time_for_work_that_needs_several_turns() -> None:
    """A status request takes several loop turns to leave; while a sweep's operations are set up, such work
    keeps going (one loop turn between batches let at most one such step through a batch)."""
    config = DiscoveryConfig(regions=("ap-guangzhou",), interval=10.0, lookback=1000.0)

    def busy_watch(batch: list[tuple[WatchedTask, Listed]]) -> None:
        began = time.perf_counter()
        while time.perf_counter() - began < 0.001:  # stands for setting up and rendering the batch
            pass

    discovery = Discovery(busy_watch, lambda task: True, Metrics(), max_tasks=10_000)
    discovery.config = config
    done = 0

    async def several_turns() -> None:
        nonlocal done
        while True:
            for _ in range(5):
                await asyncio.sleep(0)
            done += 1

    worker = asyncio.create_task(several_turns())
    await asyncio.sleep(0)
    items = [Listed(str(n)) for n in range(2_000)]  # 80 batches, 80 ms of work
    began = done
    await discovery._take("default", MARIADB, "ap-guangzhou", items, 0.0)
    worker.cancel()
    assert len(discovery.found) == 2_000
    assert done - began >= 2_000 // ABSORB_BATCH  # at least one five-turn step a batch (one turn: 1 in 5)
