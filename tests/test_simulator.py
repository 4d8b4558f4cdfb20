"""The simulator must speak the real protocol: the official SDK clients are the judge.

Most tests run the simulator in a background thread (SimulatorThread) and call it with the synchronous SDK.
Timelines and quotas run on an injected fake clock, so they are stepped through instead of slept through.
Requests the SDK cannot produce (stale timestamps, wrong scopes, tampered bodies) are crafted with
`exporter.credentials.signing`. Every product's own answers, and the demo, are in test_simulator_products.py.
"""

from __future__ import annotations

import hashlib
import json
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from tencentcloud.common.exception.tencent_cloud_sdk_exception import TencentCloudSDKException

from exporter.catalogue.products import CDB, MARIADB, REDIS
from exporter.credentials import signing
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
from exporter.simulator.demo import DEMO_CREDENTIALS
from tests.simulator_sdk import (
    KEY,
    REGION,
    TEMP_KEY,
    FakeClock,
    describe_async,
    describe_flow,
    error_code,
    post,
    sdk_call,
    sdk_client,
    sdk_clients,
    sdk_error,
    signed,
    simulators,
)

CDB_ID = "f96e4f3c-8fc96c86-2ec79ac8-cb63a7a7"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(1000.0)


@pytest.fixture
def start(clock: FakeClock) -> Iterator[Callable[..., SimulatorThread]]:
    """Starts simulators on free ports; every one is stopped when the test ends."""
    with simulators(clock) as start_simulator:
        yield start_simulator


# --------------------------------------------------------------------------- statuses over time


def test_flow_status_follows_its_timeline_scaled_by_speed(
    start: Callable[..., SimulatorThread], clock: FakeClock
) -> None:
    flow = SimTask(MARIADB.name, "3342", (Phase(0, 2), Phase(60, 0)))
    mariadb, _ = sdk_clients(start(flow, speed=10))

    assert describe_flow(mariadb, 3342).Status == 2
    clock.advance(5.9)  # 59 s of task time at speed 10
    assert describe_flow(mariadb, 3342).Status == 2
    clock.advance(0.2)
    response = describe_flow(mariadb, 3342)
    assert response.Status == 0
    assert response.RequestId


def test_async_request_status_and_info_follow_their_timeline(
    start: Callable[..., SimulatorThread], clock: FakeClock
) -> None:
    task = SimTask(
        CDB.name,
        CDB_ID,
        (Phase(0, "INITIAL", "queued"), Phase(10, "RUNNING", "working"), Phase(30, None, None)),
    )
    _, cdb = sdk_clients(start(task))

    seen = []
    for _ in range(4):
        response = describe_async(cdb, CDB_ID)
        seen.append((response.Status, response.Info))
        clock.advance(10)
    assert seen == [("INITIAL", "queued"), ("RUNNING", "working"), ("RUNNING", "working"), (None, None)]


def test_null_status_is_sent_as_json_null(start: Callable[..., SimulatorThread]) -> None:
    thread = start(SimTask(MARIADB.name, "7", (Phase(0, None),)), SimTask(CDB.name, "x", (Phase(0, None),)))
    for payload, action, product, version, expected in (
        ({"FlowId": 7}, "DescribeFlow", MARIADB.name, "2017-03-12", {"Status": None}),
        (
            {"AsyncRequestId": "x"},
            "DescribeAsyncRequestInfo",
            CDB.name,
            "2017-03-20",
            {"Status": None, "Info": None},
        ),
    ):
        headers, body = signed(thread, payload, action=action, service=product, version=version)
        status, raw = post(thread.url, headers, body)
        response = json.loads(raw)["Response"]
        assert status == 200
        assert {k: v for k, v in response.items() if k != "RequestId"} == expected


def test_unknown_ids_get_each_apis_not_found_code(start: Callable[..., SimulatorThread]) -> None:
    mariadb, cdb = sdk_clients(start(SimTask(MARIADB.name, "1", (Phase(0, 0),))))
    assert sdk_error(lambda: describe_flow(mariadb, 2)) == "InvalidParameter.FlowNotFound"
    assert sdk_error(lambda: describe_async(cdb, "1")) == "InvalidParameter.InvalidAsyncRequestId"


def test_tasks_are_looked_up_per_service_not_per_region(start: Callable[..., SimulatorThread]) -> None:
    thread = start(SimTask(CDB.name, "3340", (Phase(0, "SUCCESS"),)))
    shanghai = sdk_client(CDB.name, thread.url, region="ap-shanghai")
    mariadb, _ = sdk_clients(thread)

    assert describe_async(shanghai, "3340").Status == "SUCCESS"
    assert sdk_error(lambda: describe_flow(mariadb, 3340)) == "InvalidParameter.FlowNotFound"


# --------------------------------------------------------------------------- authentication


def test_wrong_secret_key_is_a_signature_failure(start: Callable[..., SimulatorThread]) -> None:
    mariadb, cdb = sdk_clients(start(), Credentials(KEY.secret_id, "not-the-right-key"))
    assert sdk_error(lambda: describe_flow(mariadb, 1)) == "AuthFailure.SignatureFailure"
    assert sdk_error(lambda: describe_async(cdb, "1")) == "AuthFailure.SignatureFailure"


def test_unknown_secret_id_is_reported_as_not_found(start: Callable[..., SimulatorThread]) -> None:
    mariadb, _ = sdk_clients(start(), Credentials("AKIDnobodyhasthisid00000000000000000", "k"))
    assert sdk_error(lambda: describe_flow(mariadb, 1)) == "AuthFailure.SecretIdNotFound"


def test_session_token_must_match_the_registered_one(start: Callable[..., SimulatorThread]) -> None:
    thread = start(SimTask(MARIADB.name, "1", (Phase(0, 0),)))
    with_token, _ = sdk_clients(thread, TEMP_KEY)
    without_token, _ = sdk_clients(thread, Credentials(TEMP_KEY.secret_id, TEMP_KEY.secret_key))
    wrong_token, _ = sdk_clients(thread, Credentials(TEMP_KEY.secret_id, TEMP_KEY.secret_key, "stolen"))
    unexpected_token, _ = sdk_clients(thread, Credentials(KEY.secret_id, KEY.secret_key, "stray"))

    assert describe_flow(with_token, 1).Status == 0
    assert sdk_error(lambda: describe_flow(without_token, 1)) == "AuthFailure.TokenFailure"
    assert sdk_error(lambda: describe_flow(wrong_token, 1)) == "AuthFailure.TokenFailure"
    assert sdk_error(lambda: describe_flow(unexpected_token, 1)) == "AuthFailure.TokenFailure"


@pytest.mark.parametrize(
    ("offset", "expected"),
    [(-301, "AuthFailure.SignatureExpire"), (301, "AuthFailure.SignatureExpire"), (-290, None), (290, None)],
)
def test_timestamps_outside_the_allowed_skew_are_expired(
    start: Callable[..., SimulatorThread], offset: int, expected: str | None
) -> None:
    thread = start(SimTask(MARIADB.name, "1", (Phase(0, 0),)))
    headers, body = signed(thread, {"FlowId": 1}, timestamp=int(time.time()) + offset)
    assert error_code(thread, headers, body) == expected


def test_credential_scope_must_name_the_actions_service(start: Callable[..., SimulatorThread]) -> None:
    thread = start(SimTask(MARIADB.name, "1", (Phase(0, 0),)))
    headers, body = signed(thread, {"FlowId": 1}, service=CDB.name)
    assert error_code(thread, headers, body) == "AuthFailure.InvalidAuthorization"


def test_credential_scope_date_must_be_the_timestamps_utc_date(start: Callable[..., SimulatorThread]) -> None:
    thread = start(SimTask(MARIADB.name, "1", (Phase(0, 0),)))
    headers, body = signed(thread, {"FlowId": 1})
    timestamp = int(headers["X-TC-Timestamp"])
    yesterday = signing.utc_date(timestamp - 86400)
    canonical = signing.canonical_request("POST", headers["Host"], headers["Content-Type"], body)
    to_sign = signing.string_to_sign(timestamp, MARIADB.name, canonical).replace(
        signing.utc_date(timestamp), yesterday
    )
    sig = signing.signature(KEY.secret_key, timestamp - 86400, MARIADB.name, to_sign)
    headers["Authorization"] = (
        f"{signing.ALGORITHM} Credential={KEY.secret_id}/{yesterday}/mariadb/tc3_request, "
        f"SignedHeaders=content-type;host, Signature={sig}"
    )
    assert error_code(thread, headers, body) == "AuthFailure.InvalidAuthorization"


@pytest.mark.parametrize(
    "authorization",
    [
        None,
        "",
        "Bearer abc",
        "TC3-HMAC-SHA256 Credential=AKIDx/2024-01-01/mariadb, Signature=ab",
        "TC3-HMAC-SHA256",
    ],
)
def test_missing_or_malformed_authorization(
    start: Callable[..., SimulatorThread], authorization: str | None
) -> None:
    thread = start()
    headers, body = signed(thread, {"FlowId": 1})
    del headers["Authorization"]
    if authorization is not None:
        headers["Authorization"] = authorization
    assert error_code(thread, headers, body) == "AuthFailure.InvalidAuthorization"


def test_signature_covers_the_exact_body_bytes_and_host(start: Callable[..., SimulatorThread]) -> None:
    thread = start(SimTask(MARIADB.name, "1", (Phase(0, 0),)), SimTask(MARIADB.name, "2", (Phase(0, 1),)))
    headers, body = signed(thread, b'{"FlowId": 1}')
    assert error_code(thread, headers, body) is None
    assert error_code(thread, headers, b'{"FlowId": 2}') == "AuthFailure.SignatureFailure"
    assert error_code(thread, headers, b'{"FlowId":1}') == "AuthFailure.SignatureFailure"
    assert error_code(thread, {**headers, "Host": "mariadb.tencentcloudapi.com"}, body) == (
        "AuthFailure.SignatureFailure"
    )


def test_extra_signed_headers_are_verified_too(start: Callable[..., SimulatorThread]) -> None:
    thread = start(SimTask(MARIADB.name, "1", (Phase(0, 0),)))
    headers, body = signed(thread, {"FlowId": 1})
    timestamp = int(headers["X-TC-Timestamp"])
    canonical = (
        f"POST\n/\n\ncontent-type:{headers['Content-Type']}\nhost:{headers['Host']}\n"
        f"x-tc-action:describeflow\n\ncontent-type;host;x-tc-action\n{hashlib.sha256(body).hexdigest()}"
    )
    sig = signing.signature(
        KEY.secret_key, timestamp, MARIADB.name, signing.string_to_sign(timestamp, MARIADB.name, canonical)
    )
    scope = f"{signing.utc_date(timestamp)}/mariadb/tc3_request"
    headers["Authorization"] = (
        f"{signing.ALGORITHM} Credential={KEY.secret_id}/{scope}, "
        f"SignedHeaders=content-type;host;x-tc-action, Signature={sig}"
    )
    assert error_code(thread, headers, body) is None
    assert (
        error_code(thread, {**headers, "Content-Type": "text/plain"}, body) == "AuthFailure.SignatureFailure"
    )


# --------------------------------------------------------------------------- common and API parameters


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"X-TC-Action": "DescribeInstances"}, "InvalidAction"),
        ({"X-TC-Action": None}, "MissingParameter"),
        ({"X-TC-Version": "2017-03-20"}, "NoSuchVersion"),
        ({"X-TC-Version": None}, "MissingParameter"),
        ({"X-TC-Region": None}, "MissingParameter"),
        ({"X-TC-Timestamp": None}, "MissingParameter"),
        ({"X-TC-Timestamp": "yesterday"}, "InvalidParameterValue"),
    ],
)
def test_common_parameter_errors(
    start: Callable[..., SimulatorThread], change: dict[str, str | None], expected: str
) -> None:
    thread = start(SimTask(MARIADB.name, "1", (Phase(0, 0),)))
    headers, body = signed(thread, {"FlowId": 1})
    for name, value in change.items():
        headers.pop(name)
        if value is not None:
            headers[name] = value
    assert error_code(thread, headers, body) == expected


@pytest.mark.parametrize(
    ("action", "payload", "expected"),
    [
        ("DescribeFlow", {}, "MissingParameter"),
        ("DescribeFlow", {"FlowId": "1"}, "InvalidParameter"),
        ("DescribeFlow", {"FlowId": True}, "InvalidParameter"),
        ("DescribeFlow", {"FlowId": 1, "Limit": 1}, "UnknownParameter"),
        ("DescribeFlow", b"{not json", "InvalidParameter"),
        ("DescribeFlow", b"[1]", "InvalidParameter"),
        ("DescribeAsyncRequestInfo", {"AsyncRequestId": 1}, "InvalidParameter"),
        ("DescribeAsyncRequestInfo", {}, "MissingParameter"),
    ],
)
def test_api_parameter_errors(
    start: Callable[..., SimulatorThread], action: str, payload: dict[str, Any] | bytes, expected: str
) -> None:
    thread = start(SimTask(MARIADB.name, "1", (Phase(0, 0),)), SimTask(CDB.name, "1", (Phase(0, "SUCCESS"),)))
    product, version = (MARIADB.name, "2017-03-12") if action == "DescribeFlow" else (CDB.name, "2017-03-20")
    headers, body = signed(thread, payload, action=action, service=product, version=version)
    assert error_code(thread, headers, body) == expected


# --------------------------------------------------------------------------- quotas


def test_quota_throttles_per_secret_id_and_action(
    start: Callable[..., SimulatorThread], clock: FakeClock
) -> None:
    thread = start(SimTask(MARIADB.name, "1", (Phase(0, 0),)), SimTask(CDB.name, "1", (Phase(0, "RUNNING"),)))
    mariadb, cdb = sdk_clients(thread)
    other_mariadb, _ = sdk_clients(thread, TEMP_KEY)

    outcomes = []
    for _ in range(25):
        try:
            describe_flow(mariadb, 1)
            outcomes.append("ok")
        except TencentCloudSDKException as error:
            outcomes.append(error.code)
    assert outcomes == ["ok"] * 20 + ["RequestLimitExceeded"] * 5
    # Another key and another action have quotas of their own.
    assert describe_flow(other_mariadb, 1).Status == 0
    assert describe_async(cdb, "1").Status == "RUNNING"
    clock.advance(1.0)
    assert describe_flow(mariadb, 1).Status == 0

    stats = thread.stats()["actions"]["DescribeFlow"]
    assert stats["accepted"] == 22
    assert stats["throttled"] == 5
    assert stats["errors"] == {"RequestLimitExceeded": 5}
    assert stats["max_in_window"] == 21  # 20 from KEY and one from TEMP_KEY inside the same second
    assert stats["last_accepted"] - stats["first_accepted"] == pytest.approx(1.0)


def test_quota_window_slides_rather_than_resetting(
    start: Callable[..., SimulatorThread], clock: FakeClock
) -> None:
    thread = start(SimTask(CDB.name, "1", (Phase(0, "RUNNING"),)), quotas={CDB.name: 2})
    _, cdb = sdk_clients(thread)

    describe_async(cdb, "1")
    clock.advance(0.6)
    describe_async(cdb, "1")
    clock.advance(0.6)  # the first request left the window, the second has not
    describe_async(cdb, "1")
    assert sdk_error(lambda: describe_async(cdb, "1")) == "RequestLimitExceeded"
    assert thread.stats()["actions"]["DescribeAsyncRequestInfo"]["max_in_window"] == 2


def test_quotas_for_unknown_services_are_rejected() -> None:
    with pytest.raises(ValueError, match="unknown services"):
        Simulator([KEY], quotas={"cvm": 10})


# --------------------------------------------------------------------------- faults


def test_latency_faults_delay_answers(start: Callable[..., SimulatorThread]) -> None:
    thread = start(
        SimTask(MARIADB.name, "1", (Phase(0, 0),), latency=0.3), SimTask(MARIADB.name, "2", (Phase(0, 0),))
    )
    mariadb, _ = sdk_clients(thread)

    started = time.perf_counter()
    describe_flow(mariadb, 2)
    assert time.perf_counter() - started < 0.25
    started = time.perf_counter()
    describe_flow(mariadb, 1)
    assert time.perf_counter() - started >= 0.3

    thread.set_latency(0.2)
    started = time.perf_counter()
    assert sdk_error(lambda: describe_flow(mariadb, 99)) == "InvalidParameter.FlowNotFound"
    assert time.perf_counter() - started >= 0.2


def test_http_error_fault(start: Callable[..., SimulatorThread]) -> None:
    mariadb, _ = sdk_clients(start(SimTask(MARIADB.name, "1", (Phase(0, 0),), http_status=500)))
    assert sdk_error(lambda: describe_flow(mariadb, 1)) == "ServerNetworkError"


def test_malformed_json_fault(start: Callable[..., SimulatorThread]) -> None:
    thread = start(SimTask(CDB.name, "1", (Phase(0, "RUNNING"),), malformed=True))
    _, cdb = sdk_clients(thread)
    assert sdk_error(lambda: describe_async(cdb, "1")) == "JSONDecodeError"
    assert thread.stats()["actions"]["DescribeAsyncRequestInfo"]["faults"] == {"malformed": 1}


def test_error_code_fault(start: Callable[..., SimulatorThread]) -> None:
    thread = start(SimTask(CDB.name, "1", (Phase(0, "RUNNING"),), error_code="CdbError.TaskError"))
    _, cdb = sdk_clients(thread)
    assert sdk_error(lambda: describe_async(cdb, "1")) == "CdbError.TaskError"
    assert thread.stats()["actions"]["DescribeAsyncRequestInfo"]["errors"] == {"CdbError.TaskError": 1}


def test_missing_status_fault(start: Callable[..., SimulatorThread]) -> None:
    thread = start(SimTask(CDB.name, "1", (Phase(0, "RUNNING", "busy"),), missing_status=True))
    headers, body = signed(
        thread,
        {"AsyncRequestId": "1"},
        action="DescribeAsyncRequestInfo",
        service=CDB.name,
        version="2017-03-20",
    )
    status, raw = post(thread.url, headers, body)
    response = json.loads(raw)["Response"]
    assert status == 200
    assert "Status" not in response
    assert response["Info"] == "busy"


def test_faults_can_change_at_run_time_globally_and_per_task(start: Callable[..., SimulatorThread]) -> None:
    thread = start(SimTask(MARIADB.name, "1", (Phase(0, 2),)))
    mariadb, _ = sdk_clients(thread)

    thread.set_task_faults(MARIADB.name, "1", Faults(error_code="InternalError"))
    assert sdk_error(lambda: describe_flow(mariadb, 1)) == "InternalError"
    thread.set_task_faults(MARIADB.name, "1", Faults())
    assert describe_flow(mariadb, 1).Status == 2

    # Global faults reach every request that gets past authentication, known task or not.
    thread.set_faults(Faults(http_status=503))
    assert sdk_error(lambda: describe_flow(mariadb, 1)) == "ServerNetworkError"
    assert sdk_error(lambda: describe_flow(mariadb, 404)) == "ServerNetworkError"
    thread.set_faults(Faults())
    assert describe_flow(mariadb, 1).Status == 2


def test_faults_do_not_hide_authentication_errors(start: Callable[..., SimulatorThread]) -> None:
    thread = start(SimTask(MARIADB.name, "1", (Phase(0, 2),), http_status=500))
    mariadb, _ = sdk_clients(thread, Credentials(KEY.secret_id, "wrong"))
    assert sdk_error(lambda: describe_flow(mariadb, 1)) == "AuthFailure.SignatureFailure"


# --------------------------------------------------------------------------- control endpoints, lifecycle


async def test_control_endpoints_drive_a_running_simulator(aiohttp_client: Any) -> None:
    simulator = Simulator([KEY])
    client = await aiohttp_client(simulator.app())
    host = f"{client.host}:{client.port}"

    async def describe(flow_id: int) -> dict[str, Any]:
        body = json.dumps({"FlowId": flow_id}).encode()
        headers = signing.sign_headers(
            KEY,
            service=MARIADB.name,
            host=host,
            action="DescribeFlow",
            version="2017-03-12",
            region=REGION,
            timestamp=int(time.time()),
            payload=body,
        )
        async with client.post("/", data=body, headers=headers) as response:
            assert response.headers["Content-Type"] == "application/json"  # exactly: the SDK checks
            result: dict[str, Any] = (await response.json())["Response"]
            return result

    assert (await describe(5))["Error"]["Code"] == "InvalidParameter.FlowNotFound"
    task = {"product": MARIADB.name, "task_id": "5", "phases": [{"at": 0, "status": 1}]}
    async with client.post("/_sim/tasks", json=[task]) as response:
        assert response.status == 200
        assert await response.json() == {"added": 1}
    assert (await describe(5))["Status"] == 1

    async with client.post(
        "/_sim/faults", json={"product": MARIADB.name, "task_id": "5", "error_code": "X.Y"}
    ) as r:
        assert r.status == 200
    assert (await describe(5))["Error"]["Code"] == "X.Y"
    async with client.post("/_sim/faults", json={"latency": 0.05}) as response:
        assert response.status == 200
    assert simulator.faults == Faults(latency=0.05)

    async with client.get("/_sim/stats") as response:
        stats = await response.json()
    assert stats["actions"]["DescribeFlow"]["accepted"] == 3
    assert stats["actions"]["DescribeFlow"]["errors"] == {"InvalidParameter.FlowNotFound": 1, "X.Y": 1}

    async with client.delete("/_sim/tasks/mariadb/5") as response:
        assert response.status == 200
    async with client.delete("/_sim/tasks/mariadb/5") as response:
        assert response.status == 404
    async with client.post("/_sim/stats/reset") as response:
        assert response.status == 200
    assert simulator.stats()["actions"] == {}

    for bad in ({"tasks": [{"product": "cvm", "task_id": "1", "phases": []}]}, {"tasks": 3}):
        async with client.post("/_sim/tasks", json=bad) as response:
            assert response.status == 400
    async with client.post("/_sim/faults", json={"latency": -1}) as response:
        assert response.status == 400
    async with client.post("/_sim/faults", json={"product": CDB.name, "task_id": "nope"}) as response:
        assert response.status == 404


async def test_start_picks_a_free_port_and_stop_releases_it() -> None:
    simulator = Simulator([KEY])
    url = await simulator.start()
    async with aiohttp.ClientSession() as session:
        try:
            assert re.fullmatch(r"http://127\.0\.0\.1:\d+", url)
            assert int(url.rsplit(":", 1)[1]) > 0
            async with session.get(url + "/_sim/stats") as response:
                assert response.status == 200
            with pytest.raises(RuntimeError):
                await simulator.start()
        finally:
            await simulator.stop()
        with pytest.raises(aiohttp.ClientConnectionError):
            await session.get(url + "/_sim/stats")


def test_simulator_thread_stops_server_and_loop_on_exit() -> None:
    thread = SimulatorThread(Simulator([KEY]))
    with thread:
        url = thread.url
        with urllib.request.urlopen(url + "/_sim/stats", timeout=2) as response:
            assert json.loads(response.read())["tasks"] == 0
        worker = thread._thread
    assert worker is not None
    assert not worker.is_alive()
    with pytest.raises(RuntimeError):
        _ = thread.url
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(url + "/_sim/stats", timeout=2)


def test_cli_serves_the_demo_and_stops_on_sigterm(tmp_path: Path) -> None:
    scenario = tmp_path / "scenario.json"
    scenario.write_text(json.dumps({"tasks": [task_to_dict(SimTask(MARIADB.name, "77", (Phase(0, 1),)))]}))
    for args, checks in (
        (["--scenario", "demo"], [(MARIADB.name, "3340", 0), (REDIS.name, "1092301", "succeed")]),
        (["--scenario", str(scenario)], [(MARIADB.name, "77", 1)]),
    ):
        process = subprocess.Popen(
            [sys.executable, "-m", "exporter.simulator", "--listen", "127.0.0.1:0", *args],
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            assert process.stderr is not None
            line = process.stderr.readline()
            match = re.search(r"listening on (http://\S+)", line)
            assert match, line
            for product, task_id, expected in checks:
                client = sdk_client(product, match.group(1), DEMO_CREDENTIALS)
                assert sdk_call(client, product, task_id).Status == expected
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=10) == 0
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
            if process.stderr is not None:
                process.stderr.close()


# --------------------------------------------------------------------------- task model


def test_task_validation() -> None:
    with pytest.raises(ValueError, match="unknown product"):
        SimTask("cvm", "1", (Phase(0, 0),))
    with pytest.raises(ValueError, match="at least one phase"):
        SimTask(MARIADB.name, "1", ())
    with pytest.raises(ValueError, match="integer"):
        SimTask(MARIADB.name, "1", (Phase(0, "RUNNING"),))
    with pytest.raises(ValueError, match="integer"):
        SimTask(MARIADB.name, "1", (Phase(0, True),))
    with pytest.raises(ValueError, match="string"):
        SimTask(CDB.name, "1", (Phase(0, 2),))
    with pytest.raises(ValueError, match="latency"):
        SimTask(CDB.name, "1", (Phase(0, "RUNNING"),), latency=-1)
    with pytest.raises(ValueError, match="unknown task keys"):
        task_from_dict({"product": CDB.name, "task_id": "1", "phases": [], "colour": "red"})


def test_phases_before_the_first_and_out_of_order() -> None:
    task = SimTask(CDB.name, "1", (Phase(20, "SUCCESS"), Phase(5, "RUNNING")))
    assert [task.phase_at(t).status for t in (0, 5, 19.9, 20, 1e9)] == [
        "RUNNING",
        "RUNNING",
        "RUNNING",
        "SUCCESS",
        "SUCCESS",
    ]


def test_tasks_round_trip_through_json() -> None:
    task = SimTask(
        CDB.name, CDB_ID, (Phase(0, None), Phase(1.5, "FAILED", "boom")), latency=0.5, error_code="E"
    )
    assert task_from_dict(json.loads(json.dumps(task_to_dict(task)))) == task
