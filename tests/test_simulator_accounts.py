"""Several accounts and regional endpoints in the simulator, through the official SDK clients.

Tencent Cloud counts an API's quota per API, access region (the endpoint host) and sub-account (secret id);
a task belongs to one account and lives in one region. The simulator answers another account's task, or one
of another region, exactly as an unknown one, lists only the caller's own (and unowned) tasks, refuses a
request for another region than the one its process stands for (`Simulator(region=...)`), and counts every
account's requests apart (`stats()["accounts"]`), which is what a test of many accounts and regions reads.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from tencentcloud.common.exception.tencent_cloud_sdk_exception import TencentCloudSDKException

from exporter.catalogue.products import BY_NAME, CDB, MARIADB, POSTGRES, REDIS
from exporter.credentials.signing import Credentials
from exporter.simulator import Phase, SimTask, Simulator, SimulatorThread, task_from_dict, task_to_dict
from exporter.simulator.cli import credentials_arg, load_accounts
from exporter.simulator.cli import main as cli_main
from tests.helpers import FakeClock
from tests.products import FACTS, LIST_SDKS, RUNNING, sdk_status
from tests.simulator_listing import LIST_PRODUCTS, START, key, listed
from tests.simulator_listing import task as list_task
from tests.simulator_sdk import (
    KEY,
    REGION,
    SDKS,
    SimulatorProcess,
    sdk_call,
    sdk_client,
    sdk_error,
    sdk_list_items,
)

ALICE = KEY
BOB = Credentials("AKIDsimulatorbob00000000000000000003", "bob-secret-key-for-the-simulator")
SHANGHAI = "ap-shanghai"
UNSUPPORTED_REGION = "UnsupportedRegion"
SDK_PRODUCTS = sorted(SDKS)

Start = Callable[..., SimulatorThread]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(START)


@pytest.fixture
def start(clock: FakeClock, wall: float) -> Iterator[Start]:
    """Starts simulators accepting ALICE and BOB on free ports, on the fake clock (the wall clock moves with
    it, so signatures stay fresh and list times exact); every one is stopped when the test ends."""
    with contextlib.ExitStack() as stack:

        def start_simulator(*tasks: SimTask, **options: Any) -> SimulatorThread:
            options.setdefault("wall_clock", lambda: wall + clock.now - START)
            simulator = Simulator([ALICE, BOB], clock=clock, **options)
            simulator.add_tasks(list(tasks))
            return stack.enter_context(SimulatorThread(simulator))

        yield start_simulator


def status_task(product: str, task_id: str, **fields: Any) -> SimTask:
    return SimTask(product, task_id, (Phase(0, RUNNING[product]),), **fields)


def outcome(client: Any, product: str, task_id: str) -> tuple[Any, ...]:
    """What a status request got, RequestId aside: the error's code and message, or the answer's fields."""
    try:
        response = sdk_call(client, product, task_id)
    except TencentCloudSDKException as error:
        return ("error", error.code, error.message)
    answer = json.loads(response.to_json_string())
    answer.pop("RequestId")
    return ("answer", answer)


def status_of(client: Any, product: str, task_id: str) -> object:
    response = sdk_call(client, product, task_id)
    return sdk_status(product, response)


def account(thread: SimulatorThread, who: Credentials, product: str, action: str) -> dict[str, Any]:
    accounts: dict[str, dict[str, dict[str, Any]]] = thread.stats()["accounts"]
    return accounts[who.secret_id][f"{product}:{action}"]


def task_number(product: str, n: int) -> str:
    return f"{n:08x}-a11ce000-00000000-00000000" if SDKS[product].integer_id is False else str(7000 + n)


def get_json(url: str) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def post_json(url: str, document: object) -> tuple[int, Any]:
    request = urllib.request.Request(
        url, data=json.dumps(document).encode(), headers={"Content-Type": "application/json"}, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


# --------------------------------------------------------------------------- ownership


# An instance's task is read from its instance's list, which shows each account its own tasks only
# (test_lists_show_only_the_callers_own_and_unowned_tasks covers that for the lists).
@pytest.mark.parametrize("product", [p for p in SDK_PRODUCTS if not FACTS[p].instance_tasks])
def test_another_accounts_task_reads_exactly_as_an_unknown_one(start: Start, product: str) -> None:
    alices, bobs, shared = (task_number(product, n) for n in (1, 2, 3))
    thread = start(
        status_task(product, alices, owner=ALICE.secret_id),
        status_task(product, bobs, owner=BOB.secret_id),
        status_task(product, shared),
    )
    alice, bob = sdk_client(product, thread.url, ALICE), sdk_client(product, thread.url, BOB)

    for client, own in ((alice, alices), (bob, bobs)):
        assert status_of(client, product, own) == RUNNING[product]
        assert status_of(client, product, shared) == RUNNING[product]
    seen_by_alice, seen_by_bob = outcome(alice, product, bobs), outcome(bob, product, alices)

    assert thread.remove_task(product, bobs)
    assert thread.remove_task(product, alices)
    assert seen_by_alice == outcome(alice, product, bobs)  # now unknown to everyone
    assert seen_by_bob == outcome(bob, product, alices)
    action = SDKS[product].action
    for who in (ALICE, BOB):
        counted = account(thread, who, product, action)
        # Own task, shared task, the other's task, then that one again once unknown: all within quota.
        assert (counted["accepted"], counted["throttled"], counted["foreign"]) == (4, 0, 1)
        assert counted["wrong_region"] == 0


@pytest.mark.parametrize("product", LIST_PRODUCTS)
def test_lists_show_only_the_callers_own_and_unowned_tasks(start: Start, product: str) -> None:
    thread = start(
        list_task(product, 1, owner=ALICE.secret_id),
        list_task(product, 2, owner=BOB.secret_id),
        list_task(product, 3),
    )
    alice, bob = sdk_client(product, thread.url, ALICE), sdk_client(product, thread.url, BOB)

    assert sorted(listed(alice, product)) == sorted([key(product, 1), key(product, 3)])
    assert sorted(listed(bob, product)) == sorted([key(product, 2), key(product, 3)])
    assert sdk_list_items(alice, product, Limit=100)[0] == 2
    listing = BY_NAME[product].listing
    assert listing is not None
    for who in (ALICE, BOB):
        counted = account(thread, who, product, listing.action)
        assert (counted["accepted"], counted["throttled"], counted["foreign"]) == (
            2 if who is ALICE else 1,
            0,
            0,
        )


def test_owner_is_part_of_the_task_json_and_the_control_api(start: Start) -> None:
    task = status_task(CDB.name, "owned-1", owner=BOB.secret_id, region=REGION)
    assert task_from_dict(json.loads(json.dumps(task_to_dict(task)))) == task
    assert task_from_dict({"product": CDB.name, "task_id": "x", "phases": [{"at": 0}]}).owner == ""
    with pytest.raises(ValueError, match="owner"):
        task_from_dict({"product": CDB.name, "task_id": "x", "phases": [{"at": 0}], "owner": 7})
    with pytest.raises(ValueError, match="owner"):
        SimTask(CDB.name, "x", (Phase(0, "RUNNING"),), owner=None)  # type: ignore[arg-type]

    thread = start()
    assert post_json(thread.url + "/_sim/tasks", {"tasks": [task_to_dict(task)]}) == (200, {"added": 1})
    alice, bob = sdk_client(CDB.name, thread.url, ALICE), sdk_client(CDB.name, thread.url, BOB)
    assert status_of(bob, CDB.name, "owned-1") == "RUNNING"
    assert sdk_error(lambda: sdk_call(alice, CDB.name, "owned-1")) == "InvalidParameter.InvalidAsyncRequestId"
    assert account(thread, ALICE, CDB.name, "DescribeAsyncRequestInfo")["foreign"] == 1


# --------------------------------------------------------------------------- quotas per account


def test_quotas_are_counted_per_secret_id(start: Start, clock: FakeClock) -> None:
    thread = start(status_task(MARIADB.name, "1"), quotas={MARIADB.name: 3}, list_quotas={CDB.name: 2})
    alice, bob = sdk_client(MARIADB.name, thread.url, ALICE), sdk_client(MARIADB.name, thread.url, BOB)

    for client in (alice, bob):  # at the same instant: each account has its own bucket
        assert [status_of(client, MARIADB.name, "1") for _ in range(3)] == [2, 2, 2]
        assert sdk_error(functools.partial(sdk_call, client, MARIADB.name, "1")) == "RequestLimitExceeded"
    for who in (ALICE, BOB):
        counted = account(thread, who, MARIADB.name, "DescribeFlow")
        assert {k: counted[k] for k in ("accepted", "throttled", "max_in_window", "quota")} == {
            "accepted": 3,
            "throttled": 1,
            "max_in_window": 3,
            "quota": 3.0,
        }
        assert counted["errors"] == {"RequestLimitExceeded": 1}
        assert counted["first_accepted"] == counted["last_accepted"] == START
    every_caller = thread.stats()["actions"]["DescribeFlow"]  # the key every caller shares, as before
    assert (every_caller["accepted"], every_caller["throttled"], every_caller["max_in_window"]) == (6, 2, 6)

    # A list action's quota is per account too.
    alice_cdb, bob_cdb = sdk_client(CDB.name, thread.url, ALICE), sdk_client(CDB.name, thread.url, BOB)
    for client in (alice_cdb, bob_cdb):
        assert [sdk_list_items(client, CDB.name)[0] for _ in range(2)] == [0, 0]
        assert sdk_error(functools.partial(sdk_list_items, client, CDB.name)) == "RequestLimitExceeded"
    assert account(thread, BOB, CDB.name, "DescribeTasks")["max_in_window"] == 2

    clock.advance(1.0)
    assert status_of(alice, MARIADB.name, "1") == 2
    assert account(thread, ALICE, MARIADB.name, "DescribeFlow")["last_accepted"] == START + 1.0


def test_max_in_window_and_accepted_in_follow_a_sliding_second(start: Start, clock: FakeClock) -> None:
    thread = start(status_task(MARIADB.name, "1"), quotas={MARIADB.name: 3}, history_seconds=10.0)
    alice = sdk_client(MARIADB.name, thread.url, ALICE)

    for at in (0.0, 0.5, 0.9, 1.0):  # the request at 0.0 has left the window at 1.0
        clock.now = START + at
        assert status_of(alice, MARIADB.name, "1") == 2
    clock.now = START + 1.2  # 0.5, 0.9 and 1.0 are within (0.2, 1.2]
    assert sdk_error(lambda: sdk_call(alice, MARIADB.name, "1")) == "RequestLimitExceeded"
    counted = account(thread, ALICE, MARIADB.name, "DescribeFlow")
    assert (counted["accepted"], counted["throttled"], counted["max_in_window"]) == (4, 1, 3)

    def accepted_in(who: Credentials, start: float, end: float) -> int:
        return thread.accepted_in(who.secret_id, MARIADB.name, "DescribeFlow", START + start, START + end)

    assert [accepted_in(ALICE, 0.0, 0.9), accepted_in(ALICE, 0.5, 1.0), accepted_in(ALICE, 0.0, 1.2)] == [
        3,
        3,
        4,
    ]
    assert accepted_in(BOB, 0.0, 1.2) == 0
    assert thread.accepted_in(ALICE.secret_id, CDB.name, "DescribeTasks", START, START + 2) == 0

    # Only the last `history_seconds` of accept times are kept.
    clock.now = START + 20.0
    assert status_of(alice, MARIADB.name, "1") == 2
    assert accepted_in(ALICE, 0.0, 20.0) == 1
    assert account(thread, ALICE, MARIADB.name, "DescribeFlow")["accepted"] == 5  # the counters are kept

    # Over the control API: an interval of clock readings, or the last seconds up to now.
    base = thread.url + "/_sim/stats/accepted?product=mariadb&action=DescribeFlow&secret_id="
    status, answer = get_json(f"{base}{ALICE.secret_id}&start={START + 19}&end={START + 21}")
    assert status == 200
    assert (answer["accepted"], answer["rate"]) == (1, 0.5)
    status, answer = get_json(f"{base}{ALICE.secret_id}&last=4")
    assert (status, answer["accepted"], answer["start"], answer["end"]) == (200, 1, START + 16, START + 20)
    assert get_json(f"{base}{ALICE.secret_id}")[0] == 400
    assert get_json(f"{base}{ALICE.secret_id}&last=soon")[0] == 400

    thread.reset_stats()
    assert thread.stats()["accounts"] == {}
    assert accepted_in(ALICE, 0.0, 20.0) == 0


# --------------------------------------------------------------------------- regions


@pytest.mark.parametrize("product", [MARIADB.name, POSTGRES.name])
def test_a_regional_endpoint_refuses_other_regions_before_spending_quota(start: Start, product: str) -> None:
    thread = start(status_task(product, "1"), region=SHANGHAI, quotas={product: 1})
    here, elsewhere = sdk_client(product, thread.url, ALICE, SHANGHAI), sdk_client(product, thread.url, ALICE)

    assert sdk_error(lambda: sdk_call(elsewhere, product, "1")) == UNSUPPORTED_REGION
    assert sdk_error(lambda: sdk_list_items(elsewhere, product)) == UNSUPPORTED_REGION
    assert status_of(here, product, "1") == RUNNING[product]  # the quota of 1 was still unspent
    stats = thread.stats()
    assert stats["region"] == SHANGHAI
    counted = stats["accounts"][ALICE.secret_id][f"{product}:{SDKS[product].action}"]
    # PostgreSQL's list action is its status action: both requests count in one bucket.
    refused = 2 if BY_NAME[product].listing_shares_quota else 1
    assert (counted["accepted"], counted["wrong_region"]) == (1, refused)
    assert counted["errors"] == {UNSUPPORTED_REGION: refused}
    if not BY_NAME[product].listing_shares_quota:
        assert (
            stats["accounts"][ALICE.secret_id][f"{product}:{LIST_SDKS[product].action}"]["wrong_region"] == 1
        )
    assert BOB.secret_id not in stats["accounts"]


def test_a_task_lives_in_its_region_only(start: Start) -> None:
    thread = start(
        status_task(CDB.name, "in-shanghai", region=SHANGHAI),
        status_task(CDB.name, "everywhere"),
        region=None,
    )
    here, elsewhere = (
        sdk_client(CDB.name, thread.url, ALICE, SHANGHAI),
        sdk_client(CDB.name, thread.url, ALICE),
    )

    assert status_of(here, CDB.name, "in-shanghai") == "RUNNING"
    assert status_of(elsewhere, CDB.name, "everywhere") == "RUNNING"
    seen_elsewhere = outcome(elsewhere, CDB.name, "in-shanghai")
    assert seen_elsewhere[:2] == ("error", "InvalidParameter.InvalidAsyncRequestId")
    thread.remove_task(CDB.name, "in-shanghai")
    assert outcome(elsewhere, CDB.name, "in-shanghai") == seen_elsewhere
    stats = thread.stats()
    assert stats["region"] is None
    counted = stats["accounts"][ALICE.secret_id]["cdb:DescribeAsyncRequestInfo"]
    assert (counted["accepted"], counted["wrong_region"], counted["foreign"]) == (4, 1, 0)


def test_a_task_of_another_region_on_a_regional_endpoint_is_unknown(start: Start) -> None:
    thread = start(status_task(REDIS.name, "5", region=REGION), region=SHANGHAI)
    here = sdk_client(REDIS.name, thread.url, BOB, SHANGHAI)
    assert sdk_error(lambda: sdk_call(here, REDIS.name, "5")) == "ResourceNotFound"
    assert account(thread, BOB, REDIS.name, "DescribeTaskInfo")["wrong_region"] == 1


def test_an_unsigned_or_missigned_request_counts_under_the_account_it_names(start: Start) -> None:
    thread = start(status_task(MARIADB.name, "1"))
    forged = sdk_client(MARIADB.name, thread.url, Credentials(BOB.secret_id, ALICE.secret_key))
    assert sdk_error(lambda: sdk_call(forged, MARIADB.name, "1")) == "AuthFailure.SignatureFailure"
    stranger = sdk_client(MARIADB.name, thread.url, Credentials("AKIDnobody", "x"))
    assert sdk_error(lambda: sdk_call(stranger, MARIADB.name, "1")) == "AuthFailure.SecretIdNotFound"
    accounts = thread.stats()["accounts"]
    assert accounts[BOB.secret_id]["mariadb:DescribeFlow"]["errors"] == {"AuthFailure.SignatureFailure": 1}
    assert accounts[BOB.secret_id]["mariadb:DescribeFlow"]["accepted"] == 0
    assert set(accounts) == {BOB.secret_id}  # unknown secret ids get no stats of their own


def test_constructor_checks() -> None:
    with pytest.raises(ValueError, match="region"):
        Simulator([ALICE], region="")
    with pytest.raises(ValueError, match="two different keys"):
        Simulator([ALICE, Credentials(ALICE.secret_id, "another-key")])
    with pytest.raises(ValueError, match="history_seconds"):
        Simulator([ALICE], history_seconds=0)
    assert Simulator([ALICE, ALICE, BOB], region=SHANGHAI).secret_ids == (ALICE.secret_id, BOB.secret_id)


# --------------------------------------------------------------------------- the processes


def test_credentials_arguments_and_accounts_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert credentials_arg("AKIDa:key-a") == Credentials("AKIDa", "key-a")
    assert credentials_arg("AKIDa:key-a:token") == Credentials("AKIDa", "key-a", "token")
    with pytest.raises(SystemExit):
        cli_main(["--credentials", "AKIDa-without-its-secretkey"])
    assert "AKIDa-without-its-secretkey" not in capsys.readouterr().err

    accounts = tmp_path / "accounts.json"
    accounts.write_text(json.dumps({"accounts": [{"secret_id": "AKIDb", "secret_key": "key-b"}]}))
    assert load_accounts(accounts) == [Credentials("AKIDb", "key-b")]
    accounts.write_text(json.dumps([{"secret_id": "AKIDb", "secret_key": "very-secret", "colour": "red"}]))
    with pytest.raises(ValueError, match="account 0") as raised:
        load_accounts(accounts)
    assert "very-secret" not in str(raised.value)
    assert cli_main(["--accounts-file", str(accounts)]) == 2
    assert "very-secret" not in capsys.readouterr().err


def _scenario(path: Path) -> Path:
    tasks = [
        status_task(CDB.name, "alice-1", owner=ALICE.secret_id, region=SHANGHAI),
        status_task(CDB.name, "bob-1", owner=BOB.secret_id, region=SHANGHAI),
    ]
    path.write_text(json.dumps([task_to_dict(t) for t in tasks]))
    return path


def _credentials(who: Credentials) -> str:
    return f"{who.secret_id}:{who.secret_key}"


def _check_regional_accounts(process: SimulatorProcess) -> None:
    alice = sdk_client(CDB.name, process.url, ALICE, SHANGHAI)
    bob = sdk_client(CDB.name, process.url, BOB, SHANGHAI)
    assert status_of(alice, CDB.name, "alice-1") == status_of(bob, CDB.name, "bob-1") == "RUNNING"
    assert sdk_error(lambda: sdk_call(alice, CDB.name, "bob-1")) == "InvalidParameter.InvalidAsyncRequestId"
    assert listed(alice, CDB.name) == ["alice-1"]
    assert listed(bob, CDB.name) == ["bob-1"]
    assert sdk_error(lambda: sdk_call(sdk_client(CDB.name, process.url, BOB), CDB.name, "bob-1")) == (
        UNSUPPORTED_REGION
    )
    stats = process.stats()
    assert stats["region"] == SHANGHAI
    alices, bobs = (stats["accounts"][who.secret_id] for who in (ALICE, BOB))
    assert alices["cdb:DescribeAsyncRequestInfo"]["foreign"] == 1
    assert alices["cdb:DescribeTasks"]["accepted"] == bobs["cdb:DescribeTasks"]["accepted"] == 1
    assert bobs["cdb:DescribeAsyncRequestInfo"]["wrong_region"] == 1


def test_the_cli_serves_one_region_for_several_accounts(tmp_path: Path) -> None:
    args = [
        "--region",
        SHANGHAI,
        "--credentials",
        _credentials(ALICE),
        "--credentials",
        _credentials(BOB),
        "--scenario",
        str(_scenario(tmp_path / "tasks.json")),
    ]
    with SimulatorProcess(args) as process:
        _check_regional_accounts(process)
        assert process.stop() == 0
    output = "\n".join(process.lines)
    assert "region ap-shanghai, 2 accounts" in output
    assert ALICE.secret_key not in output
    assert BOB.secret_key not in output


def test_the_benchmark_simulator_serves_one_region_for_several_accounts(tmp_path: Path) -> None:
    accounts = tmp_path / "accounts.json"
    accounts.write_text(json.dumps([{"secret_id": BOB.secret_id, "secret_key": BOB.secret_key}]))
    env = {k: v for k, v in os.environ.items() if not k.startswith("TENCENTCLOUD_")}
    args = [
        "--tasks",
        str(_scenario(tmp_path / "tasks.json")),
        "--latency",
        "0",
        "--region",
        SHANGHAI,
        "--credentials",
        _credentials(ALICE),
        "--accounts-file",
        str(accounts),
        "--list-cache",
        "--max-runtime",
        "60",
    ]
    with SimulatorProcess(args, module="bench.simserver", env=env) as process:
        _check_regional_accounts(process)
        assert process.stop() == 0
    output = "\n".join(process.lines)
    assert ALICE.secret_key not in output
    assert BOB.secret_key not in output
