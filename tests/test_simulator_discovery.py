"""The list actions discovery sweeps, through each product's official SDK client: tasks appear as they start,
fields deserialize into the SDKs' models, paging, time and region bounds, and the Locker of snapshot lists.
Quotas, routing, counting and per-action faults are in test_simulator_list_gateway.py; the exporter's own list
parser (`exporter.catalogue.listapis`) reading the same answers is in test_simulator_list_parsing.py.

Parameters and fields are the SDKs' (tests/simulator_sdk.py LIST_SDKS), not the catalogue's, so the
catalogue's list entries are checked here too.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from tencentcloud.common.exception.tencent_cloud_sdk_exception import TencentCloudSDKException

from exporter.catalogue.listapis import PAGE_SIZE
from exporter.catalogue.products import BY_NAME, CDB, CYNOSDB, DISCOVERABLE, MARIADB, POSTGRES, REDIS
from exporter.simulator import Phase, task_from_dict, task_to_dict
from tests.helpers import FakeClock
from tests.simulator_listing import (
    DEFAULT_LIMITS,
    LIST_PRODUCTS,
    LIST_QUOTAS,
    OTHER_REGION,
    SNAPSHOTS,
    SPELLING,
    START,
    STARTED_LISTS,
    Start,
    china_time,
    key,
    key_of,
    listed,
    listing_simulators,
    shows,
    task,
    task_id,
)
from tests.simulator_sdk import (
    LIST_SDKS,
    REGION,
    SDKS,
    sdk_call,
    sdk_client,
    sdk_error,
    sdk_list,
    sdk_list_items,
    sdk_list_raw,
)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(START)


@pytest.fixture
def start(clock: FakeClock, wall: float) -> Iterator[Start]:
    with listing_simulators(clock, wall) as start_listing:
        yield start_listing


def test_the_list_sdk_table_agrees_with_the_catalogue() -> None:
    # A two-step list (busy instances, then each one's tasks) has tests of its own: test_instance_discovery.
    assert set(LIST_PRODUCTS) == {s.name for s in DISCOVERABLE if s.listing and s.listing.instances is None}
    for product, sdk in LIST_SDKS.items():
        listing = BY_NAME[product].listing
        assert listing is not None
        assert (listing.action, listing.version) == (sdk.action, SDKS[product].client._apiVersion)
        assert (listing.items_field, listing.window) == (sdk.items, sdk.window)
        assert listing.default_rate_limit <= LIST_QUOTAS[product]
        request = getattr(SDKS[product].models, f"{sdk.action}Request")()
        for name in (*(sdk.window or ()), "Offset", "Limit", *listing.filters):
            assert hasattr(request, name), (product, name)
    assert BY_NAME[POSTGRES.name].listing_shares_quota
    shared = {p for p, sdk in LIST_SDKS.items() if sdk.status_action}
    assert {p for p in LIST_PRODUCTS if BY_NAME[p].listing_shares_quota} == shared


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


def test_cdb_task_list_fields(start: Start, clock: FakeClock, wall: float) -> None:
    dropping = task(
        CDB.name,
        1,
        Phase(0, "RUNNING", progress=40),
        Phase(60, "SUCCESS", "Dropped the database table successfully."),
        started=-30,
        task_type="DROP TABLES",
        instance="cdb-1x2y3z4w",
    )
    failing = task(CDB.name, 2, Phase(0, "FAILED", "Backend task error."), task_type="REBOOT", started=-10)
    client = sdk_client(CDB.name, start(dropping, failing).url)

    _, (first, second) = sdk_list_items(client, CDB.name)
    shows(second, AsyncRequestId=task_id(CDB.name, 1), TaskType="DROP TABLES", TaskStatus="RUNNING", Code=0)
    shows(second, StartTime=china_time(wall - 30), EndTime="", InstanceIds=["cdb-1x2y3z4w"], Progress=40)
    shows(first, TaskStatus="FAILED", Message="Backend task error.", EndTime=china_time(wall))
    assert first.Code != 0
    assert first.JobId != second.JobId

    clock.advance(60)
    _, items = sdk_list_items(client, CDB.name, TaskStatus=[2])  # 2: succeeded
    assert [(i.TaskStatus, i.Progress, i.EndTime) for i in items] == [("SUCCEED", 100, china_time(wall + 60))]
    assert listed(client, CDB.name, TaskTypes=[12]) == [task_id(CDB.name, 1)]  # 12: DROP TABLES
    assert listed(client, CDB.name, TaskTypes=[7], TaskStatus=[3]) == [task_id(CDB.name, 2)]
    assert listed(client, CDB.name, InstanceId="cdb-1x2y3z4w") == [task_id(CDB.name, 1)]
    assert listed(client, CDB.name, AsyncRequestId=task_id(CDB.name, 2)) == [task_id(CDB.name, 2)]


def test_redis_task_list_fields(start: Start, clock: FakeClock, wall: float) -> None:
    migrating = task(
        REDIS.name,
        1,
        Phase(0, "preparing"),
        Phase(10, "running", progress=35),
        Phase(40, "succeed"),
        started=-5,
        task_type="FLOW_MIGRATION_INSTANCE_ZONE",
        instance="crs-7m1qz0bw",
        instance_name="sessions",
    )
    broken = task(REDIS.name, 2, Phase(0, "error", "Insufficient resources."), started=-100)
    client = sdk_client(REDIS.name, start(migrating, broken).url)

    def item() -> Any:
        return sdk_list_items(client, REDIS.name, InstanceId="crs-7m1qz0bw")[1][0]

    first = item()
    shows(first, TaskId=1001, TaskType="FLOW_MIGRATION_INSTANCE_ZONE", InstanceName="sessions", ProjectId=0)
    shows(first, Result=0, Progress=0, StartTime=china_time(wall - 5), EndTime="", InstanceId="crs-7m1qz0bw")
    clock.advance(10)
    assert (item().Result, item().Progress) == (1, 35)
    clock.advance(30)
    assert (item().Result, item().Progress, item().EndTime) == (2, 100, china_time(wall + 40))
    assert listed(client, REDIS.name, Result=[4]) == ["1002"]
    assert listed(client, REDIS.name, TaskTypes=["FLOW_MIGRATION_INSTANCE_ZONE"]) == ["1001"]
    assert listed(client, REDIS.name, InstanceName="sessions") == ["1001"]


def test_cynosdb_task_list_fields_and_filters(start: Start, clock: FakeClock, wall: float) -> None:
    on_instance = task(
        CYNOSDB.name,
        700,
        Phase(0, 2, progress=20),
        Phase(30, 1, "Insufficient resources."),
        instance="cynosdbmysql-ins-abc12345",
        instance_name="orders-ro",
        task_type="ModifyInstance",
        started=-20,
    )
    on_cluster = task(
        CYNOSDB.name, 701, instance="cynosdbmysql-xyz98765", instance_name="billing", started=-50
    )
    thread = start(on_instance, on_cluster)
    client = sdk_client(CYNOSDB.name, thread.url)

    _, (on_one, on_all) = sdk_list_items(client, CYNOSDB.name)
    shows(on_one, FlowId=1700, InstanceId="cynosdbmysql-ins-abc12345", ClusterId="cynosdbmysql-abc12345")
    assert on_one.FlowId != on_one.ID  # the task's own ID is not the one DescribeFlow takes
    shows(on_one, Status="running", Process=20, Region=REGION, TaskType="ModifyInstance", EndTime="")
    shows(on_one, InstanceName="orders-ro", StartTime=china_time(wall - 20), ObjectType="instance")
    shows(on_all, FlowId=1701, InstanceId="", ClusterId="cynosdbmysql-xyz98765", ClusterName="billing")
    assert sdk_call(client, CYNOSDB.name, str(on_one.FlowId)).Status == 2  # the status action takes it

    clock.advance(30)
    failed = sdk_list_items(client, CYNOSDB.name, Filters=[{"Names": ["Status"], "Values": ["failed"]}])[1]
    assert [(i.FlowId, i.ErrMsg, i.EndTime) for i in failed] == [
        (1700, "Insufficient resources.", china_time(wall + 30))
    ]
    by_cluster = [{"Name": "ClusterId", "Values": ["cynosdbmysql-abc12345"]}]
    assert listed(client, CYNOSDB.name, Filters=by_cluster) == ["1700"]
    fuzzy = [{"Names": ["InstanceName", "ClusterName"], "Values": ["bill"]}]
    assert listed(client, CYNOSDB.name, Filters=fuzzy) == ["1701"]
    exact = [{"Names": ["InstanceName"], "Values": ["orders"], "ExactMatch": True}]
    assert listed(client, CYNOSDB.name, Filters=exact) == []
    with pytest.raises(TencentCloudSDKException) as raised:
        sdk_list_raw(client, CYNOSDB.name, {"Filters": [{"Names": ["Colour"], "Values": ["red"]}]})
    assert raised.value.code == "InvalidParameterValue"


def test_postgres_list_items_are_the_one_task_answers(start: Start, clock: FakeClock, wall: float) -> None:
    quick = task(
        POSTGRES.name,
        1,
        Phase(0, "Running", progress=10, step="CheckParameters"),
        Phase(20, "Success", step="Finish"),
        task_type="ModifySpec",
        started=-60,
    )
    slow = task(POSTGRES.name, 2, Phase(0, "Running", progress=50), task_type="Upgrade", started=-30)
    quicker = task(POSTGRES.name, 3, Phase(0, "Running"), Phase(5, "Fail", "boom"), started=-90)
    client = sdk_client(POSTGRES.name, start(quick, slow, quicker).url)
    clock.advance(20)

    _, items = sdk_list_items(client, POSTGRES.name)
    assert [i.TaskId for i in items] == [1002, 1001, 1003]
    for item in items:
        one = sdk_call(client, POSTGRES.name, str(item.TaskId))
        assert item.to_json_string() == one.TaskSet[0].to_json_string()
    shows(items[1], Status="Success", Progress=100, EndTime=china_time(wall + 20), TaskType="ModifySpec")
    # Ended first comes first; one still running has not ended, so it comes last.
    by_end = listed(client, POSTGRES.name, OrderBy="EndTime", OrderByType="asc")
    assert by_end == ["1003", "1001", "1002"]
    assert listed(client, POSTGRES.name, OrderByType="asc") == ["1003", "1001", "1002"]
    assert listed(client, POSTGRES.name, DBInstanceId="postgres-0002") == ["1002"]
    assert sdk_error(lambda: sdk_list(client, POSTGRES.name, OrderBy="Colour")) == "InvalidParameterValue"


@pytest.mark.parametrize("product", STARTED_LISTS)
def test_start_time_bounds_are_inclusive(start: Start, product: str, wall: float) -> None:
    thread = start(*(task(product, n, started=-100.0 * (4 - n)) for n in (1, 2, 3)))
    client = sdk_client(product, thread.url)
    begin, end = LIST_SDKS[product].window or ("", "")
    ids = [task_id(product, n) for n in (1, 2, 3)]

    at_second = china_time(wall - 200)
    assert listed(client, product, **{begin: at_second, end: at_second}) == [ids[1]]
    assert listed(client, product, **{begin: china_time(wall - 250)}) == [ids[2], ids[1]]
    assert listed(client, product, **{end: china_time(wall - 201)}) == [ids[0]]
    assert listed(client, product, **{begin: china_time(wall - 99), end: china_time(wall + 3600)}) == []
    for malformed in ("2024-13-01 00:00:00", "yesterday", "2024-1-2 3:04:05", ""):
        code = sdk_error(lambda m=malformed: sdk_list(client, product, **{begin: m}))
        assert code == "InvalidParameterValue"


def test_redis_and_postgres_reach_back_only_as_far_as_documented(start: Start, wall: float) -> None:
    day = 86400.0
    thread = start(
        task(REDIS.name, 1, started=-29 * day),
        task(REDIS.name, 2, started=-31 * day),
        task(POSTGRES.name, 1, started=-179 * day),
        task(POSTGRES.name, 2, started=-181 * day),
    )
    redis, postgres = sdk_client(REDIS.name, thread.url), sdk_client(POSTGRES.name, thread.url)
    assert listed(redis, REDIS.name) == ["1001"]
    assert listed(redis, REDIS.name, BeginTime=china_time(wall - 40 * day)) == ["1001"]  # 30 days at most
    assert listed(postgres, POSTGRES.name) == ["1001"]
    # 180 days is PostgreSQL's default, which MinStartTime overrides.
    assert listed(postgres, POSTGRES.name, MinStartTime=china_time(wall - 200 * day)) == ["1001", "1002"]


# --------------------------------------------------------------------------- every list


@pytest.mark.parametrize("product", LIST_PRODUCTS)
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


@pytest.mark.parametrize("product", LIST_PRODUCTS)
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
    elif LIST_SDKS[product].every_job:
        assert code({"Status": "Running"}) == "InvalidParameter"  # an array of words
    else:
        assert code({"Status": ["1"]}) == "InvalidParameter"
    if LIST_SDKS[product].offset_multiple_of_limit:
        assert code({"Offset": 50, "Limit": 100}) == "InvalidParameterValue"


@pytest.mark.parametrize("product", LIST_PRODUCTS)
def test_a_task_is_listed_only_in_its_region(start: Start, product: str) -> None:
    thread = start(task(product, 1, region=OTHER_REGION), task(product, 2))
    here, there = sdk_client(product, thread.url), sdk_client(product, thread.url, region=OTHER_REGION)
    assert listed(here, product) == [key(product, 2)]
    assert sorted(listed(there, product)) == sorted([key(product, 1), key(product, 2)])
    if LIST_SDKS[product].shows_region:
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


# --------------------------------------------------------------------------- the tasks' new fields


def test_listing_fields_round_trip_through_json_and_are_checked() -> None:
    listed_task = task(
        MARIADB.name, 1, region="ap-shanghai", instance_name="orders", tags=(("team", "dba"), ("env", "prod"))
    )
    assert task_from_dict(json.loads(json.dumps(task_to_dict(listed_task)))) == listed_task
    plain = task_to_dict(task(CDB.name, 1))
    assert (plain["region"], plain["instance_name"], plain["tags"]) == (None, None, ())
    with pytest.raises(ValueError, match="region"):
        task(CDB.name, 1, region="")
    with pytest.raises(ValueError, match="tags"):
        task(CDB.name, 1, tags=(("team",),))
    with pytest.raises(ValueError, match="tag"):
        task_from_dict({**plain, "tags": [["team", "dba", "extra"]]})
