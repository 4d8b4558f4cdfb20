"""The list actions discovery sweeps, through each product's official SDK client: tasks appear as they start,
fields deserialize into the SDKs' models, paging, time and region bounds, the Locker of snapshot lists,
quotas of their own (PostgreSQL's shared with its status action), per-action faults, and the exporter's own
list parser (`exporter.listapis`) reading the same answers into the same operations.

Parameters and fields are the SDKs' (tests/simulator_sdk.py LIST_SDKS), not the catalogue's, so the
catalogue's list entries are checked here too.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import asdict
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from tencentcloud.common.exception.tencent_cloud_sdk_exception import TencentCloudSDKException

from exporter.listapis import PAGE_SIZE
from exporter.services import BY_NAME, DISCOVERABLE, InvalidResponse
from exporter.simulator import (
    Faults,
    Phase,
    SimTask,
    Simulator,
    SimulatorThread,
    task_from_dict,
    task_to_dict,
)
from exporter.simulator.scenario import Status
from tests.simulator_sdk import (
    KEY,
    LIST_SDKS,
    REGION,
    SDKS,
    TEMP_KEY,
    FakeClock,
    error_code,
    sdk_call,
    sdk_client,
    sdk_error,
    sdk_list,
    sdk_list_items,
    sdk_list_raw,
    signed,
    simulators,
)

PRODUCTS = sorted(LIST_SDKS)
STARTED_LISTS = [p for p in PRODUCTS if LIST_SDKS[p].window is not None]
SNAPSHOTS = [p for p in PRODUCTS if LIST_SDKS[p].window is None]
START = 1000.0
# The wall clock starts at a whole second near now and moves with the fake clock, so the times the answers
# show are exact and signatures stay fresh.
WALL = float(int(time.time()))
OTHER_REGION = "ap-shanghai"

# The published quotas of the list actions, from the products' API documentation.
LIST_QUOTAS = {"cdb": 100, "redis": 100, "cynosdb": 1000, "mariadb": 200, "dcdb": 200, "postgres": 20}
# Limit when none is given, where the SDK's request model documents one.
DEFAULT_LIMITS = {"cdb": 20, "redis": 20, "postgres": 20, "mariadb": 20, "dcdb": 10}
# Each product's running and succeeded status, as its status API spells them, and its instance IDs' prefix.
SPELLING: dict[str, tuple[Status, Status, str]] = {
    "cdb": ("RUNNING", "SUCCESS", "cdb-"),
    "redis": ("running", "succeed", "crs-"),
    "cynosdb": (2, 0, "cynosdbmysql-ins-"),
    "postgres": ("Running", "Success", "postgres-"),
    "mariadb": (2, 0, "tdsql-"),
    "dcdb": (2, 0, "dcdbt-"),
}
AUTH_FAILURE = "AuthFailure.InvalidAuthorization"
Start = Callable[..., SimulatorThread]  # the fixture: starts a simulator with these tasks and options


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(START)


@pytest.fixture
def start(clock: FakeClock) -> Iterator[Start]:
    with simulators(clock) as start_simulator:

        def start_listing(*tasks: SimTask, **options: Any) -> SimulatorThread:
            options.setdefault("wall_clock", lambda: WALL + clock.now - START)
            return start_simulator(*tasks, **options)

        yield start_listing


def china_time(unix_time: float) -> str:
    return datetime.fromtimestamp(unix_time, timezone(timedelta(hours=8))).strftime("%Y-%m-%d %H:%M:%S")


def task_id(product: str, n: int) -> str:
    return f"{n:08x}-5eed0000-00000000-00000000" if product == "cdb" else str(1000 + n)


def task(
    product: str, n: int, *phases: Phase, started: float = 0.0, instance: str | None = None, **fields: Any
) -> SimTask:
    """Task n of a product, running unless phases say otherwise, on an instance of its own by default."""
    return SimTask(
        product,
        task_id(product, n),
        phases or (Phase(0, SPELLING[product][0]),),
        instance_id=instance or f"{SPELLING[product][2]}{n:04d}",
        started=started,
        **fields,
    )


def key(product: str, n: int) -> str:
    """How task n shows in its product's list: by its ID, or in a snapshot by its instance."""
    return f"{SPELLING[product][2]}{n:04d}" if product in SNAPSHOTS else task_id(product, n)


def key_of(product: str, item: Any) -> str:
    """What one SDK item stands for: the ID the status action takes, or a snapshot's instance."""
    if product == "cdb":
        return str(item.AsyncRequestId)
    if product == "cynosdb":
        return str(item.FlowId)
    if product in SNAPSHOTS:
        return str(item.InstanceId)
    return str(item.TaskId)


def listed(client: Any, product: str, **params: Any) -> list[str]:
    """Every item of a list that fits on one page, by key_of, in the order the API gives them."""
    total, items = sdk_list_items(client, product, Limit=100, **params)
    assert total == len(items)
    return [key_of(product, item) for item in items]


def burst(thread: SimulatorThread, product: str, count: int, payload: dict[str, Any]) -> list[str | None]:
    """`count` list requests as fast as one signature allows; the error code of each (None: answered)."""
    service = BY_NAME[product]
    assert service.listing is not None
    headers, body = signed(
        thread, payload, action=service.listing.action, service=product, version=service.listing.version
    )
    return [error_code(thread, headers, body) for _ in range(count)]


def shows(item: Any, **expected: Any) -> None:
    """The SDK model holds these field values."""
    assert {name: getattr(item, name) for name in expected} == expected


def faults(thread: SimulatorThread, **document: Any) -> int:
    """POSTs to the control endpoint for faults; its HTTP status."""
    request = urllib.request.Request(
        thread.url + "/_sim/faults",
        data=json.dumps(document).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return int(error.code)


def test_the_list_sdk_table_agrees_with_the_catalogue() -> None:
    assert set(PRODUCTS) == {s.name for s in DISCOVERABLE}
    for product, sdk in LIST_SDKS.items():
        listing = BY_NAME[product].listing
        assert listing is not None
        assert (listing.action, listing.version) == (sdk.action, SDKS[product].client._apiVersion)
        assert (listing.items_field, listing.window) == (sdk.items, sdk.window)
        assert listing.default_rate_limit <= LIST_QUOTAS[product]
        request = getattr(SDKS[product].models, f"{sdk.action}Request")()
        for name in (*(sdk.window or ()), "Offset", "Limit", *listing.filters):
            assert hasattr(request, name), (product, name)
    assert BY_NAME["postgres"].listing_shares_quota
    assert not any(BY_NAME[p].listing_shares_quota for p in PRODUCTS if p != "postgres")


# --------------------------------------------------------------------------- start-time lists


@pytest.mark.parametrize("product", STARTED_LISTS)
def test_tasks_appear_in_the_list_once_they_start(start: Start, clock: FakeClock, product: str) -> None:
    thread = start(task(product, 1, started=-60))
    client = sdk_client(product, thread.url)
    assert listed(client, product) == [task_id(product, 1)]

    clock.advance(10)
    thread.add_task(task(product, 2))
    thread.add_task(task(product, 3, started=30))  # starts 30 s from now: not yet listed
    assert listed(client, product) == [task_id(product, 2), task_id(product, 1)]
    clock.advance(29)
    assert len(listed(client, product)) == 2
    clock.advance(1)
    assert listed(client, product) == [task_id(product, n) for n in (3, 2, 1)]


def test_cdb_task_list_fields(start: Start, clock: FakeClock) -> None:
    dropping = task(
        "cdb",
        1,
        Phase(0, "RUNNING", progress=40),
        Phase(60, "SUCCESS", "Dropped the database table successfully."),
        started=-30,
        task_type="DROP TABLES",
        instance="cdb-1x2y3z4w",
    )
    failing = task("cdb", 2, Phase(0, "FAILED", "Backend task error."), task_type="REBOOT", started=-10)
    client = sdk_client("cdb", start(dropping, failing).url)

    _, (first, second) = sdk_list_items(client, "cdb")
    shows(second, AsyncRequestId=task_id("cdb", 1), TaskType="DROP TABLES", TaskStatus="RUNNING", Code=0)
    shows(second, StartTime=china_time(WALL - 30), EndTime="", InstanceIds=["cdb-1x2y3z4w"], Progress=40)
    shows(first, TaskStatus="FAILED", Message="Backend task error.", EndTime=china_time(WALL))
    assert first.Code != 0
    assert first.JobId != second.JobId

    clock.advance(60)
    _, items = sdk_list_items(client, "cdb", TaskStatus=[2])  # 2: succeeded
    assert [(i.TaskStatus, i.Progress, i.EndTime) for i in items] == [("SUCCEED", 100, china_time(WALL + 60))]
    assert listed(client, "cdb", TaskTypes=[12]) == [task_id("cdb", 1)]  # 12: DROP TABLES
    assert listed(client, "cdb", TaskTypes=[7], TaskStatus=[3]) == [task_id("cdb", 2)]
    assert listed(client, "cdb", InstanceId="cdb-1x2y3z4w") == [task_id("cdb", 1)]
    assert listed(client, "cdb", AsyncRequestId=task_id("cdb", 2)) == [task_id("cdb", 2)]


def test_redis_task_list_fields(start: Start, clock: FakeClock) -> None:
    migrating = task(
        "redis",
        1,
        Phase(0, "preparing"),
        Phase(10, "running", progress=35),
        Phase(40, "succeed"),
        started=-5,
        task_type="FLOW_MIGRATION_INSTANCE_ZONE",
        instance="crs-7m1qz0bw",
        instance_name="sessions",
    )
    broken = task("redis", 2, Phase(0, "error", "Insufficient resources."), started=-100)
    client = sdk_client("redis", start(migrating, broken).url)

    def item() -> Any:
        return sdk_list_items(client, "redis", InstanceId="crs-7m1qz0bw")[1][0]

    first = item()
    shows(first, TaskId=1001, TaskType="FLOW_MIGRATION_INSTANCE_ZONE", InstanceName="sessions", ProjectId=0)
    shows(first, Result=0, Progress=0, StartTime=china_time(WALL - 5), EndTime="", InstanceId="crs-7m1qz0bw")
    clock.advance(10)
    assert (item().Result, item().Progress) == (1, 35)
    clock.advance(30)
    assert (item().Result, item().Progress, item().EndTime) == (2, 100, china_time(WALL + 40))
    assert listed(client, "redis", Result=[4]) == ["1002"]
    assert listed(client, "redis", TaskTypes=["FLOW_MIGRATION_INSTANCE_ZONE"]) == ["1001"]
    assert listed(client, "redis", InstanceName="sessions") == ["1001"]


def test_cynosdb_task_list_fields_and_filters(start: Start, clock: FakeClock) -> None:
    on_instance = task(
        "cynosdb",
        700,
        Phase(0, 2, progress=20),
        Phase(30, 1, "Insufficient resources."),
        instance="cynosdbmysql-ins-abc12345",
        instance_name="orders-ro",
        task_type="ModifyInstance",
        started=-20,
    )
    on_cluster = task("cynosdb", 701, instance="cynosdbmysql-xyz98765", instance_name="billing", started=-50)
    thread = start(on_instance, on_cluster)
    client = sdk_client("cynosdb", thread.url)

    _, (on_one, on_all) = sdk_list_items(client, "cynosdb")
    shows(on_one, FlowId=1700, InstanceId="cynosdbmysql-ins-abc12345", ClusterId="cynosdbmysql-abc12345")
    assert on_one.FlowId != on_one.ID  # the task's own ID is not the one DescribeFlow takes
    shows(on_one, Status="running", Process=20, Region=REGION, TaskType="ModifyInstance", EndTime="")
    shows(on_one, InstanceName="orders-ro", StartTime=china_time(WALL - 20), ObjectType="instance")
    shows(on_all, FlowId=1701, InstanceId="", ClusterId="cynosdbmysql-xyz98765", ClusterName="billing")
    assert sdk_call(client, "cynosdb", str(on_one.FlowId)).Status == 2  # the status action takes it

    clock.advance(30)
    failed = sdk_list_items(client, "cynosdb", Filters=[{"Names": ["Status"], "Values": ["failed"]}])[1]
    assert [(i.FlowId, i.ErrMsg, i.EndTime) for i in failed] == [
        (1700, "Insufficient resources.", china_time(WALL + 30))
    ]
    by_cluster = [{"Name": "ClusterId", "Values": ["cynosdbmysql-abc12345"]}]
    assert listed(client, "cynosdb", Filters=by_cluster) == ["1700"]
    fuzzy = [{"Names": ["InstanceName", "ClusterName"], "Values": ["bill"]}]
    assert listed(client, "cynosdb", Filters=fuzzy) == ["1701"]
    exact = [{"Names": ["InstanceName"], "Values": ["orders"], "ExactMatch": True}]
    assert listed(client, "cynosdb", Filters=exact) == []
    with pytest.raises(TencentCloudSDKException) as raised:
        sdk_list_raw(client, "cynosdb", {"Filters": [{"Names": ["Colour"], "Values": ["red"]}]})
    assert raised.value.code == "InvalidParameterValue"


def test_postgres_list_items_are_the_one_task_answers(start: Start, clock: FakeClock) -> None:
    quick = task(
        "postgres",
        1,
        Phase(0, "Running", progress=10, step="CheckParameters"),
        Phase(20, "Success", step="Finish"),
        task_type="ModifySpec",
        started=-60,
    )
    slow = task("postgres", 2, Phase(0, "Running", progress=50), task_type="Upgrade", started=-30)
    quicker = task("postgres", 3, Phase(0, "Running"), Phase(5, "Fail", "boom"), started=-90)
    client = sdk_client("postgres", start(quick, slow, quicker).url)
    clock.advance(20)

    _, items = sdk_list_items(client, "postgres")
    assert [i.TaskId for i in items] == [1002, 1001, 1003]
    for item in items:
        one = sdk_call(client, "postgres", str(item.TaskId))
        assert item.to_json_string() == one.TaskSet[0].to_json_string()
    shows(items[1], Status="Success", Progress=100, EndTime=china_time(WALL + 20), TaskType="ModifySpec")
    # Ended first comes first; one still running has not ended, so it comes last.
    by_end = listed(client, "postgres", OrderBy="EndTime", OrderByType="asc")
    assert by_end == ["1003", "1001", "1002"]
    assert listed(client, "postgres", OrderByType="asc") == ["1003", "1001", "1002"]
    assert listed(client, "postgres", DBInstanceId="postgres-0002") == ["1002"]
    assert sdk_error(lambda: sdk_list(client, "postgres", OrderBy="Colour")) == "InvalidParameterValue"


@pytest.mark.parametrize("product", STARTED_LISTS)
def test_start_time_bounds_are_inclusive(start: Start, product: str) -> None:
    thread = start(*(task(product, n, started=-100.0 * (4 - n)) for n in (1, 2, 3)))
    client = sdk_client(product, thread.url)
    begin, end = LIST_SDKS[product].window or ("", "")
    ids = [task_id(product, n) for n in (1, 2, 3)]

    at_second = china_time(WALL - 200)
    assert listed(client, product, **{begin: at_second, end: at_second}) == [ids[1]]
    assert listed(client, product, **{begin: china_time(WALL - 250)}) == [ids[2], ids[1]]
    assert listed(client, product, **{end: china_time(WALL - 201)}) == [ids[0]]
    assert listed(client, product, **{begin: china_time(WALL - 99), end: china_time(WALL + 3600)}) == []
    for malformed in ("2024-13-01 00:00:00", "yesterday", "2024-1-2 3:04:05", ""):
        code = sdk_error(lambda m=malformed: sdk_list(client, product, **{begin: m}))
        assert code == "InvalidParameterValue"


def test_redis_and_postgres_reach_back_only_as_far_as_documented(start: Start) -> None:
    day = 86400.0
    thread = start(
        task("redis", 1, started=-29 * day),
        task("redis", 2, started=-31 * day),
        task("postgres", 1, started=-179 * day),
        task("postgres", 2, started=-181 * day),
    )
    redis, postgres = sdk_client("redis", thread.url), sdk_client("postgres", thread.url)
    assert listed(redis, "redis") == ["1001"]
    assert listed(redis, "redis", BeginTime=china_time(WALL - 40 * day)) == ["1001"]  # 30 days at most
    assert listed(postgres, "postgres") == ["1001"]
    # 180 days is PostgreSQL's default, which MinStartTime overrides.
    assert listed(postgres, "postgres", MinStartTime=china_time(WALL - 200 * day)) == ["1001", "1002"]


# --------------------------------------------------------------------------- every list


@pytest.mark.parametrize("product", PRODUCTS)
def test_paging_returns_every_item_exactly_once(start: Start, product: str) -> None:
    # Three tasks start in each second, so the order must break ties the same way on every page.
    count = 2 * PAGE_SIZE + 30
    thread = start(*(task(product, n, started=-float(n // 3)) for n in range(1, count + 1)))
    client = sdk_client(product, thread.url)

    pages = [sdk_list_items(client, product, Offset=offset, Limit=100) for offset in (0, 100, 200, 300)]
    assert [total for total, _ in pages] == [count] * 4
    assert [len(items) for _, items in pages] == [100, 100, 30, 0]
    keys = [key_of(product, item) for _, items in pages for item in items]
    assert sorted(keys) == sorted(key(product, n) for n in range(1, count + 1))
    if product not in SNAPSHOTS:
        starts = [item.StartTime for _, items in pages for item in items]
        assert starts == sorted(starts, reverse=True)  # newest first
    assert len(set(keys)) == count
    if product in DEFAULT_LIMITS:
        assert len(sdk_list_items(client, product)[1]) == DEFAULT_LIMITS[product]


@pytest.mark.parametrize("product", PRODUCTS)
def test_paging_and_parameters_are_checked(start: Start, product: str) -> None:
    client = sdk_client(product, start(task(product, 1)).url)

    def code(params: dict[str, Any]) -> str:
        with pytest.raises(TencentCloudSDKException) as raised:
            sdk_list_raw(client, product, params)
        return str(raised.value.code)

    assert sdk_list_raw(client, product, {"Offset": 0, "Limit": 100})["TotalCount"] == 1
    assert code({"Limit": 101}) == "InvalidParameterValue"
    assert code({"Limit": 0}) == "InvalidParameterValue"
    assert code({"Offset": -1}) == "InvalidParameterValue"
    assert code({"Limit": "10"}) == "InvalidParameter"
    assert code({"Offset": True}) == "InvalidParameter"
    assert code({"Colour": "red"}) == "UnknownParameter"
    window = LIST_SDKS[product].window
    if window is not None:
        assert code({window[0]: 20240101}) == "InvalidParameter"
    else:
        assert code({"Status": ["1"]}) == "InvalidParameter"
    if product == "redis":  # "Offset must be a multiple of Limit"
        assert code({"Offset": 50, "Limit": 100}) == "InvalidParameterValue"


@pytest.mark.parametrize("product", PRODUCTS)
def test_a_task_is_listed_only_in_its_region(start: Start, product: str) -> None:
    thread = start(task(product, 1, region=OTHER_REGION), task(product, 2))
    here, there = sdk_client(product, thread.url), sdk_client(product, thread.url, region=OTHER_REGION)
    assert listed(here, product) == [key(product, 2)]
    assert sorted(listed(there, product)) == sorted([key(product, 1), key(product, 2)])
    if product in SNAPSHOTS or product == "cynosdb":
        regions = {key_of(product, i): i.Region for i in sdk_list_items(there, product, Limit=100)[1]}
        assert regions == {key(product, 1): OTHER_REGION, key(product, 2): OTHER_REGION}
        assert [i.Region for i in sdk_list_items(here, product)[1]] == [REGION]


# --------------------------------------------------------------------------- snapshot lists


@pytest.mark.parametrize("product", SNAPSHOTS)
def test_snapshot_lists_show_the_locker_only_while_the_flow_runs(
    start: Start, clock: FakeClock, product: str
) -> None:
    prefix = SPELLING[product][2]
    resizing = task(
        product,
        1,
        Phase(0, 2),
        Phase(60, 0),
        instance=f"{prefix}a",
        instance_name="orders",
        tags=(("team", "dba"), ("env", "prod")),
    )
    long_done = task(product, 2, Phase(-100, 2), Phase(-50, 1), started=-100, instance=f"{prefix}b")
    scheduled = task(product, 3, started=30, instance=f"{prefix}c")
    thread = start(resizing, long_done, scheduled)
    client = sdk_client(product, thread.url)

    def locks(**params: Any) -> dict[str, int]:
        return {i.InstanceId: i.Locker for i in sdk_list_items(client, product, Limit=100, **params)[1]}

    _, (locked,) = sdk_list_items(client, product, Status=[1])
    shows(locked, InstanceId=f"{prefix}a", Locker=1001, Status=1, InstanceName="orders", Region=REGION)
    assert [(t.TagKey, t.TagValue) for t in locked.ResourceTags] == [("team", "dba"), ("env", "prod")]
    assert locks() == {f"{prefix}a": 1001, f"{prefix}b": 0, f"{prefix}c": 0}

    clock.advance(30)  # the scheduled flow starts
    assert locks(Status=[1]) == {f"{prefix}a": 1001, f"{prefix}c": 1003}
    clock.advance(30)  # the resize is done
    assert locks(Status=[1]) == {f"{prefix}c": 1003}
    assert [i.Status for i in sdk_list_items(client, product, InstanceIds=[f"{prefix}a"])[1]] == [2]
    thread.add_task(task(product, 4, instance=f"{prefix}b"))  # a new flow on an idle instance
    assert locks(Status=[1]) == {f"{prefix}b": 1004, f"{prefix}c": 1003}
    assert locks(ExcludeStatus=[1]) == {f"{prefix}a": 0}
    assert locks(TagKeys=["team"]) == {f"{prefix}a": 0}
    assert locks(InstanceIds=[f"{prefix}b", f"{prefix}z"]) == {f"{prefix}b": 1004}


# --------------------------------------------------------------------------- quotas


@pytest.mark.parametrize("product", [p for p in PRODUCTS if p != "postgres"])
def test_each_list_action_has_its_published_quota(start: Start, clock: FakeClock, product: str) -> None:
    thread = start(task(product, 1))
    client = sdk_client(product, thread.url)
    quota = LIST_QUOTAS[product]

    assert burst(thread, product, quota + 2, {"Limit": 10}) == [None] * quota + ["RequestLimitExceeded"] * 2
    assert sdk_error(lambda: sdk_list(client, product)) == "RequestLimitExceeded"
    # The status action and another key have quotas of their own.
    assert sdk_call(client, product, task_id(product, 1)).Status == SPELLING[product][0]
    assert sdk_list_items(sdk_client(product, thread.url, TEMP_KEY), product)[0] == 1
    clock.advance(1.0)
    assert sdk_list_items(client, product)[0] == 1

    stats = thread.stats()
    action = LIST_SDKS[product].action
    assert stats["list_quotas"][product] == quota
    assert stats["services"][product][action]["throttled"] == 3
    assert stats["services"][product][action]["max_in_window"] == quota + 1  # TEMP_KEY's in the same second


def test_list_quotas_can_be_overridden_and_postgres_has_none_of_its_own(start: Start) -> None:
    thread = start(task("cdb", 1), list_quotas={"cdb": 2})
    assert burst(thread, "cdb", 3, {}) == [None, None, "RequestLimitExceeded"]
    assert thread.stats()["list_quotas"] == {
        **{p: LIST_QUOTAS[p] for p in PRODUCTS if p != "postgres"},
        "cdb": 2,
    }
    for product in ("postgres", "sqlserver", "cvm"):
        with pytest.raises(ValueError, match="list quotas"):
            Simulator([KEY], list_quotas={product: 5})


def test_postgres_listing_and_polling_share_one_quota(start: Start, clock: FakeClock) -> None:
    thread = start(task("postgres", 1))
    client = sdk_client("postgres", thread.url)
    for _ in range(10):
        assert sdk_list_items(client, "postgres")[0] == 1
        assert sdk_call(client, "postgres", "1001").TotalCount == 1
    assert sdk_error(lambda: sdk_list(client, "postgres")) == "RequestLimitExceeded"
    assert sdk_error(lambda: sdk_call(client, "postgres", "1001")) == "RequestLimitExceeded"
    clock.advance(1.0)
    assert sdk_list_items(client, "postgres")[0] == 1

    counted = thread.stats()["services"]["postgres"]
    assert set(counted) == {"DescribeTasks"}
    assert (counted["DescribeTasks"]["accepted"], counted["DescribeTasks"]["throttled"]) == (21, 2)
    assert "postgres" not in thread.stats()["list_quotas"]


def test_list_requests_are_counted_per_product_and_action(start: Start) -> None:
    thread = start()
    for product in PRODUCTS:
        assert sdk_list_items(sdk_client(product, thread.url), product) == (0, [])
    stats = thread.stats()
    assert set(stats["actions"]) == {
        "DescribeTasks",  # cdb keeps the bare action, as MariaDB does
        "DescribeDBInstances",
        "dcdb:DescribeDCDBInstances",
        "redis:DescribeTaskList",
        "cynosdb:DescribeTasks",
        "postgres:DescribeTasks",
    }
    for product in PRODUCTS:
        assert stats["services"][product][LIST_SDKS[product].action]["accepted"] == 1


@pytest.mark.parametrize(
    ("scope", "action", "version", "expected", "counted_as"),
    [
        ("cdb", "DescribeTasks", "2017-03-20", None, "DescribeTasks"),
        ("cdb", "DescribeTasks", "2019-01-07", "NoSuchVersion", "DescribeTasks"),
        # A list action and version only TDSQL (then MariaDB) has, signed for another product.
        ("mariadb", "DescribeDCDBInstances", "2018-04-11", AUTH_FAILURE, "dcdb:DescribeDCDBInstances"),
        ("sqlserver", "DescribeDBInstances", "2017-03-12", AUTH_FAILURE, "DescribeDBInstances"),
        ("sqlserver", "DescribeDBInstances", "2018-03-28", "InvalidAction", "sqlserver:DescribeDBInstances"),
        ("postgres", "DescribeTasks", "2017-03-12", None, "postgres:DescribeTasks"),
    ],
)
def test_list_actions_are_routed_by_credential_scope_action_and_version(
    start: Start,
    scope: str,
    action: str,
    version: str,
    expected: str | None,
    counted_as: str,
) -> None:
    thread = start()
    headers, body = signed(thread, {"Limit": 10}, action=action, service=scope, version=version)
    assert error_code(thread, headers, body) == expected
    assert set(thread.stats()["actions"]) == {counted_as}


# --------------------------------------------------------------------------- faults


def test_action_faults_break_only_that_action(start: Start) -> None:
    thread = start(task("cdb", 1), task("cynosdb", 1), task("redis", 1), task("postgres", 1))
    cdb, cynosdb = sdk_client("cdb", thread.url), sdk_client("cynosdb", thread.url)
    redis, postgres = sdk_client("redis", thread.url), sdk_client("postgres", thread.url)

    thread.set_action_faults("cdb", "DescribeTasks", Faults(error_code="InternalError"))
    assert sdk_error(lambda: sdk_list(cdb, "cdb")) == "InternalError"
    assert sdk_call(cdb, "cdb", task_id("cdb", 1)).Status == "RUNNING"
    assert sdk_list_items(cynosdb, "cynosdb")[0] == 1  # another product's DescribeTasks
    assert thread.stats()["action_faults"] == {
        "cdb:DescribeTasks": asdict(Faults(error_code="InternalError"))
    }
    thread.set_action_faults("cdb", "DescribeTasks", Faults())
    assert sdk_list_items(cdb, "cdb")[0] == 1
    assert thread.stats()["action_faults"] == {}

    # The control endpoint does the same; PostgreSQL's list action is its status action, so both break.
    assert faults(thread, service="redis", action="DescribeTaskList", http_status=503) == 200
    assert sdk_error(lambda: sdk_list(redis, "redis")) == "ServerNetworkError"
    assert sdk_call(redis, "redis", "1001").Status == "running"
    assert faults(thread, service="redis", action="DescribeTaskList") == 200
    assert sdk_list_items(redis, "redis")[0] == 1
    assert faults(thread, service="postgres", action="DescribeTasks", error_code="X.Y") == 200
    assert sdk_error(lambda: sdk_list(postgres, "postgres")) == "X.Y"
    assert sdk_error(lambda: sdk_call(postgres, "postgres", "1001")) == "X.Y"
    assert faults(thread, service="sqlserver", action="DescribeDBInstances") == 404
    assert faults(thread, service="cdb", action="DescribeTasks", task_id="1") == 400
    with pytest.raises(KeyError):
        thread.set_action_faults("mongodb", "DescribeTasks", Faults(error_code="X"))

    # Faults set for every request hit the list actions too.
    thread.set_faults(Faults(error_code="ResourceUnavailable"))
    assert sdk_error(lambda: sdk_list(cynosdb, "cynosdb")) == "ResourceUnavailable"


# --------------------------------------------------------------------------- the exporter's parser


def sdk_fields(product: str, item: Any) -> dict[str, Any]:
    """What one SDK item says of its operation, read from the SDK's model (empty text: None)."""
    if product in SNAPSHOTS:
        return {
            "task_id": str(item.Locker),
            "instance_id": item.InstanceId,
            "instance_name": item.InstanceName or None,
            "tags": tuple((t.TagKey, t.TagValue) for t in item.ResourceTags),
        }
    if product == "cdb":
        task, instance, progress = item.AsyncRequestId, (item.InstanceIds or [None])[0], item.Progress
    elif product == "cynosdb":  # DescribeFlow takes the FlowId; a cluster's task names no instance
        task, instance, progress = item.FlowId, item.InstanceId or item.ClusterId, item.Process
    elif product == "postgres":
        task, instance, progress = item.TaskId, item.DBInstanceId, item.Progress
    else:
        task, instance, progress = item.TaskId, item.InstanceId, item.Progress
    return {
        "task_id": str(task),
        "start": item.StartTime,
        "end": item.EndTime or None,
        "task_type": item.TaskType or None,
        "instance_id": instance or None,
        "progress": progress / 100,
    }


@pytest.mark.parametrize("product", PRODUCTS)
def test_the_exporters_parser_reads_the_simulators_list_answers(
    start: Start, clock: FakeClock, product: str
) -> None:
    running, done, _ = SPELLING[product]
    resize = (Phase(0, running, progress=30), Phase(600, done))
    tasks = [
        task(
            product,
            1,
            *resize,
            started=-120,
            task_type="Resize",
            instance_name="orders",
            tags=(("team", "dba"),),
        ),
        task(product, 2, Phase(0, running), Phase(20, done), started=-60, task_type="Reboot"),
    ]
    if product == "cynosdb":
        tasks.append(task(product, 3, instance="cynosdbmysql-c0ffee00", started=-30))  # a cluster's task
    thread = start(*tasks)
    clock.advance(30)
    service = BY_NAME[product]
    listing = service.listing
    assert listing is not None
    client = sdk_client(product, thread.url)
    # The exporter's own request: its page payload, over the last hour.
    payload = listing.payload(0, WALL - 3600, WALL + 30)

    page = listing.page(sdk_list_raw(client, product, payload), service.id_kind)
    total, items = sdk_list_items(client, product, **payload)
    assert (page.total, page.size) == (total, len(items))
    if product in SNAPSHOTS:
        assert [i.Locker for i in items] == [1001]  # Status [1]: only the instance whose flow still runs
    assert len(page.items) == len(items) >= 1
    for parsed, item in zip(page.items, items, strict=True):
        expected = sdk_fields(product, item)
        assert parsed.task_id == expected["task_id"]
        assert parsed.instance_id == expected["instance_id"]
        if product in SNAPSHOTS:
            assert (parsed.instance_name, parsed.tags) == (expected["instance_name"], expected["tags"])
            assert (parsed.instance_name, parsed.tags) == ("orders", (("team", "dba"),))
            continue
        assert china_time(parsed.start_time or 0) == expected["start"]
        assert (china_time(parsed.end_time) if parsed.end_time else None) == expected["end"]
        assert parsed.task_type == expected["task_type"]
        assert parsed.progress == pytest.approx(expected["progress"])
        # And each is an ID the status action answers for.
        sdk_call(client, product, parsed.task_id)
    if product not in SNAPSHOTS:
        first = {p.task_id: p for p in page.items}[task_id(product, 1)]
        assert (first.start_time, first.end_time, first.progress) == (WALL - 120, None, pytest.approx(0.3))
        second = {p.task_id: p for p in page.items}[task_id(product, 2)]
        assert (second.end_time, second.progress, second.task_type) == (WALL + 20, 1.0, "Reboot")


def test_a_missing_total_count_is_an_invalid_answer_to_the_exporter(start: Start) -> None:
    thread = start(task("redis", 1))
    thread.set_action_faults("redis", "DescribeTaskList", Faults(missing_status=True))
    client = sdk_client("redis", thread.url)
    raw = sdk_list_raw(client, "redis", {})
    assert "TotalCount" not in raw
    assert len(raw["Tasks"]) == 1
    listing = BY_NAME["redis"].listing
    assert listing is not None
    with pytest.raises(InvalidResponse):
        listing.page(raw, BY_NAME["redis"].id_kind)
    assert thread.stats()["services"]["redis"]["DescribeTaskList"]["faults"] == {"missing_status": 1}


# --------------------------------------------------------------------------- the tasks' new fields


def test_listing_fields_round_trip_through_json_and_are_checked() -> None:
    listed_task = task(
        "mariadb", 1, region="ap-shanghai", instance_name="orders", tags=(("team", "dba"), ("env", "prod"))
    )
    assert task_from_dict(json.loads(json.dumps(task_to_dict(listed_task)))) == listed_task
    plain = task_to_dict(task("cdb", 1))
    assert (plain["region"], plain["instance_name"], plain["tags"]) == (None, None, ())
    with pytest.raises(ValueError, match="region"):
        task("cdb", 1, region="")
    with pytest.raises(ValueError, match="tags"):
        task("cdb", 1, tags=(("team",),))
    with pytest.raises(ValueError, match="tag"):
        task_from_dict({**plain, "tags": [["team", "dba", "extra"]]})
