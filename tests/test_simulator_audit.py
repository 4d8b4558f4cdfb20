"""The simulator's CloudAudit DescribeEvents through the official cloudaudit SDK: its answers parse into the
SDK's models, events carry the tasks' RequestIds, paging by NextToken ends at ListOver, LookupAttributes
filter, requests are refused as errorcodes.py says, the quota is its own, and faults can be set on it. Also:
the catalogue's audited calls against the SDKs' own documentation of them."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
from tencentcloud.common import credential
from tencentcloud.common.exception.tencent_cloud_sdk_exception import TencentCloudSDKException
from tencentcloud.common.profile.client_profile import ClientProfile
from tencentcloud.common.profile.http_profile import HttpProfile

from exporter.catalogue.auditlists import AUDIT_PAGE_SIZE, AUDIT_TRAIL
from exporter.catalogue.products import AUDITED, BY_NAME, audit_owners
from exporter.simulator import Faults, Phase, SimTask, Simulator, SimulatorThread
from tests.helpers import wait_for
from tests.products import AUDIT_CLIENT, AUDIT_MODELS, AUDIT_SERVICE, AUDITED_SDKS, FACTS, audit_calls
from tests.simulator_sdk import KEY, REGION, sdk_client

OTHER_REGION = "ap-shanghai"


def _id(n: int) -> str:
    return f"{n:08x}-3c4d-4e5f-8a6b-7c8d9e0f1a2b"


def test_the_catalogue_names_every_call_the_sdks_document_and_only_real_calls() -> None:
    assert {p.name for p in AUDITED} == set(AUDITED_SDKS)
    for product in AUDITED:
        documented = audit_calls(product.name)
        events = set(product.audit_events)
        assert documented <= events, (product.name, documented - events)
        # The rest come from the Terraform provider (its waits on a call's RequestId), and are real calls.
        client = AUDITED_SDKS[product.name].client
        assert all(callable(getattr(client, name, None)) for name in events), product.name
    assert AUDIT_TRAIL.service == AUDIT_SERVICE
    assert AUDIT_TRAIL.version == AUDIT_CLIENT._apiVersion
    request = AUDIT_MODELS.DescribeEventsRequest()
    for name in ("StartTime", "EndTime", "NextToken", "MaxResults", "LookupAttributes"):
        assert hasattr(request, name), name
    assert hasattr(AUDIT_MODELS.Event(), "RequestID")  # not RequestId: the model's spelling


@pytest.fixture
def sim() -> Iterator[SimulatorThread]:
    simulator = Simulator([KEY])
    for p, product in enumerate(AUDITED):
        running = FACTS[product.name].running
        for n in range(30):
            region = REGION if n % 3 else OTHER_REGION
            task = SimTask(
                product.name, _id(100 * p + n), (Phase(0, running),), started=-60.0 - n, region=region
            )
            simulator.add_task(task)
    # One that has not begun: its call has not been made, so the trail does not have it yet.
    simulator.add_task(
        SimTask(AUDITED[0].name, _id(999), (Phase(0, FACTS[AUDITED[0].name].running),), started=3600)
    )
    with SimulatorThread(simulator) as thread:
        yield thread


def _client(url: str) -> Any:
    http = HttpProfile(protocol="http", endpoint=url.removeprefix("http://"), reqTimeout=5)
    cred = credential.Credential(KEY.secret_id, KEY.secret_key)
    return AUDIT_CLIENT(cred, REGION, ClientProfile(httpProfile=http))


def _events(client: Any, **params: Any) -> Any:
    now = int(time.time())
    request = AUDIT_MODELS.DescribeEventsRequest()
    request.from_json_string(json.dumps({"StartTime": now - 3600, "EndTime": now, **params}))
    return client.DescribeEvents(request)


def test_events_parse_into_the_sdk_models_and_page_by_next_token(sim: SimulatorThread) -> None:
    client = _client(sim.url)
    names = [{"AttributeKey": "EventName", "AttributeValue": n} for p in AUDITED for n in p.audit_events]
    seen: list[Any] = []
    token, pages = None, 0
    while True:
        params: dict[str, Any] = {"MaxResults": AUDIT_PAGE_SIZE, "LookupAttributes": names}
        if token is not None:
            params["NextToken"] = token
        response = _events(client, **params)
        pages += 1
        assert len(response.Events) <= AUDIT_PAGE_SIZE
        seen.extend(response.Events)
        if response.ListOver:
            break
        token = response.NextToken
    # 60 operations, and a call that failed or was refused beside every other one.
    assert pages == 2
    assert len(seen) == 90
    times = [int(e.EventTime) for e in seen]
    assert times == sorted(times, reverse=True)  # newest first
    ids = {e.RequestID for e in seen}
    assert {_id(100 * p + n) for p in range(len(AUDITED)) for n in range(30)} < ids
    assert _id(999) not in ids
    for event in seen:
        product = next(p for p in AUDITED if event.EventName in p.audit_events)
        assert event.EventSource == f"{product.name}.tencentcloudapi.com"
        assert event.ResourceRegion in (REGION, OTHER_REGION)
        assert isinstance(json.loads(event.CloudAuditEvent), dict)
    # The exporter's own reader, on the same answers: the operations, not the calls that started nothing.
    now = int(time.time())
    params = {"StartTime": now - 3600, "EndTime": now, "MaxResults": 50, "LookupAttributes": names}
    answer = client.call_json("DescribeEvents", params)["Response"]
    page = AUDIT_TRAIL.page(answer, audit_owners(AUDITED))
    operations = {_id(100 * p + n) for p in range(len(AUDITED)) for n in range(30)}
    assert page.size == 50
    assert {i.listed.task_id for i in page.items} == {e["RequestID"] for e in answer["Events"]} & operations
    assert {i.region for i in page.items} == {REGION, OTHER_REGION}


def test_lookup_attributes_filter_and_requests_are_refused_as_documented(sim: SimulatorThread) -> None:
    client = _client(sim.url)
    first = AUDITED[0]
    name = first.audit_events[1]  # the first task's (the simulator names them in turn)
    response = _events(
        client, MaxResults=50, LookupAttributes=[{"AttributeKey": "EventName", "AttributeValue": name}]
    )
    assert response.Events
    assert {e.EventName for e in response.Events} == {name}
    by_id = _events(client, LookupAttributes=[{"AttributeKey": "RequestId", "AttributeValue": _id(1)}])
    assert [e.RequestID for e in by_id.Events] == [_id(1)]
    assert by_id.ListOver
    for params, code in (
        ({"MaxResults": 51}, "InvalidParameterValue.MaxResult"),
        ({"StartTime": int(time.time()) - 8 * 86400}, "LimitExceeded.OverTime"),
        ({"EndTime": 1}, "InvalidParameterValue.Time"),
        (
            {"LookupAttributes": [{"AttributeKey": "Colour", "AttributeValue": "red"}]},
            "InvalidParameterValue.attributeKey",
        ),
    ):
        with pytest.raises(TencentCloudSDKException) as raised:
            _events(client, **params)
        assert raised.value.code == code, params
    # A parameter the model does not have (the SDK drops it), sent as it is.
    with pytest.raises(TencentCloudSDKException) as raised:
        client.call_json("DescribeEvents", {"StartTime": 1, "EndTime": 2, "Limit": 5})
    assert raised.value.code == "UnknownParameter"


def test_its_quota_is_its_own_and_faults_can_be_set_on_it() -> None:
    product = AUDITED[0]
    simulator = Simulator([KEY], audit_quota=2.0)
    simulator.add_task(SimTask(product.name, _id(1), (Phase(0, FACTS[product.name].running),)))
    with SimulatorThread(simulator) as sim:
        _quota_and_faults(sim)


def _quota_and_faults(sim: SimulatorThread) -> None:
    client = _client(sim.url)
    codes = []
    for _ in range(8):
        try:
            _events(client)
            codes.append("")
        except TencentCloudSDKException as exc:
            codes.append(str(exc.code))
    assert "RequestLimitExceeded" in codes  # 2 a second (audit_quota)
    # Status requests of the audited products spend their own quotas, untouched.
    product = AUDITED[0]
    status = sdk_client(product.name, sim.url)
    request = getattr(AUDITED_SDKS[product.name].models, f"{product.action}Request")()
    setattr(request, product.id_param, _id(1))
    getattr(status, product.action)(request)
    sim.set_action_faults(
        AUDIT_TRAIL.service, AUDIT_TRAIL.action, Faults(error_code="InternalError.SearchError")
    )

    def failing() -> bool:
        try:
            _events(client)
        except TencentCloudSDKException as exc:
            return str(exc.code) == "InternalError.SearchError"  # else throttled still: asked again
        return False

    wait_for(failing, 5, "the injected error", interval=0.2)
    stats = sim.stats()
    assert stats["audit_quota"] == 2.0
    audit = stats["services"][AUDIT_TRAIL.service][AUDIT_TRAIL.action]
    assert audit["throttled"] >= 1
    assert stats["services"][product.name][BY_NAME[product.name].action]["throttled"] == 0
    assert stats["accounts"][KEY.secret_id][f"{AUDIT_TRAIL.service}:{AUDIT_TRAIL.action}"]["throttled"] >= 1
