"""The simulator's list actions as a gateway: each has a quota of its own (PostgreSQL's shared with its
status action), requests are routed by credential scope, action and version and counted per product and
action, and faults can be set for one action alone. The list answers themselves are checked in
test_simulator_discovery.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict

import pytest

from exporter.catalogue.products import (
    BY_NAME,
    CDB,
    CYNOSDB,
    MARIADB,
    MONGODB,
    POSTGRES,
    REDIS,
    SQLSERVER,
    SQLSERVER_TASKS,
)
from exporter.simulator import Faults, Simulator
from tests.helpers import FakeClock
from tests.simulator_listing import (
    AUTH_FAILURE,
    LIST_PRODUCTS,
    LIST_QUOTAS,
    SPELLING,
    START,
    Start,
    burst,
    faults,
    listing_simulators,
    task,
    task_id,
)
from tests.simulator_sdk import (
    KEY,
    LIST_SDKS,
    TEMP_KEY,
    error_code,
    sdk_call,
    sdk_client,
    sdk_error,
    sdk_list,
    sdk_list_items,
    signed,
)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(START)


@pytest.fixture
def start(clock: FakeClock, wall: float) -> Iterator[Start]:
    with listing_simulators(clock, wall) as start_listing:
        yield start_listing


# --------------------------------------------------------------------------- quotas


@pytest.mark.parametrize("product", [p for p in LIST_PRODUCTS if not BY_NAME[p].listing_shares_quota])
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
    thread = start(task(CDB.name, 1), list_quotas={CDB.name: 2})
    assert burst(thread, CDB.name, 3, {}) == [None, None, "RequestLimitExceeded"]
    assert thread.stats()["list_quotas"] == {
        **{p: LIST_QUOTAS[p] for p in LIST_PRODUCTS if not BY_NAME[p].listing_shares_quota},
        CDB.name: 2,
    }
    for product in (POSTGRES.name, SQLSERVER.name, "cvm"):
        with pytest.raises(ValueError, match="list quotas"):
            Simulator([KEY], list_quotas={product: 5})


def test_postgres_listing_and_polling_share_one_quota(start: Start, clock: FakeClock) -> None:
    thread = start(task(POSTGRES.name, 1))
    client = sdk_client(POSTGRES.name, thread.url)
    for _ in range(10):
        assert sdk_list_items(client, POSTGRES.name)[0] == 1
        assert sdk_call(client, POSTGRES.name, "1001").TotalCount == 1
    assert sdk_error(lambda: sdk_list(client, POSTGRES.name)) == "RequestLimitExceeded"
    assert sdk_error(lambda: sdk_call(client, POSTGRES.name, "1001")) == "RequestLimitExceeded"
    clock.advance(1.0)
    assert sdk_list_items(client, POSTGRES.name)[0] == 1

    counted = thread.stats()["services"][POSTGRES.name]
    assert set(counted) == {"DescribeTasks"}
    assert (counted["DescribeTasks"]["accepted"], counted["DescribeTasks"]["throttled"]) == (21, 2)
    assert POSTGRES.name not in thread.stats()["list_quotas"]


def test_list_requests_are_counted_per_product_and_action(start: Start) -> None:
    thread = start()
    for product in LIST_PRODUCTS:
        assert sdk_list_items(sdk_client(product, thread.url), product) == (0, [])
    stats = thread.stats()
    # MariaDB and CDB keep the bare action as their key; every other product's is `product:Action`.
    bare = {MARIADB.name, CDB.name}
    assert set(stats["actions"]) == {
        LIST_SDKS[p].action if p in bare else f"{p}:{LIST_SDKS[p].action}" for p in LIST_PRODUCTS
    }
    assert {"DescribeTasks", "DescribeDBInstances", "cynosdb:DescribeTasks"} <= set(stats["actions"])
    for product in LIST_PRODUCTS:
        assert stats["services"][product][LIST_SDKS[product].action]["accepted"] == 1


@pytest.mark.parametrize(
    ("scope", "action", "version", "expected", "counted_as"),
    [
        (CDB.name, "DescribeTasks", "2017-03-20", None, "DescribeTasks"),
        (CDB.name, "DescribeTasks", "2019-01-07", "NoSuchVersion", "DescribeTasks"),
        # A list action and version only TDSQL (then MariaDB) has, signed for another product.
        (MARIADB.name, "DescribeDCDBInstances", "2018-04-11", AUTH_FAILURE, "dcdb:DescribeDCDBInstances"),
        (REDIS.name, "DescribeDBInstances", "2017-03-12", AUTH_FAILURE, "DescribeDBInstances"),
        (
            REDIS.name,
            "DescribeDBInstances",
            "2018-04-12",
            "InvalidAction",
            f"{REDIS.name}:DescribeDBInstances",
        ),
        # SQL Server's service offers two products' actions: its instance tasks' busy instances list.
        (
            SQLSERVER.name,
            "DescribeDBInstances",
            "2018-03-28",
            None,
            f"{SQLSERVER_TASKS.name}:DescribeDBInstances",
        ),
        (
            SQLSERVER.name,
            "DescribeDBInstances",
            "2017-03-12",
            "NoSuchVersion",
            f"{SQLSERVER_TASKS.name}:DescribeDBInstances",
        ),
        (POSTGRES.name, "DescribeTasks", "2017-03-12", None, "postgres:DescribeTasks"),
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
    thread = start(task(CDB.name, 1), task(CYNOSDB.name, 1), task(REDIS.name, 1), task(POSTGRES.name, 1))
    cdb, cynosdb = sdk_client(CDB.name, thread.url), sdk_client(CYNOSDB.name, thread.url)
    redis, postgres = sdk_client(REDIS.name, thread.url), sdk_client(POSTGRES.name, thread.url)

    thread.set_action_faults(CDB.name, "DescribeTasks", Faults(error_code="InternalError"))
    assert sdk_error(lambda: sdk_list(cdb, CDB.name)) == "InternalError"
    assert sdk_call(cdb, CDB.name, task_id(CDB.name, 1)).Status == "RUNNING"
    assert sdk_list_items(cynosdb, CYNOSDB.name)[0] == 1  # another product's DescribeTasks
    assert thread.stats()["action_faults"] == {
        "cdb:DescribeTasks": asdict(Faults(error_code="InternalError"))
    }
    thread.set_action_faults(CDB.name, "DescribeTasks", Faults())
    assert sdk_list_items(cdb, CDB.name)[0] == 1
    assert thread.stats()["action_faults"] == {}

    # The control endpoint does the same; PostgreSQL's list action is its status action, so both break.
    assert faults(thread, product=REDIS.name, action="DescribeTaskList", http_status=503) == 200
    assert sdk_error(lambda: sdk_list(redis, REDIS.name)) == "ServerNetworkError"
    assert sdk_call(redis, REDIS.name, "1001").Status == "running"
    assert faults(thread, product=REDIS.name, action="DescribeTaskList") == 200
    assert sdk_list_items(redis, REDIS.name)[0] == 1
    assert faults(thread, product=POSTGRES.name, action="DescribeTasks", error_code="X.Y") == 200
    assert sdk_error(lambda: sdk_list(postgres, POSTGRES.name)) == "X.Y"
    assert sdk_error(lambda: sdk_call(postgres, POSTGRES.name, "1001")) == "X.Y"
    assert faults(thread, product=SQLSERVER.name, action="DescribeDBInstances") == 404
    assert faults(thread, product=CDB.name, action="DescribeTasks", task_id="1") == 400
    with pytest.raises(KeyError):
        thread.set_action_faults(MONGODB.name, "DescribeTasks", Faults(error_code="X"))

    # Faults set for every request hit the list actions too.
    thread.set_faults(Faults(error_code="ResourceUnavailable"))
    assert sdk_error(lambda: sdk_list(cynosdb, CYNOSDB.name)) == "ResourceUnavailable"
