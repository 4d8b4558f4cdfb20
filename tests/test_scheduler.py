"""The scheduler in-process against the real simulator: spreading, priorities, backoff, throttling."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable

import aiohttp
import pytest

from exporter.catalogue.listapis import Listed
from exporter.catalogue.products import CDB, MARIADB, Product
from exporter.config.parser import PollingConfig, WatchedTask
from exporter.credentials.chain import StaticProvider
from exporter.credentials.signing import Credentials
from exporter.exposition.metrics import Metrics
from exporter.exposition.state import TaskStore
from exporter.polling.client import ApiClient, Outcome
from exporter.polling.ratelimit import Ticket, TokenBucket
from exporter.polling.scheduler import LaneScheduler, backoff_delay
from exporter.simulator import Faults, Phase, SimTask, SimulatorThread
from tests.conftest import eventually
from tests.helpers import CREDS


class RecordingClient(ApiClient):
    """The real client, noting when each task was polled."""

    def __init__(self, session: aiohttp.ClientSession, timeout: float) -> None:
        super().__init__(session, timeout)
        self.polls: list[tuple[float, str]] = []

    async def describe(
        self,
        product: Product,
        endpoint: str,
        region: str,
        credentials: Credentials,
        task_id: str,
        ticket: Ticket | None = None,
    ) -> Outcome:
        self.polls.append((time.monotonic(), task_id))
        return await super().describe(product, endpoint, region, credentials, task_id, ticket)


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


def scheduler_for(
    product: Product, url: str, client: ApiClient, rate: float, polling: PollingConfig
) -> tuple[LaneScheduler, TaskStore]:
    store = TaskStore()
    scheduler = LaneScheduler(
        product,
        url,
        TokenBucket(rate),
        client,
        StaticProvider(CREDS, "test"),
        store,
        Metrics(),
        polling,
    )
    return scheduler, store


async def run_until(
    scheduler: LaneScheduler, condition: Callable[[], object], what: str, within: float = 15.0
) -> None:
    """Runs the scheduler until `condition()` holds (failing after `within` seconds), then stops it."""
    worker = asyncio.create_task(scheduler.run())
    try:
        await eventually(condition, within, what)
    finally:
        worker.cancel()
        await asyncio.gather(worker, return_exceptions=True)


async def test_first_polls_are_spread_over_one_interval(
    simulator: SimulatorThread, session: aiohttp.ClientSession
) -> None:
    url = simulator.url
    for n in range(10):
        simulator.add_task(SimTask(MARIADB.name, str(n + 1), (Phase(0, 2),)))
    client = RecordingClient(session, 2.0)
    scheduler, _ = scheduler_for(MARIADB, url, client, 100, PollingConfig(interval=1.0, finished_interval=60))
    started = time.monotonic()
    scheduler.sync([WatchedTask(MARIADB.name, str(n + 1), "ap-guangzhou") for n in range(10)], spread=True)
    await run_until(scheduler, lambda: len({t for _, t in client.polls}) == 10, "a first poll of every task")
    first: dict[str, float] = {}
    for at, task_id in client.polls:
        first.setdefault(task_id, at - started)
    offsets = sorted(first.values())
    # Not a thundering herd: the k-th first poll is due k/10 of the interval in, and none goes early. (A busy
    # machine may wake the loop late, so two may go close together; that is lateness, not a herd.)
    assert all(offset >= k * 0.1 - 0.01 for k, offset in enumerate(offsets)), offsets
    # All within the first interval: the last is due at 0.9 s, and a busy loop may be a little late for it.
    assert offsets[-1] < 1.2, offsets


async def test_tasks_in_progress_go_first_when_the_quota_is_short(
    simulator: SimulatorThread, session: aiohttp.ClientSession
) -> None:
    url = simulator.url
    running = [f"run-{n}" for n in range(2)]
    finished = [f"done-{n}" for n in range(20)]
    for task_id in running:
        simulator.add_task(SimTask(CDB.name, task_id, (Phase(0, "RUNNING"),)))
    for task_id in finished:
        simulator.add_task(SimTask(CDB.name, task_id, (Phase(0, "SUCCESS"),)))
    client = RecordingClient(session, 2.0)
    # 10 req/s for a demand of 2/0.2s + 20/0.2s = 110 req/s.
    polling = PollingConfig(interval=0.2, finished_interval=0.2)
    scheduler, store = scheduler_for(CDB, url, client, 10, polling)
    scheduler.sync([WatchedTask(CDB.name, t, "ap-guangzhou") for t in running + finished], spread=False)
    started = time.monotonic()
    await run_until(
        scheduler,
        lambda: min(Counter(t for _, t in client.polls)[r] for r in running) >= 7,
        "seven polls of each running task",
    )
    elapsed = time.monotonic() - started
    polls = Counter(task_id for _, task_id in client.polls)
    # Every finished task got its first poll (unknown status counts as in progress) ...
    assert all(store.get((CDB.name, "ap-guangzhou", t)).status == "success" for t in finished)  # type: ignore[union-attr]
    # ... which takes ~2.2 s of quota; after that the two running tasks spend all of it (2 per 0.2 s = 10/s)
    # at their interval while the finished ones, due as often, wait.
    # (A finished task may get a second poll when the running ones are slow to answer on a busy machine and
    # leave quota unspent: the scheduler is work-conserving. Without priorities all 22 would be polled alike,
    # so the 20 finished ones together would get some 120 repeat polls; here fewer than one running task got.)
    assert sum(polls[t] - 1 for t in finished) < min(polls[t] for t in running), polls
    assert len(client.polls) <= elapsed * 10 + 1  # never above the quota


async def test_failed_polls_back_off(simulator: SimulatorThread, session: aiohttp.ClientSession) -> None:
    url = simulator.url  # the task is unknown to the simulator: every poll fails with FlowNotFound
    client = RecordingClient(session, 2.0)
    polling = PollingConfig(interval=0.1, finished_interval=1, max_backoff=0.8)
    scheduler, store = scheduler_for(MARIADB, url, client, 100, polling)
    scheduler.sync([WatchedTask(MARIADB.name, "404", "ap-guangzhou")], spread=False)
    key = (MARIADB.name, "ap-guangzhou", "404")

    def six_failures() -> bool:
        state = store.get(key)
        return state is not None and sum(state.errors.values()) >= 6

    # Counted once answered: the next poll is at least 0.4 s of backoff away, so none is in flight.
    await run_until(scheduler, six_failures, "six failed polls")
    times = [at for at, _ in client.polls]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    state = store.get(key)
    assert state is not None
    assert state.errors == {"InvalidParameter.FlowNotFound": len(times)}
    # Backoff after 1..5 failures waits at least half of 0.1, 0.2, 0.4, 0.8 (capped) and 0.8 s: 1.15 s in all
    # for the first six polls, where the 0.1 s interval alone would take 0.5 s.
    assert times[5] - times[0] >= 1.15
    assert gaps[4] > gaps[0]


def test_backoff_is_exponential_capped_and_jittered() -> None:
    polling = PollingConfig(interval=30, max_backoff=600)
    highest = [backoff_delay(n, polling, lambda: 1.0) for n in range(1, 8)]
    assert highest == [30, 60, 120, 240, 480, 600, 600]
    lowest = [backoff_delay(n, polling, lambda: 0.0) for n in range(1, 8)]
    assert lowest == [h / 2 for h in highest]


async def test_throttling_slows_the_bucket(
    simulator: SimulatorThread, session: aiohttp.ClientSession
) -> None:
    url = simulator.url
    simulator.add_task(
        SimTask(MARIADB.name, "1", (Phase(0, 2),)).with_faults(Faults(error_code="RequestLimitExceeded"))
    )
    client = RecordingClient(session, 2.0)
    scheduler, _ = scheduler_for(MARIADB, url, client, 20, PollingConfig(interval=0.1))
    scheduler.sync([WatchedTask(MARIADB.name, "1", "ap-guangzhou")], spread=False)
    await run_until(
        scheduler, lambda: scheduler.bucket.current_rate() < 20, "the bucket to slow down after throttling"
    )
    assert client.polls  # it was an answer to a poll that slowed it


async def test_a_list_page_counts_as_a_poll_holds_back_the_status_request_and_never_takes_back_a_final(
    session: aiohttp.ClientSession,
) -> None:
    polling = PollingConfig(interval=1.0, finished_interval=600.0)
    scheduler, store = scheduler_for(CDB, "http://127.0.0.1:9", ApiClient(session, 1.0), 20, polling)
    task = WatchedTask(CDB.name, "list-speaks-0001", "ap-guangzhou")
    scheduler.sync([task], spread=False)
    listed_at = time.time()
    scheduler.listed(task.key, Listed(task.task_id, status="running", progress=0.5), listed_at, 30.0)
    state = store.get(task.key)
    assert state is not None
    assert (state.status, state.observation and state.observation.progress) == ("running", 0.5)
    assert state.last_success is not None
    assert state.last_success >= listed_at
    # The task's own status request waits while the sweeps speak for it.
    next_due = scheduler._next_due()
    assert next_due is not None
    assert next_due > time.monotonic() + 25
    # A final status from a page is confirmed by one status request at once...
    scheduler.listed(task.key, Listed(task.task_id, status="success"), time.time(), 30.0)
    assert state.status == "success"
    next_due = scheduler._next_due()
    assert next_due is not None
    assert next_due <= time.monotonic()
    # ...and a page lagging behind never takes it back, nor one read before the status API answered.
    scheduler.listed(task.key, Listed(task.task_id, status="running"), time.time(), 30.0)
    assert state.status == "success"
    scheduler.listed(task.key, Listed(task.task_id, status="failed"), listed_at - 10, 30.0)
    assert state.status == "success"
