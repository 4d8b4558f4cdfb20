"""Bounds on what discovery takes from the cloud: a page is cut at its Limit, the discovered tasks have a cap
that holds (the sweep that meets it stops, is counted and logged once), and a throttled page is asked again
within the sweep instead of failing it."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest

from exporter.catalogue.listapis import PAGE_SIZE, Listed
from exporter.catalogue.products import CDB
from exporter.config.lanes import Lane
from exporter.config.parser import ApiConfig, DiscoveryConfig, WatchedTask
from exporter.credentials.base import StaticProvider
from exporter.exposition.metrics import Metrics
from exporter.polling.client import ApiClient, api_session
from exporter.polling.discovery import Discovery, Sweeper
from exporter.polling.ratelimit import TokenBucket
from exporter.simulator import Phase, SimTask, Simulator, SimulatorThread
from tests.conftest import eventually
from tests.helpers import CREDS

REGION = "ap-guangzhou"


def test_a_page_holding_more_than_its_limit_is_cut_at_the_limit() -> None:
    assert CDB.listing is not None
    items = [{"AsyncRequestId": f"{n:08x}-0000-0000-0000"} for n in range(3 * PAGE_SIZE)]
    page = CDB.listing.page({"TotalCount": 100_000, "Items": items}, CDB.id_kind)
    assert len(page.items) == PAGE_SIZE
    assert page.size == PAGE_SIZE


def _operations(count: int) -> list[SimTask]:
    return [
        SimTask(
            CDB.name,
            f"{n:08x}-b0b0b0b0-c0c0c0c0-d0d0d0d0",
            (Phase(0, "RUNNING"),),
            started=-60.0,
            region=REGION,
        )
        for n in range(count)
    ]


@pytest.fixture
async def client() -> AsyncIterator[ApiClient]:
    async with api_session() as session:
        yield ApiClient(session, 5.0)


async def test_discovered_tasks_stop_at_the_cap_counted_and_logged_once(
    client: ApiClient, caplog: pytest.LogCaptureFixture
) -> None:
    with SimulatorThread(Simulator([CREDS])) as sim:
        for task in _operations(450):
            sim.add_task(task)
        watched: list[tuple[WatchedTask, Listed]] = []
        metrics = Metrics()
        discovery = Discovery(watched.extend, lambda task: True, metrics, max_tasks=150)
        config = DiscoveryConfig(regions=(REGION,), products=(CDB.name,), interval=0.3, lookback=3600.0)
        apis = {CDB.name: ApiConfig(sim.url, 40.0, 100.0)}
        credentials = {"default": StaticProvider(CREDS, "test")}
        labels = {"account": "default", "product": CDB.name, "cloud_region": REGION}

        def sample(name: str) -> float:
            return metrics.registry.get_sample_value(name, labels) or 0.0

        caplog.set_level(logging.DEBUG, logger="exporter.discovery")
        discovery.start(config, apis, client, credentials, shards=1)
        try:
            await eventually(
                lambda: sample("tencentcloud_discovery_capped_sweeps_total") >= 3, 10, "3 sweeps"
            )
        finally:
            await discovery.stop()
    assert len(discovery.found) == 150
    assert len({task.key for task, _ in watched}) == 150
    assert sample("tencentcloud_discovery_tasks") == 150
    capped = [r for r in caplog.records if "cap of discovered tasks" in r.getMessage()]
    assert [r.levelno for r in capped[:2]] == [logging.WARNING, logging.DEBUG]  # said once, then quietly
    # A capped sweep still succeeded: what it read is watched, and it is not an error.
    assert sample("tencentcloud_discovery_consecutive_failed_sweeps") == 0


async def test_a_throttled_page_is_asked_again_within_the_sweep(client: ApiClient) -> None:
    # The simulator allows 1 list request a second and the exporter believes 3: pages get throttled.
    with SimulatorThread(Simulator([CREDS], list_quotas={CDB.name: 1.0})) as sim:
        for task in _operations(250):
            sim.add_task(task)
        found: list[Listed] = []

        async def take(
            account: str, product: Any, region: str, items: list[Listed], now: float, speaks_for: float
        ) -> int:
            found.extend(items)
            return 0

        assert CDB.listing is not None
        lane = Lane("default", CDB.name, CDB.listing.action, sim.url)
        metrics = Metrics()
        config = DiscoveryConfig(regions=(REGION,), products=(CDB.name,), lookback=3600.0)
        sweeper = Sweeper(
            CDB, REGION, lane, TokenBucket(3.0), client, StaticProvider(CREDS, "test"), metrics, config, take
        )
        assert await sweeper.sweep()
        stats = sim.stats()["actions"][CDB.listing.action]
    assert stats["throttled"] >= 1  # the case under test happened
    assert len(found) == 250
    assert metrics.registry.get_sample_value(
        "tencentcloud_discovery_errors_total",
        {"account": "default", "product": CDB.name, "cloud_region": REGION, "code": "RequestLimitExceeded"},
    ) in (None, 0.0)
