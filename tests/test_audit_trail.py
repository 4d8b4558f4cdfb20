"""Reading the audit trail (CloudAudit's DescribeEvents) for the products whose task ID is a call's RequestId:
one page on its own (hostile and malformed answers, sizes, the window), and an AuditSweeper paging through
the simulator or a scripted client (ListOver, NextToken, the page cap, throttled pages, the shared bucket)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from exporter.catalogue.auditlists import (
    AUDIT_PAGE_SIZE,
    AUDIT_SPAN_MAX,
    AUDIT_TRAIL,
    DETAIL_MAX_BYTES,
    AuditPage,
    event_time,
)
from exporter.catalogue.listapis import Listed
from exporter.catalogue.products import AUDITED, InvalidResponse, Product, audit_owners
from exporter.config.auditconfig import AuditConfig
from exporter.config.lanes import Lane
from exporter.config.parser import ApiConfig, ConfigError, DiscoveryConfig, parse_config
from exporter.credentials.base import StaticProvider
from exporter.exposition.metrics import Metrics
from exporter.polling.auditsweep import MAX_AUDIT_PAGES, AuditSweep, AuditSweeper
from exporter.polling.client import INVALID_RESPONSE, ApiClient, AuditOutcome, api_session
from exporter.polling.discovery import Discovery
from exporter.polling.ratelimit import TokenBucket
from exporter.simulator import Faults, Phase, SimTask, Simulator, SimulatorThread
from tests.helpers import CREDS
from tests.products import FACTS

REGION, OTHER_REGION = "ap-guangzhou", "ap-shanghai"
OWNERS = audit_owners(AUDITED)
FIRST, SECOND = AUDITED[0], AUDITED[1]


def _event(product: Product, request_id: str | None, **fields: Any) -> dict[str, Any]:
    return {
        "EventName": product.audit_events[0],
        "RequestID": request_id,
        "EventTime": "1700000000",
        "ResourceRegion": REGION,
        "ErrorCode": 0,
        "EventSource": f"{product.name}.tencentcloudapi.com",
        "CloudAuditEvent": json.dumps({"apiErrorCode": 0}),
        **fields,
    }


def _page(*events: dict[str, Any], list_over: bool = True, token: object = 0) -> AuditPage:
    return AUDIT_TRAIL.page({"ListOver": list_over, "NextToken": token, "Events": list(events)}, OWNERS)


def _id(n: int) -> str:
    return f"{n:08x}-1b2c-4d3e-8f40-a1b2c3d4e5f6"


def test_each_event_goes_to_its_product_with_its_request_id_start_and_name() -> None:
    page = _page(
        _event(FIRST, _id(1), Resources={"ResourceType": "x", "ResourceName": "res-1"}),
        _event(
            SECOND, _id(2), EventTime="2023-11-15 06:13:20", ResourceRegion=None, EventRegion=OTHER_REGION
        ),
    )
    assert [(i.product, i.region) for i in page.items] == [(FIRST.name, REGION), (SECOND.name, OTHER_REGION)]
    first, second = page.items[0].listed, page.items[1].listed
    assert first == Listed(
        _id(1), start_time=1700000000.0, task_type=FIRST.audit_events[0], instance_id="res-1"
    )
    assert second.start_time == 1700000000.0  # the same moment written in UTC+8
    assert second.status is None  # the audit trail says no status: status polling decides
    assert page.list_over
    assert page.next_token is None


def test_calls_that_started_nothing_or_name_nothing_usable_are_skipped() -> None:
    skipped = [
        _event(FIRST, _id(1), ErrorCode=403),  # refused by CAM
        _event(
            FIRST, _id(2), CloudAuditEvent=json.dumps({"apiErrorCode": 4001})
        ),  # the API answered an error
        _event(FIRST, _id(3), CloudAuditEvent=json.dumps({"apiErrorCode": "InvalidParameter"})),
        _event(
            FIRST, _id(4), EventSource="gaap.tencentcloudapi.com"
        ),  # another product's action of that name
        _event(FIRST, _id(5), EventName="DescribeSomething"),  # not a call that starts an operation
        _event(FIRST, "not a request id!"),
        _event(FIRST, _id(6), ResourceRegion="Guangzhou", EventRegion=None),
        _event(FIRST, None),
    ]
    kept = [
        _event(FIRST, _id(7), EventSource="cloud.tencent.com"),  # a console call: says nothing of whose it is
        _event(FIRST, _id(8), CloudAuditEvent="{not json"),  # unreadable detail: the status API decides
        _event(FIRST, _id(9), CloudAuditEvent="[" * 100_000),  # too large to be read at all
        _event(FIRST, _id(10), ErrorCode=True, EventTime="soon"),
    ]
    page = _page(*skipped, *kept)
    assert [i.listed.task_id for i in page.items] == [_id(7), _id(8), _id(9), _id(10)]
    assert page.size == len(skipped) + len(kept)
    assert page.items[3].listed.start_time is None
    assert len(kept[2]["CloudAuditEvent"]) > DETAIL_MAX_BYTES


@pytest.mark.parametrize(
    "response",
    [
        {"NextToken": 1, "Events": []},  # no ListOver
        {"ListOver": "false", "NextToken": 1, "Events": []},
        {"ListOver": False, "Events": []},  # more pages, and no token to ask for them
        {"ListOver": False, "NextToken": -1, "Events": []},
        {"ListOver": False, "NextToken": True, "Events": []},
        {"ListOver": False, "NextToken": "2", "Events": []},
        {"ListOver": True, "Events": {"EventName": "x"}},
        {"ListOver": True, "Events": ["an event"]},
        {"ListOver": True, "Events": [None]},
    ],
)
def test_a_page_lacking_what_the_api_documents_is_an_invalid_response(response: dict[str, Any]) -> None:
    with pytest.raises(InvalidResponse):
        AUDIT_TRAIL.page(response, OWNERS)


def test_a_page_is_cut_at_its_size_and_null_events_are_none() -> None:
    page = _page(*(_event(FIRST, _id(n)) for n in range(3 * AUDIT_PAGE_SIZE)), list_over=False, token=7)
    assert (len(page.items), page.size, page.next_token) == (AUDIT_PAGE_SIZE, AUDIT_PAGE_SIZE, 7)
    assert AUDIT_TRAIL.page({"ListOver": True, "Events": None}, OWNERS).items == ()


def test_times_and_the_window() -> None:
    assert event_time(1700000000) == event_time("1700000000") == event_time("2023-11-15 06:13:20")
    for odd in (None, True, -5, "", "17e8", "2023-13-45 99:99:99", "1" * 20, 1.5):
        assert event_time(odd) is None, odd
    # The lookback, cut to the API's span, in whole seconds up to now.
    assert AUDIT_TRAIL.window(1000.7, 3600.0) == (1000 - 3600, 1000)
    begin, end = AUDIT_TRAIL.window(10_000_000.0, 30 * 86400.0)
    assert end - begin == int(AUDIT_SPAN_MAX) < 7 * 86400
    payload = AUDIT_TRAIL.payload(begin, end, ("B", "A"), None)
    assert payload["MaxResults"] == AUDIT_PAGE_SIZE == 50
    assert "NextToken" not in payload
    assert [a["AttributeValue"] for a in payload["LookupAttributes"]] == ["B", "A"]
    assert AUDIT_TRAIL.payload(begin, end, (), 3)["NextToken"] == 3


def test_two_products_cannot_claim_one_event_name() -> None:
    assert FIRST.audit_events
    assert not set(FIRST.audit_events) & set(SECOND.audit_events)
    with pytest.raises(ValueError, match="both"):
        audit_owners([FIRST, _renamed(FIRST)])


def _renamed(product: Product) -> Product:
    return dataclasses.replace(product, name=product.name + "x")


# ---- sweeping


@pytest.fixture
async def client() -> AsyncIterator[ApiClient]:
    async with api_session() as session:
        yield ApiClient(session, 5.0)


def _tasks(count: int, started: float = -30.0) -> list[SimTask]:
    running = FACTS[FIRST.name].running
    return [
        SimTask(FIRST.name, _id(n), (Phase(0, running),), started=started, region=REGION)
        for n in range(count)
    ]


def _sweeper(
    url: str, client: Any, found: dict[str, list[Listed]], bucket: TokenBucket | None = None, **config: Any
) -> tuple[AuditSweeper, Metrics]:
    async def take(
        account: str, product: Product, region: str, items: list[Listed], now: float, speaks_for: float
    ) -> int:
        found.setdefault(f"{product.name} {region}", []).extend(items)
        return 0

    async def no_wait(seconds: float) -> None:
        return None

    sleep = config.pop("sleep", no_wait)

    discovery = DiscoveryConfig(regions=(REGION,), lookback=3600.0, **config)
    lane = Lane("default", AUDIT_TRAIL.service, AUDIT_TRAIL.action, url)
    spec = AuditSweep("default", tuple(AUDITED), (REGION,), lane, AuditConfig(endpoint=url))
    metrics = Metrics()
    room = Discovery(lambda batch: None, lambda task: True, metrics)
    sweeper = AuditSweeper(
        spec,
        bucket or TokenBucket(20.0),
        client,
        StaticProvider(CREDS, "test"),
        metrics,
        discovery,
        take,
        room,
        sleep=sleep,
    )
    return sweeper, metrics


async def test_a_sweep_pages_by_next_token_until_list_over(client: ApiClient) -> None:
    with SimulatorThread(Simulator([CREDS])) as sim:
        for task in _tasks(120):
            sim.add_task(task)
        found: dict[str, list[Listed]] = {}
        sweeper, metrics = _sweeper(sim.url, client, found)
        assert await sweeper.sweep()
        stats = sim.stats()["services"][AUDIT_TRAIL.service][AUDIT_TRAIL.action]
    # 120 tasks, and beside them 60 calls that failed or were refused: 180 events, 4 pages of 50.
    assert sweeper.pages_read == stats["accepted"] == 4
    assert sorted(i.task_id for i in found[f"{FIRST.name} {REGION}"]) == [_id(n) for n in range(120)]
    assert found[f"{SECOND.name} {REGION}"] == []
    labels = {"account": "default", "product": SECOND.name, "cloud_region": REGION}
    assert metrics.registry.get_sample_value("tencentcloud_discovery_sweeps_total", labels) == 1


async def test_a_throttled_page_is_asked_again_and_a_failed_one_fails_every_product(
    client: ApiClient,
) -> None:
    # The simulator allows one DescribeEvents a second; the sweeper believes 20: its second page is throttled,
    # and asked again a second later (PAGE_RETRY_S), within the sweep.
    with SimulatorThread(Simulator([CREDS], audit_quota=1.0)) as sim:
        for task in _tasks(60):
            sim.add_task(task)
        found: dict[str, list[Listed]] = {}
        sweeper, metrics = _sweeper(sim.url, client, found, sleep=asyncio.sleep)
        assert await sweeper.sweep()
        throttled = sim.stats()["services"][AUDIT_TRAIL.service][AUDIT_TRAIL.action]["throttled"]
        assert throttled >= 1  # the case under test happened
        assert len(found[f"{FIRST.name} {REGION}"]) == 60
        sim.set_action_faults(
            AUDIT_TRAIL.service, AUDIT_TRAIL.action, Faults(error_code="InternalError.SearchError")
        )
        assert not await sweeper.sweep()
        host = sim.url.removeprefix("http://")
    for product in AUDITED:
        labels = {"account": "default", "product": product.name, "cloud_region": REGION}
        errors = {**labels, "code": "InternalError.SearchError"}
        assert metrics.registry.get_sample_value("tencentcloud_discovery_errors_total", errors) == 1
        assert (
            metrics.registry.get_sample_value("tencentcloud_discovery_consecutive_failed_sweeps", labels) == 1
        )
    lane = {"account": "default", "product": AUDIT_TRAIL.service, "action": AUDIT_TRAIL.action}
    assert (
        metrics.registry.get_sample_value(
            "tencentcloud_api_throttled_requests_total", {**lane, "api_endpoint": host}
        )
        or 0
    ) >= 1


class _Scripted:
    """A client whose audit trail never ends (or repeats a token): what a broken API could answer."""

    def __init__(self, repeat: bool) -> None:
        self.repeat, self.calls = repeat, 0

    async def audit_page(self, *args: Any, **kwargs: Any) -> AuditOutcome:
        self.calls += 1
        token = 1 if self.repeat else self.calls
        return AuditOutcome(None, AuditPage((), False, token, AUDIT_PAGE_SIZE))


async def test_paging_stops_at_the_page_cap_and_at_a_repeated_token() -> None:
    endless = _Scripted(repeat=False)
    sweeper, _ = _sweeper("http://127.0.0.1:9", endless, {}, TokenBucket(1e9))
    assert await sweeper.sweep()  # complete as far as one sweep reads, and said so in the log
    assert endless.calls == sweeper.pages_read == MAX_AUDIT_PAGES
    looping = _Scripted(repeat=True)
    sweeper, metrics = _sweeper("http://127.0.0.1:9", looping, {}, TokenBucket(1e9))
    assert not await sweeper.sweep()
    assert looping.calls == 2
    labels = {"account": "default", "product": FIRST.name, "cloud_region": REGION, "code": INVALID_RESPONSE}
    assert metrics.registry.get_sample_value("tencentcloud_discovery_errors_total", labels) == 1


async def test_every_product_of_an_account_shares_one_cloudaudit_bucket(client: ApiClient) -> None:
    metrics = Metrics()
    discovery = Discovery(lambda batch: None, lambda task: True, metrics)
    config = DiscoveryConfig(
        regions=(REGION, OTHER_REGION),
        accounts=("default", "other"),
        products=tuple(p.name for p in AUDITED),
        cloudaudit=AuditConfig(endpoint="http://127.0.0.1:9", rate_limit=10.0),
    )
    apis = {p.name: ApiConfig.default(p) for p in AUDITED}
    credentials = {a: StaticProvider(CREDS, "test") for a in ("default", "other")}
    discovery.start(config, apis, client, credentials, shards=2)
    try:
        buckets = discovery._buckets
        assert {lane.product for lane in buckets} == {AUDIT_TRAIL.service}
        assert sorted(lane.account for lane in buckets) == [
            "default",
            "other",
        ]  # one per account, not product
        assert {b.max_rate for b in buckets.values()} == {5.0}  # each of two replicas sweeps with its share
        assert discovery.swept == {
            (a, p.name, r) for a in ("default", "other") for p in AUDITED for r in (REGION, OTHER_REGION)
        }
    finally:
        await discovery.stop()


def test_the_cloudaudit_section_is_checked_with_every_problem_named() -> None:
    document = {
        "discovery": {
            "regions": [REGION],
            "products": [p.name for p in AUDITED],
            "cloudaudit": {"endpoint": "ftp://audit", "rate_limit": 50, "region": "Guangzhou", "quota": 1},
        },
        "apis": {FIRST.name: {"list_rate_limit": 5}},
    }
    with pytest.raises(ConfigError) as caught:
        parse_config(document, "config.yaml", env={})
    problems = str(caught.value)
    for expected in (
        "config.yaml: discovery.cloudaudit.endpoint: expected",
        "config.yaml: discovery.cloudaudit.rate_limit: expected at most 20, the API's quota per account",
        "config.yaml: discovery.cloudaudit.region: expected a region name like ap-guangzhou",
        "config.yaml: discovery.cloudaudit.quota: unknown key",
        # The audit trail's quota is not a product's: its list_rate_limit stays unknown.
        f"config.yaml: apis.{FIRST.name}.list_rate_limit: unknown key",
    ):
        assert expected in problems, (expected, problems)
    fine = {
        "discovery": {
            "regions": [REGION],
            "cloudaudit": {"endpoint": "https://audit.example", "rate_limit": 5},
        }
    }
    config = parse_config(fine, "config.yaml", env={})
    assert config.discovery is not None
    assert config.discovery.cloudaudit == AuditConfig(
        "https://audit.example", 5.0, AUDIT_TRAIL.default_region
    )
    assert {p.name for p in AUDITED} <= set(config.discovery.products)  # discovered by default
