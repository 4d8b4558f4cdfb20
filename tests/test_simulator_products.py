"""Every product of the catalogue through its own official SDK client: statuses along a timeline, the fields
beside the status, unknown IDs, signatures, quotas and routing; then the demo scenario built on them.

The expectations (not-found codes, answer fields, versions) come from the SDKs, not from the exporter's
catalogue, so these tests also check the catalogue the simulator routes by.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from tencentcloud.common.exception.tencent_cloud_sdk_exception import TencentCloudSDKException

from exporter.catalogue.products import (
    BY_NAME,
    CDB,
    CYNOSDB,
    DCDB,
    MARIADB,
    MONGODB,
    POSTGRES,
    PRODUCTS,
    REDIS,
    SQLSERVER,
    tencent_time,
)
from exporter.credentials.signing import Credentials
from exporter.simulator import (
    Faults,
    Phase,
    SimTask,
    Simulator,
    SimulatorThread,
    task_from_dict,
    task_to_dict,
)
from exporter.simulator.demo import (
    DEMO_ACCOUNTS,
    DEMO_CREDENTIALS,
    DEMO_UNKNOWN_ASYNC_REQUEST_ID,
    DEMO_UNKNOWN_FLOW_ID,
    DEMO_UNKNOWN_IDS,
    demo_config,
    demo_tasks,
    demo_unlisted_operations,
    demo_watch,
)
from tests.products import FACTS, NOT_FOUND, sdk_status, tid
from tests.simulator_sdk import (
    KEY,
    SDKS,
    FakeClock,
    error_code,
    post_for_headers,
    sdk_call,
    sdk_client,
    sdk_error,
    signed,
    simulators,
)

SDK_PRODUCTS = sorted(SDKS)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(1000.0)


@pytest.fixture
def start(clock: FakeClock) -> Iterator[Callable[..., SimulatorThread]]:
    with simulators(clock) as start_simulator:
        yield start_simulator


def status_of(product: str, response: Any) -> Any:
    """The Status of an SDK answer, wherever the product keeps it."""
    return sdk_status(product, response)


def china_time(unix_time: float) -> str:
    return datetime.fromtimestamp(unix_time, timezone(timedelta(hours=8))).strftime("%Y-%m-%d %H:%M:%S")


def raw_answer(thread: SimulatorThread, product: str, task_id: str) -> tuple[str, dict[str, Any]]:
    """Content-Type and `Response` of a request signed as the product's SDK would sign it."""
    sdk = SDKS[product]
    payload: dict[str, Any] = {sdk.id_param: int(task_id) if sdk.integer_id else task_id}
    if FACTS[product].instance_tasks:
        payload = {sdk.id_param: task_id.rsplit(":", 1)[0], "Limit": 100}
    headers, body = signed(
        thread, payload, action=sdk.action, service=sdk.client._service, version=sdk.client._apiVersion
    )
    status, reply_headers, raw = post_for_headers(thread.url, headers, body)
    assert status == 200
    return reply_headers["Content-Type"], json.loads(raw)["Response"]


def test_the_sdk_table_agrees_with_the_catalogue() -> None:
    assert set(SDKS) == set(BY_NAME)
    for product, sdk in SDKS.items():
        spec = BY_NAME[product]
        assert (sdk.client._service, sdk.client._apiVersion) == (spec.api_service, spec.version)
        assert (sdk.action, sdk.id_param, sdk.integer_id) == (
            spec.action,
            spec.id_param,
            spec.id_kind.integer,
        )
        if product in NOT_FOUND:
            assert spec.not_found_codes[0] == NOT_FOUND[product]


# --------------------------------------------------------------------------- every product


@pytest.mark.parametrize("product", SDK_PRODUCTS)
def test_status_follows_the_timeline(
    start: Callable[..., SimulatorThread], clock: FakeClock, product: str
) -> None:
    first, second, third = FACTS[product].timeline
    task = SimTask(product, tid(product, "4242"), (Phase(0, first), Phase(10, second), Phase(30, third)))
    client = sdk_client(product, start(task, speed=2).url)

    seen = []
    for step in (0, 4.9, 0.1, 9.9, 0.1, 1e6):  # task time 0, 9.8, 10, 29.8, 30, later
        clock.advance(step)
        seen.append(status_of(product, sdk_call(client, product, tid(product, "4242"))))
    assert seen == [first, first, second, second, third, third]


@pytest.mark.parametrize("product", SDK_PRODUCTS)
def test_unknown_ids_answer_the_products_not_found(
    start: Callable[..., SimulatorThread], product: str
) -> None:
    client = sdk_client(
        product, start(SimTask(product, tid(product, "1"), (Phase(0, FACTS[product].timeline[0]),))).url
    )
    if FACTS[product].not_found is None:  # an empty TaskSet or JobList instead
        response = sdk_call(client, product, tid(product, "2", "gone"))
        assert (response.TotalCount, getattr(response, FACTS[product].in_list)) == (0, [])
    else:
        assert sdk_error(lambda: sdk_call(client, product, tid(product, "2", "gone"))) == NOT_FOUND[product]


@pytest.mark.parametrize("product", SDK_PRODUCTS)
def test_answers_have_the_sdk_fields_and_exactly_the_json_content_type(
    start: Callable[..., SimulatorThread], product: str
) -> None:
    thread = start(SimTask(product, tid(product, "1"), (Phase(0, FACTS[product].timeline[0]),)))
    content_type, response = raw_answer(thread, product, tid(product, "1"))
    assert content_type == "application/json"  # exactly: with a charset the SDK ignores Response.Error
    assert set(response) - {"RequestId"} == FACTS[product].answer_fields
    content_type, response = raw_answer(thread, product, tid(product, "2", "gone"))
    assert content_type == "application/json"
    assert ("Error" in response) == (FACTS[product].not_found is not None)


@pytest.mark.parametrize("product", SDK_PRODUCTS)
def test_a_wrong_secret_key_is_rejected(start: Callable[..., SimulatorThread], product: str) -> None:
    thread = start(SimTask(product, tid(product, "1"), (Phase(0, FACTS[product].timeline[0]),)))
    client = sdk_client(product, thread.url, Credentials(KEY.secret_id, "not-the-right-key"))
    assert sdk_error(lambda: sdk_call(client, product, tid(product, "1"))) == "AuthFailure.SignatureFailure"


@pytest.mark.parametrize("product", SDK_PRODUCTS)
def test_the_catalogues_quota_is_enforced(
    start: Callable[..., SimulatorThread], clock: FakeClock, product: str
) -> None:
    thread = start(SimTask(product, tid(product, "1"), (Phase(0, FACTS[product].timeline[0]),)))
    client = sdk_client(product, thread.url)
    quota = int(BY_NAME[product].default_rate_limit)

    outcomes = []
    for _ in range(quota + 2):
        try:
            sdk_call(client, product, tid(product, "1"))
            outcomes.append("ok")
        except TencentCloudSDKException as error:
            outcomes.append(error.code)
    assert outcomes == ["ok"] * quota + ["RequestLimitExceeded"] * 2
    clock.advance(1.0)
    assert status_of(product, sdk_call(client, product, tid(product, "1"))) == FACTS[product].timeline[0]
    assert thread.stats()["quotas"][product] == quota


def test_products_sharing_an_action_name_have_tasks_and_quotas_of_their_own(
    start: Callable[..., SimulatorThread],
) -> None:
    thread = start(
        SimTask(MARIADB.name, "7", (Phase(0, 0),)),
        SimTask(DCDB.name, "7", (Phase(0, 1),)),
        SimTask(CDB.name, "7", (Phase(0, "SUCCESS"),)),
        quotas={MARIADB.name: 1, CDB.name: 1},
    )
    clients = {
        p: sdk_client(p, thread.url) for p in (MARIADB.name, DCDB.name, CYNOSDB.name, CDB.name, MONGODB.name)
    }
    assert sdk_call(clients[MARIADB.name], MARIADB.name, "7").Status == 0
    assert sdk_error(lambda: sdk_call(clients[MARIADB.name], MARIADB.name, "7")) == "RequestLimitExceeded"
    assert sdk_call(clients[DCDB.name], DCDB.name, "7").Status == 1
    assert sdk_error(lambda: sdk_call(clients[CYNOSDB.name], CYNOSDB.name, "7")) == NOT_FOUND[CYNOSDB.name]
    assert sdk_call(clients[CDB.name], CDB.name, "7").Status == "SUCCESS"
    assert sdk_error(lambda: sdk_call(clients[MONGODB.name], MONGODB.name, "7")) == "ResourceNotFound"

    stats = thread.stats()
    # MariaDB and CDB keep the bare action as their key; the other products are `product:Action`.
    assert set(stats["actions"]) == {
        "DescribeFlow",
        "dcdb:DescribeFlow",
        "cynosdb:DescribeFlow",
        "DescribeAsyncRequestInfo",
        "mongodb:DescribeAsyncRequestInfo",
    }
    assert stats["actions"]["DescribeFlow"]["throttled"] == 1
    assert stats["actions"]["dcdb:DescribeFlow"]["accepted"] == 1
    assert stats["services"][MARIADB.name]["DescribeFlow"] == stats["actions"]["DescribeFlow"]
    assert stats["services"][MONGODB.name]["DescribeAsyncRequestInfo"]["errors"] == {"ResourceNotFound": 1}


@pytest.mark.parametrize(
    ("scope", "action", "version", "expected", "counted_as"),
    [
        (DCDB.name, "DescribeFlow", "2018-04-11", None, "dcdb:DescribeFlow"),
        # MariaDB's version of the action, signed for TDSQL: TDSQL has no such version.
        (DCDB.name, "DescribeFlow", "2017-03-12", "NoSuchVersion", "dcdb:DescribeFlow"),
        # An action and version only TDSQL (then Redis) has, signed for another product: the wrong scope.
        (REDIS.name, "DescribeFlow", "2018-04-11", "AuthFailure.InvalidAuthorization", "dcdb:DescribeFlow"),
        (
            POSTGRES.name,
            "DescribeTaskInfo",
            "2018-04-12",
            "AuthFailure.InvalidAuthorization",
            "redis:DescribeTaskInfo",
        ),
        (REDIS.name, "DescribeTasks", "2099-01-01", "InvalidAction", "redis:DescribeTasks"),
        ("cvm", "DescribeInstances", "2017-03-12", "InvalidAction", "cvm:DescribeInstances"),
    ],
)
def test_requests_are_routed_by_credential_scope_action_and_version(
    start: Callable[..., SimulatorThread],
    scope: str,
    action: str,
    version: str,
    expected: str | None,
    counted_as: str,
) -> None:
    thread = start(SimTask(DCDB.name, "1", (Phase(0, 2),)))
    headers, body = signed(thread, {"FlowId": 1}, action=action, service=scope, version=version)
    assert error_code(thread, headers, body) == expected
    assert set(thread.stats()["actions"]) == {counted_as}


# --------------------------------------------------------------------------- fields beside the status


def test_mongodb_start_and_end_times_are_china_standard_time(
    start: Callable[..., SimulatorThread], clock: FakeClock, wall: float
) -> None:
    task = SimTask(MONGODB.name, "88", (Phase(0, "running"), Phase(60, "success")), started=-30)
    client = sdk_client(MONGODB.name, start(task, speed=2, wall_clock=lambda: wall).url)

    running = sdk_call(client, MONGODB.name, "88")
    assert (running.Status, running.StartTime, running.EndTime) == ("running", china_time(wall - 15), "")
    clock.advance(30)  # 60 s of task time at speed 2
    done = sdk_call(client, MONGODB.name, "88")
    assert (done.Status, done.StartTime, done.EndTime) == (
        "success",
        china_time(wall - 15),
        china_time(wall + 30),
    )
    # The exporter reads them back as the same instants.
    assert (tencent_time(done.StartTime), tencent_time(done.EndTime)) == (wall - 15, wall + 30)


def test_redis_task_info_fields(start: Callable[..., SimulatorThread], clock: FakeClock, wall: float) -> None:
    task = SimTask(
        REDIS.name,
        "1092303",
        (Phase(0, "running"), Phase(100, "failed", "Insufficient resources.")),
        task_type="实例可用区迁移",
        instance_id="crs-7m1qz0bw",
        started=-40,
    )
    client = sdk_client(REDIS.name, start(task, wall_clock=lambda: wall).url)

    running = sdk_call(client, REDIS.name, "1092303")
    assert (running.Status, running.TaskMessage) == ("running", "")
    assert (running.TaskType, running.InstanceId) == ("实例可用区迁移", "crs-7m1qz0bw")
    assert running.StartTime == china_time(wall - 40)
    clock.advance(100)
    failed = sdk_call(client, REDIS.name, "1092303")
    assert (failed.Status, failed.TaskMessage, failed.StartTime) == (
        "failed",
        "Insufficient resources.",
        china_time(wall - 40),
    )


def test_postgres_task_set_item(start: Callable[..., SimulatorThread], clock: FakeClock, wall: float) -> None:
    task = SimTask(
        POSTGRES.name,
        "60210002",
        (
            Phase(0, "Running", progress=10, step="CheckParameters"),
            Phase(30, "Running", "Copying data.", step="SyncData"),
            Phase(90, "Success", step="Finish"),
        ),
        task_type="ModifySpec",
        instance_id="postgres-1x2mzp7a",
    )
    client = sdk_client(POSTGRES.name, start(task, wall_clock=lambda: wall).url)

    def item() -> Any:
        response = sdk_call(client, POSTGRES.name, "60210002")
        assert response.TotalCount == 1
        return response.TaskSet[0]

    first = item()
    assert (first.TaskId, first.TaskType, first.DBInstanceId) == (60210002, "ModifySpec", "postgres-1x2mzp7a")
    assert (first.Status, first.Progress, first.StartTime, first.EndTime) == (
        "Running",
        10,
        china_time(wall),
        "",
    )
    assert first.TaskDetail.CurrentStep == "CheckParameters"
    assert first.TaskDetail.AllSteps == "CheckParameters,SyncData,Finish"
    clock.advance(30)
    second = item()
    assert (second.Progress, second.TaskDetail.CurrentStep, second.TaskDetail.Message) == (
        10,  # carried over: the phase gives none
        "SyncData",
        "Copying data.",
    )
    clock.advance(60)
    done = item()
    assert (done.Status, done.Progress, done.EndTime) == ("Success", 100, china_time(wall + 90))


def test_postgres_missing_status_fault_and_unsimulated_filters(start: Callable[..., SimulatorThread]) -> None:
    thread = start(SimTask(POSTGRES.name, "5", (Phase(0, "Running"),), missing_status=True))
    _, response = raw_answer(thread, POSTGRES.name, "5")
    assert "Status" not in response["TaskSet"][0]
    assert response["TaskSet"][0]["TaskId"] == 5
    # The exporter asks for one TaskId; list filters are not simulated and say so rather than being ignored.
    headers, body = signed(
        thread,
        {"TaskId": 5, "Limit": 20},
        action="DescribeTasks",
        service=POSTGRES.name,
        version="2017-03-12",
    )
    assert error_code(thread, headers, body) == "UnknownParameter"


def test_string_status_products_reject_integer_statuses_and_vice_versa() -> None:
    for product in (MONGODB.name, REDIS.name, POSTGRES.name, CDB.name):
        with pytest.raises(ValueError, match="string"):
            SimTask(product, "1", (Phase(0, 2),))
    for product in (DCDB.name, SQLSERVER.name, CYNOSDB.name):
        with pytest.raises(ValueError, match="integer"):
            SimTask(product, "1", (Phase(0, "running"),))
    with pytest.raises(ValueError, match="progress"):
        Phase(0, "Running", progress=101)
    with pytest.raises(ValueError, match="progress"):
        Phase(0, "Running", progress=True)
    with pytest.raises(ValueError, match="unknown phase keys"):
        task_from_dict({"product": REDIS.name, "task_id": "1", "phases": [{"at": 0, "colour": "red"}]})


def test_product_neutral_fields_round_trip_through_json() -> None:
    task = SimTask(
        POSTGRES.name,
        "9",
        (Phase(-5, "Running", "queued", progress=3, step="Check"), Phase(2.5, "Fail", "boom")),
        task_type="ModifySpec",
        instance_id="postgres-1",
        started=-60,
        latency=0.1,
    )
    assert task_from_dict(json.loads(json.dumps(task_to_dict(task)))) == task


# --------------------------------------------------------------------------- the demo


_FLOW_STATUSES = {0: "success", 1: "failed", 2: "running"}


def _word(product: str, status: object) -> str:
    """A status as the exporter words it: a flow's integer, an instance task's, or the word lower-cased."""
    if isinstance(status, int):
        codes = {code: word for word, code in BY_NAME[product].answer_shape.status_codes}
        return codes.get(status, _FLOW_STATUSES.get(status, ""))
    return (status or "unknown").lower() if isinstance(status, str | None) else str(status)


def test_demo_scenario_covers_every_documented_status_of_every_product() -> None:
    tasks = demo_tasks()
    seen = {
        (
            t.product,
            _word(t.product, p.status),
        )
        for t in tasks
        for p in t.phases
    }
    for product in PRODUCTS:
        documented = {(product.name, status) for status in product.statuses if status != "unknown"}
        assert documented <= seen, product.name
    assert (CDB.name, "unknown") in seen  # a null Status
    assert (CDB.name, "rollback") in seen  # a value no documentation lists
    for task in tasks:
        assert BY_NAME[task.product].id_kind.canonical(task.task_id) == task.task_id
        if FACTS[task.product].id_pattern:
            assert re.fullmatch(FACTS[task.product].id_pattern, task.task_id)
    assert not any(task.faults != Faults() for task in tasks)


def test_demo_watch_list_matches_the_scenario() -> None:
    watch = demo_watch()
    assert set(watch) == {s.watch_key for s in PRODUCTS}
    unlisted = {(t.product, t.task_id) for t in demo_unlisted_operations()}
    known = {(t.product, t.task_id) for t in demo_tasks()} - unlisted
    watched = {
        (product.name, str(entry["id"] if isinstance(entry, dict) else entry))
        for product in PRODUCTS
        for entry in watch[product.watch_key]
    }
    assert watched - known == {(product, str(task_id)) for product, task_id in DEMO_UNKNOWN_IDS.items()}
    assert known <= watched
    # What only discovery finds: no watch entry names it, and every discoverable product (a list API, or the
    # audit trail) has one.
    assert not unlisted & watched
    assert {product for product, _ in unlisted} == {s.name for s in PRODUCTS if s.discoverable}
    assert set(DEMO_UNKNOWN_IDS) == set(BY_NAME)
    assert (DEMO_UNKNOWN_IDS[MARIADB.name], DEMO_UNKNOWN_IDS[CDB.name]) == (
        DEMO_UNKNOWN_FLOW_ID,
        DEMO_UNKNOWN_ASYNC_REQUEST_ID,
    )
    entries = [e for key in watch for e in watch[key] if isinstance(e, dict)]
    assert any("labels" in e for e in entries)
    assert any(e.get("region") == "ap-shanghai" for e in entries)


def test_demo_config_watches_the_demo_tasks_at_the_simulator() -> None:
    config = demo_config("http://127.0.0.1:9", speed=10)
    assert set(config.apis) == set(BY_NAME)
    assert {api.endpoint for api in config.apis.values()} == {"http://127.0.0.1:9"}
    watched = {(t.product, t.task_id, t.region) for t in config.tasks}
    assert (MARIADB.name, "3345", "ap-shanghai") in watched
    # Two accounts, each polling its own operations (the simulator hides the other's).
    owners = {(t.product, t.task_id): t.owner for t in demo_tasks()}
    keys = {name: keys.secret_id for name, keys in DEMO_ACCOUNTS.items()}
    assert {t.account for t in config.tasks} == {"prod", "staging"}
    for task in config.tasks:
        assert owners.get((task.product, task.task_id), keys[task.account]) == keys[task.account]
    for product, task_id in DEMO_UNKNOWN_IDS.items():
        assert (product, str(task_id), "ap-guangzhou") in watched
    assert len(watched) == len(demo_tasks()) - len(demo_unlisted_operations()) + len(PRODUCTS)
    assert config.discovery is not None
    assert config.discovery.products == tuple(s.name for s in PRODUCTS if s.discoverable)
    assert config.discovery.cloudaudit.endpoint == "http://127.0.0.1:9"
    assert config.polling.interval == pytest.approx(1.0)
    assert demo_config("http://127.0.0.1:9").polling.interval == pytest.approx(10.0)


def test_demo_scenario_served_with_demo_credentials(clock: FakeClock) -> None:
    simulator = Simulator([DEMO_CREDENTIALS], speed=60, clock=clock)
    simulator.add_tasks(demo_tasks())
    with SimulatorThread(simulator) as thread:
        clients = {p: sdk_client(p, thread.url, DEMO_CREDENTIALS) for p in SDK_PRODUCTS}
        first = {}
        for task in demo_tasks():
            first.setdefault(task.product, task)
        for product, task in first.items():
            response = sdk_call(clients[product], product, task.task_id)
            assert status_of(product, response) == task.phase_at(0).status, product
            unknown = str(DEMO_UNKNOWN_IDS[product])
            if FACTS[product].not_found is None:
                assert sdk_call(clients[product], product, unknown).TotalCount == 0
            else:
                code = sdk_error(lambda p=product, u=unknown: sdk_call(clients[p], p, u))
                assert code == NOT_FOUND[product]

        assert sdk_call(clients[MARIADB.name], MARIADB.name, "3342").Status == 2
        clock.advance(1)  # 60 s of task time: the 45 s flow is done
        assert sdk_call(clients[MARIADB.name], MARIADB.name, "3342").Status == 0
        assert sdk_call(clients[CDB.name], CDB.name, "f96e4f3c-8fc96c86-2ec79ac8-cb63a7a7").Info == (
            "Dropped the database table successfully."
        )
