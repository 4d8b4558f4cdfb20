"""A Sweeper pages through one product's list API for one (account, region) every interval, inside the list
API's own token bucket (one per account and endpoint, as Tencent counts the quota), so a sweep never takes a
status-polling token and polling never waits for a sweep. What it finds goes to Discovery (discovery.py).

Bounds on what the cloud sends: at most MAX_PAGES pages a sweep, each cut at its Limit (catalogue), and no
more new tasks than Discovery has room for (MAX_TASKS). A throttled page is asked again within the sweep; a
sweep that still fails is counted and tried again at the next interval. Where the list reports statuses
(`ListApi.speaks_status`), a sweep while work is in progress runs every polling.interval and reads only from
the oldest operation in progress on, with a full sweep every discovery.interval.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Protocol, TypeVar

from exporter.catalogue.listapis import PAGE_SIZE, Listed, Page
from exporter.catalogue.products import Product
from exporter.config.lanes import Lane
from exporter.config.parser import DiscoveryConfig, Key
from exporter.credentials.chain import CredentialProvider, CredentialsError
from exporter.credentials.signing import Credentials
from exporter.exposition.metrics import Metrics
from exporter.log import FirstOfKind
from exporter.polling.client import CREDENTIALS_UNAVAILABLE, INTERNAL_ERROR, ApiClient, PageOutcome
from exporter.polling.ratelimit import TokenBucket

log = logging.getLogger("exporter.discovery")

# Pages of one sweep in flight at once: enough to spend a list quota at loopback-to-Tencent latencies.
MAX_CONCURRENT_PAGES = 16
# A sweep reads at most this many pages (100,000 operations): an account listing more is cut short, loudly.
MAX_PAGES = 1000
# Discovered tasks kept at most when no config says (the daemon passes `limits.discovered_tasks`), every
# account, product and region together: what one sweep may bring in is bounded by pages, this bounds what
# all sweeps together keep (memory, /metrics). A sweep that would go beyond it stops reading pages; the
# operations beyond it are not watched (counted, logged once).
MAX_TASKS = 20_000
# A throttled page is asked again this many times within the sweep (each inside the bucket, which slows
# down on every throttled answer) before the sweep fails; the wait before each retry grows by PAGE_RETRY_S.
PAGE_ATTEMPTS = 3
PAGE_RETRY_S = 1.0
# A sweep while operations are in progress reads from the oldest one's start time, less this much (the API's
# clock and ours may differ), instead of the whole lookback; a full sweep still runs every discovery.interval.
NARROW_SLACK = 60.0
# The end of a start-time window lies this far in the future, so clock skew cannot hide a new operation.
WINDOW_END_SLACK = 300.0


class SweepFailed(Exception):
    def __init__(self, code: str, message: str = "") -> None:
        super().__init__(f"{code}: {message}" if message else code)
        self.code = code
        self.message = message


PageT = TypeVar("PageT", covariant=True)


class PageAnswer(Protocol[PageT]):
    """What reading a page needs of one answer: its error, or its page (PageOutcome, AuditOutcome)."""

    @property
    def code(self) -> str | None: ...

    @property
    def message(self) -> str: ...

    @property
    def page(self) -> PageT | None: ...


async def read_page(
    ask: Callable[[], Awaitable[PageAnswer[PageT]]],
    is_throttling: Callable[[str | None], bool],
    bucket: TokenBucket,
    sleep: Callable[[float], Awaitable[None]],
) -> PageT:
    """One page of any sweep: asked again when throttled (PAGE_ATTEMPTS times, each inside `bucket`, which
    slows down on every throttled answer); raises SweepFailed when it still fails or holds no page."""
    for attempt in range(1, PAGE_ATTEMPTS + 1):
        outcome = await ask()
        if outcome.code is None or not is_throttling(outcome.code):
            break
        # Another client spends the same quota: slow down and ask again within the sweep, so one
        # throttled page does not cost the whole sweep (and an interval) with it.
        bucket.throttled()
        if attempt < PAGE_ATTEMPTS:
            await sleep(PAGE_RETRY_S * attempt)
    if outcome.code is not None:
        raise SweepFailed(outcome.code, outcome.message)
    if outcome.page is None:
        raise SweepFailed(INTERNAL_ERROR, "no page in a successful answer")
    return outcome.page


async def credentials_now(credentials: CredentialProvider) -> Credentials:
    """The account's keys for a sweep's request; SweepFailed when its credential source has none."""
    try:
        return await credentials.get()
    except CredentialsError as exc:
        raise SweepFailed(CREDENTIALS_UNAVAILABLE, str(exc)) from None


# Where a sweep's findings go: (account, product, region, what was listed, when the sweep started, how long
# the sweeps speak for the statuses they listed); returns how many new operations were left out at the cap.
FoundCallback = Callable[[str, Product, str, list[Listed], float, float], Awaitable[int]]
# Where a page's status of a watched task goes: (key, what was listed, when the sweep started, how long the
# sweeps speak for it): the scheduler, which records it as a poll and holds back the task's status request.
SpeakCallback = Callable[[Key, Listed, float, float], None]


class Room(Protocol):
    """What a sweep asks of the discovered tasks so far: whether it may read on (MAX_TASKS)."""

    def room(self) -> int:
        """How many more tasks can be taken."""

    def takes(self, account: str, product: Product, region: str, task_id: str) -> bool:
        """Whether this operation would be a new task (not known, not forgotten, in this shard)."""


class _Unbounded:
    def room(self) -> int:
        return MAX_TASKS

    def takes(self, account: str, product: Product, region: str, task_id: str) -> bool:
        return False


class Sweeper:
    """Sweeps one product's list API in one region for one account, every interval, until cancelled."""

    def __init__(
        self,
        product: Product,
        region: str,
        lane: Lane,
        bucket: TokenBucket,
        client: ApiClient,
        credentials: CredentialProvider,
        metrics: Metrics,
        config: DiscoveryConfig,
        found: FoundCallback,
        wall_clock: Callable[[], float] = time.time,
        clock: Callable[[], float] = time.monotonic,
        room: Room | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        busy_interval: float | None = None,
    ) -> None:
        if product.listing is None:
            raise ValueError(f"{product.name} has no list API")
        self.product, self.listing, self.region, self.lane = product, product.listing, region, lane
        self.endpoint, self.bucket, self.client, self.credentials = lane.endpoint, bucket, client, credentials
        self.metrics, self.config = metrics, config
        self._found = found
        self._wall_clock, self._clock = wall_clock, clock
        self._room: Room = room or _Unbounded()
        self._sleep = sleep
        self._failures = 0
        self._reported = FirstOfKind()
        self.capped_logged = False
        # Sweep cadence follows the work: every busy_interval (polling.interval) while an operation the list
        # speaks for is in progress, else every discovery.interval.
        self.busy_interval = busy_interval if self.listing.speaks_status else None
        self.busy = False  # the last sweep listed an operation in progress, in the status API's words
        self._oldest_busy: float | None = None  # the start time of the oldest of those (None: unknown)
        self._last_full = -math.inf  # when the last sweep of the whole lookback began (monotonic)
        self._duration = 0.0

    @property
    def labels(self) -> tuple[str, str, str]:
        return (self.lane.account, self.product.name, self.region)

    @property
    def cadence(self) -> float:
        """Seconds from one sweep's start to the next one's."""
        if self.busy and self.busy_interval is not None:
            return min(self.busy_interval, self.config.interval)
        return self.config.interval

    @property
    def speaks_for(self) -> float:
        """How long a status read on a page holds back the task's own status request: two sweeps and a
        second, so one failed or slow sweep does not leave the task unwatched, and a task no sweep lists
        any more is polled by ID again soon after."""
        return 2 * (self.cadence + self._duration) + 1.0

    async def run(self) -> None:
        while True:
            started = self._clock()
            await self.sweep()
            await asyncio.sleep(max(0.0, started + self.cadence - self._clock()))

    async def sweep(self) -> bool:
        """One sweep; True when every page was read. Never raises but for cancellation."""
        health = self.metrics.discovery
        started, now = self._clock(), self._wall_clock()
        health.sweeps.labels(*self.labels).inc()
        items: dict[str, Listed] = {}
        full = self._full_sweep_due(started)
        try:
            capped = await self._pages(now, items, full)
        except SweepFailed as exc:
            await self._failed(exc.code, exc.message, items, now)
            return False
        except Exception as exc:
            # Whatever a sweep runs into, it is counted and tried again at the next interval.
            self._internal_error(exc)
            await self._failed(INTERNAL_ERROR, type(exc).__name__, items, now)
            return False
        finally:
            self._duration = self._clock() - started
            health.duration.labels(*self.labels).set(self._duration)
        self._learn(items.values(), full, started)
        listed = list(items.values())
        left_out = await self._found(
            self.lane.account, self.product, self.region, listed, now, self.speaks_for
        )
        if capped or left_out:
            self._capped(len(items))
        if self._failures:
            log.info("discovery sweep recovered", extra={"fields": self._fields()})
        self._failures = 0
        health.failures.labels(*self.labels).set(0)
        health.last_success.labels(*self.labels).set(self._wall_clock())
        return True

    def _full_sweep_due(self, started: float) -> bool:
        return self._oldest_busy is None or not self.busy or started - self._last_full >= self.config.interval

    def _learn(self, items: Iterable[Listed], full: bool, started: float) -> None:
        """What a complete sweep says of the next ones: whether work is in progress, and since when."""
        final = self.product.final_statuses
        starts = [i.start_time for i in items if i.status is not None and i.status not in final]
        self.busy = bool(starts)
        self._oldest_busy = None if not starts or None in starts else min(s for s in starts if s is not None)
        if full:
            self._last_full = started

    async def _pages(self, now: float, items: dict[str, Listed], full: bool = True) -> bool:
        """Reads the sweep's pages into `items`; True when it stopped at the discovered-task cap. A sweep
        that is not `full` reads only from the oldest operation in progress on (it needs no other pages)."""
        lookback = self.config.lookback
        if self.listing.max_lookback is not None:
            lookback = min(lookback, self.listing.max_lookback)
        begin, end = now - lookback, now + WINDOW_END_SLACK
        horizon = begin
        if not full and self._oldest_busy is not None:
            begin = max(begin, self._oldest_busy - NARROW_SLACK)
        first = await self._page(0, begin, end)
        room = self._room.room()
        new = self._collect(first, items, horizon)
        if new > room:
            return True
        # The first page tells how many there are; the rest are read concurrently, each inside the bucket.
        offsets = range(PAGE_SIZE, min(first.total, MAX_PAGES * PAGE_SIZE), PAGE_SIZE)
        if first.total > MAX_PAGES * PAGE_SIZE:
            log.warning(
                "discovery lists more operations than one sweep reads; the rest are not watched",
                extra={"fields": {**self._fields(), "listed": first.total, "read": MAX_PAGES * PAGE_SIZE}},
            )
        slots = asyncio.Semaphore(MAX_CONCURRENT_PAGES)

        async def read(offset: int) -> Page:
            async with slots:
                return await self._page(offset, begin, end)

        pages = [asyncio.ensure_future(read(offset)) for offset in offsets]
        try:
            for page in asyncio.as_completed(pages):
                new += self._collect(await page, items, horizon)
                if new > room:
                    return True  # the pages still out are cancelled below
        finally:
            for pending in pages:
                pending.cancel()
            await asyncio.gather(*pages, return_exceptions=True)
        return False

    def _collect(self, page: Page, items: dict[str, Listed], horizon: float) -> int:
        """Adds a page's operations to `items`; returns how many of them would be new tasks. An operation
        that ended before `horizon` (the lookback's start) is left out: a list without time bounds (DTS's
        jobs) shows every one ever run, and those are history, not news."""
        new = 0
        final = self.product.final_statuses
        for listed in page.items:
            ended = listed.end_time is not None and listed.end_time < horizon
            if ended and (listed.status is None or listed.status in final):
                continue
            if listed.task_id not in items and self._room.takes(
                self.lane.account, self.product, self.region, listed.task_id
            ):
                new += 1
            items[listed.task_id] = listed
        return new

    def _capped(self, read: int) -> None:
        self.metrics.discovery.capped.labels(*self.labels).inc()
        fields = {**self._fields(), "operations_read": read}
        message = (
            "discovery reached its cap of discovered tasks; the sweep stopped and the rest are not watched"
        )
        # Once per sweeper: a full exporter stays full sweep after sweep, and the counter says so.
        log.log(logging.DEBUG if self.capped_logged else logging.WARNING, message, extra={"fields": fields})
        self.capped_logged = True

    async def _page(self, offset: int, begin: float, end: float) -> Page:
        return await read_page(
            lambda: self._ask(offset, begin, end), self.product.is_throttling, self.bucket, self._sleep
        )

    async def _credentials_now(self) -> Credentials:
        return await credentials_now(self.credentials)

    async def _ask(self, offset: int, begin: float, end: float) -> PageOutcome:
        credentials = await self._credentials_now()
        payload = self.listing.payload(offset, begin, end)
        # Let through after the last await before the send, so the bucket counts the page when it leaves.
        ticket = await self.bucket.acquire()
        outcome = await self.client.list_page(
            self.product, self.endpoint, self.region, credentials, payload, ticket
        )
        self.metrics.observe_api(self.lane, self.product, outcome)
        return outcome

    async def _failed(self, code: str, message: str, items: dict[str, Listed], now: float) -> None:
        self._failures += 1
        health = self.metrics.discovery
        health.failed(self.labels, code)
        health.failures.labels(*self.labels).set(self._failures)
        # Pages read before the failure still name real operations: watch them now, not an interval later.
        if items:
            listed = list(items.values())
            await self._found(self.lane.account, self.product, self.region, listed, now, self.speaks_for)
        level = logging.WARNING if self._failures == 1 else logging.DEBUG
        log.log(
            level,
            "discovery sweep failed; tried again at the next interval",
            extra={
                "fields": {**self._fields(), "code": code, "message": message, "failures": self._failures}
            },
        )

    def _internal_error(self, exc: Exception) -> None:
        if self._reported.first(exc):
            log.error("unexpected error in a discovery sweep", exc_info=exc, extra={"fields": self._fields()})

    def _fields(self) -> dict[str, object]:
        account, product, region = self.labels
        return {"account": account, "product": product, "cloud_region": region, "action": self.listing.action}
