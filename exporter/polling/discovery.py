"""Discovery: finds the operations nobody named by sweeping each product's list API, per region.

A Sweeper pages through one (account, product, region) every interval inside the list API's own token bucket
(one per account and endpoint, as Tencent counts the quota), so a sweep never takes a status-polling token and
polling never waits for a sweep. What a sweep finds goes to
Discovery, which keeps every discovered task with what the list said of it, hands new ones to the daemon to
watch, and forgets them `retention` after they reached a final state. A failed sweep (throttled, auth,
transport, a page missing) is counted and tried again at the next interval; the tasks found before stay.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Protocol

from exporter.catalogue.listapis import PAGE_SIZE, Listed, Page
from exporter.catalogue.products import BY_NAME, Product
from exporter.config.lanes import Lane
from exporter.config.parser import DISCOVERED, ApiConfig, DiscoveryConfig, Key, WatchedTask
from exporter.credentials.chain import CredentialProvider, CredentialsError
from exporter.exposition.metrics import Metrics
from exporter.log import FirstOfKind
from exporter.polling.client import CREDENTIALS_UNAVAILABLE, INTERNAL_ERROR, ApiClient, PageOutcome
from exporter.polling.ratelimit import TokenBucket

log = logging.getLogger("exporter.discovery")

# Pages of one sweep in flight at once: enough to spend a list quota at loopback-to-Tencent latencies.
MAX_CONCURRENT_PAGES = 16
# A sweep reads at most this many pages (100,000 operations): an account listing more is cut short, loudly.
MAX_PAGES = 1000
# Listed operations set up between two turns of the event loop (each is rendered once when new).
ABSORB_BATCH = 200
# Discovered tasks kept at most, every account, product and region together: what one sweep may bring in
# is bounded by pages, this bounds what all sweeps together keep (memory, /metrics). A sweep that would go
# beyond it stops reading pages; the operations beyond it are not watched (counted, logged once).
MAX_TASKS = 100_000
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
        if not full and self._oldest_busy is not None:
            begin = max(begin, self._oldest_busy - NARROW_SLACK)
        first = await self._page(0, begin, end)
        room = self._room.room()
        new = self._collect(first, items)
        if new >= room:
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
                new += self._collect(await page, items)
                if new >= room:
                    return True  # the pages still out are cancelled below
        finally:
            for pending in pages:
                pending.cancel()
            await asyncio.gather(*pages, return_exceptions=True)
        return False

    def _collect(self, page: Page, items: dict[str, Listed]) -> int:
        """Adds a page's operations to `items`; returns how many of them would be new tasks."""
        new = 0
        for listed in page.items:
            if listed.task_id not in items and self._room.takes(
                self.lane.account, self.product, self.region, listed.task_id
            ):
                new += 1
            items[listed.task_id] = listed
        return new

    def _capped(self, read: int) -> None:
        self.metrics.discovery.capped.labels(*self.labels).inc()
        fields = {**self._fields(), "max_tasks": MAX_TASKS, "operations_read": read}
        message = (
            "discovery reached its cap of discovered tasks; the sweep stopped and the rest are not watched"
        )
        # Once per sweeper: a full exporter stays full sweep after sweep, and the counter says so.
        log.log(logging.DEBUG if self.capped_logged else logging.WARNING, message, extra={"fields": fields})
        self.capped_logged = True

    async def _page(self, offset: int, begin: float, end: float) -> Page:
        for attempt in range(1, PAGE_ATTEMPTS + 1):
            outcome = await self._ask(offset, begin, end)
            if outcome.code is None or not self.product.is_throttling(outcome.code):
                break
            # Another client spends the same quota: slow down and ask again within the sweep, so one
            # throttled page does not cost the whole sweep (and an interval) with it.
            self.bucket.throttled()
            if attempt < PAGE_ATTEMPTS:
                await self._sleep(PAGE_RETRY_S * attempt)
        if outcome.code is not None:
            raise SweepFailed(outcome.code, outcome.message)
        if outcome.page is None:
            raise SweepFailed(INTERNAL_ERROR, "no page in a successful answer")
        return outcome.page

    async def _ask(self, offset: int, begin: float, end: float) -> PageOutcome:
        try:
            credentials = await self.credentials.get()
        except CredentialsError as exc:
            raise SweepFailed(CREDENTIALS_UNAVAILABLE, str(exc)) from None
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


@dataclass
class Found:
    """One discovered task: how it is watched, what the list last said of it, and when."""

    task: WatchedTask
    listed: Listed
    last_listed: float  # unix time of the sweep that last listed it


class Discovery:
    """Every discovered task, and the sweepers that find them; owned by the daemon, which watches them.

    `watch` hears of the tasks a sweep listed, in batches, each with what the list said of it;
    `owns` says whether this replica's shard polls a task (the others are neither kept nor counted).
    """

    def __init__(
        self,
        watch: Callable[[list[tuple[WatchedTask, Listed]]], None],
        owns: Callable[[WatchedTask], bool],
        metrics: Metrics,
        wall_clock: Callable[[], float] = time.time,
        max_tasks: int = MAX_TASKS,
    ) -> None:
        self._watch, self._owns, self.metrics = watch, owns, metrics
        self._wall_clock = wall_clock
        self.max_tasks = max_tasks
        self.config: DiscoveryConfig | None = None
        self.found: dict[Key, Found] = {}
        # Keys forgotten after retention, so the list (which may still show them) does not bring them back.
        self._gone: dict[Key, float] = {}
        self._sweepers: list[Sweeper] = []
        self._buckets: dict[Lane, TokenBucket] = {}
        self._workers: list[asyncio.Task[None]] = []
        self._speak: SpeakCallback | None = None

    # ---- sweeping

    def start(
        self,
        config: DiscoveryConfig,
        apis: Mapping[str, ApiConfig],
        client: ApiClient,
        credentials: Mapping[str, CredentialProvider],
        shards: int,
        speak: SpeakCallback | None = None,
        busy_interval: float | None = None,
    ) -> None:
        """Sweeps `config.regions` for `config.products` as each of `config.accounts` from now on, each list
        API inside a bucket per (account, endpoint): regions reached through one host share it. Where a list
        reports statuses, each listed task's goes to `speak`, and a region with work in progress is swept
        every `busy_interval` (polling.interval)."""
        self.config = config
        self._speak = speak
        self._sweepers = []
        for account in config.accounts:
            for name in config.products:
                product, api = BY_NAME[name], apis[name]
                listing = product.listing
                if listing is None:
                    continue
                for region in config.regions:
                    lane = Lane(account, name, listing.action, api.endpoint_for(region))
                    bucket = self._buckets.get(lane)
                    if bucket is None:
                        # Every replica sweeps; each keeps only its shard's tasks.
                        bucket = self._buckets[lane] = TokenBucket((api.list_rate_limit or 1.0) / shards)
                        self.metrics.lane_opened(lane, bucket)
                    self._sweepers.append(
                        Sweeper(
                            product,
                            region,
                            lane,
                            bucket,
                            client,
                            credentials[account],
                            self.metrics,
                            config,
                            self._take,
                            self._wall_clock,
                            room=self,
                            busy_interval=busy_interval,
                        )
                    )
        self.metrics.discovery.configure(config.interval, (s.labels for s in self._sweepers))
        self._workers = [
            asyncio.create_task(s.run(), name=f"discover-{'-'.join(s.labels)}") for s in self._sweepers
        ]

    async def stop(self) -> None:
        for worker in self._workers:
            worker.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)
        self._workers = []
        for lane, bucket in self._buckets.items():
            self.metrics.lane_closed(lane, bucket)
        self._buckets = {}

    @property
    def swept(self) -> set[tuple[str, str, str]]:
        """The (account, product, region) triples swept."""
        return {s.labels for s in self._sweepers}

    @property
    def running(self) -> bool:
        return all(not w.done() for w in self._workers)

    # ---- the discovered tasks

    def room(self) -> int:
        return max(0, self.max_tasks - len(self.found))

    def takes(self, account: str, product: Product, region: str, task_id: str) -> bool:
        key = (product.name, region, task_id)
        if key in self.found or key in self._gone:
            return False
        return self._owns(WatchedTask(product.name, task_id, region, (), account, origin=DISCOVERED))

    async def _take(
        self,
        account: str,
        product: Product,
        region: str,
        items: list[Listed],
        now: float,
        speaks_for: float = 0.0,
    ) -> int:
        """What a sweep listed, taken in batches that let the event loop breathe between them: a first
        sweep of thousands of operations must not hold up status polling while they are set up. Returns how
        many new ones were left out at the cap."""
        left_out = 0
        for start in range(0, len(items), ABSORB_BATCH):
            if start:
                await asyncio.sleep(0)
            batch = items[start : start + ABSORB_BATCH]
            left_out += self._absorb(account, product, region, batch, now, speaks_for)
        self.count()
        return left_out

    def _absorb(
        self,
        account: str,
        product: Product,
        region: str,
        items: list[Listed],
        now: float,
        speaks_for: float = 0.0,
    ) -> int:
        """Takes a batch of listed operations; returns how many new ones were left out at the cap. The ones
        whose status the list gave are then recorded as polled (`speak`)."""
        config = self.config
        if config is None:
            return 0
        batch, left_out = [], 0
        for listed in items:
            key = (product.name, region, listed.task_id)
            if key in self._gone:
                continue
            tags = dict(listed.tags)
            labels = tuple((name, tags[name]) for name in config.tag_labels if tags.get(name))
            task = WatchedTask(product.name, listed.task_id, region, labels, account, origin=DISCOVERED)
            if not self._owns(task):
                continue
            found = self.found.get(key)
            if found is None and len(self.found) >= self.max_tasks:
                # The cap holds whatever a sweep brought in; the sweep says so (Sweeper._capped).
                left_out += 1
                continue
            if found is not None and found.task.account != account:
                # Sub-accounts of one main account list the same operations: the first account to find a
                # task keeps it, so its label, bucket and keys do not change from one sweep to the next.
                task = dataclasses.replace(task, account=found.task.account)
            if found is None:
                self.found[key] = Found(task, listed, now)
            else:
                found.task, found.listed, found.last_listed = task, listed, now
            batch.append((task, listed))
        self._watch(batch)
        if self._speak is not None:
            for task, listed in batch:
                if listed.status is not None:
                    self._speak(task.key, listed, now, speaks_for)
        return left_out

    def expire(
        self, now: float, final_since: Callable[[Key], float | None], known: Callable[[Key], bool]
    ) -> list[Key]:
        """Forgets tasks final for longer than the retention, and tasks the status API never knew that no
        sweep has listed for as long; returns their keys for the daemon to stop watching."""
        config = self.config
        if config is None:
            return []
        expired = []
        for key, found in self.found.items():
            since = final_since(key)
            if since is not None:
                gone = now - since >= config.retention
            else:
                gone = not known(key) and now - found.last_listed >= max(
                    config.retention, 3 * config.interval
                )
            if gone:
                expired.append(key)
        for key in expired:
            del self.found[key]
            self._gone[key] = now
        # A tombstone is needed only while the list may still show the task.
        horizon = config.lookback + 3 * config.interval
        for key in [k for k, at in self._gone.items() if now - at > horizon]:
            del self._gone[key]
        if expired:
            self.count()
        return expired

    def retain(self, swept: Iterable[tuple[str, str, str]]) -> list[Key]:
        """After stop(), before start() with new settings: forgets the tasks and series of (account,
        product, region) triples no longer swept; returns the keys of the tasks forgotten."""
        keep = set(swept)
        before = self.swept | {_triple(found) for found in self.found.values()}
        dropped = [key for key, found in self.found.items() if _triple(found) not in keep]
        for key in dropped:
            del self.found[key]
        self._sweepers = []
        for labels in before - keep:
            self.metrics.discovery.forget(labels)
        self.count()
        return dropped

    def count(self) -> None:
        counts = Counter(_triple(found) for found in self.found.values())
        for labels in self.swept | set(counts):
            self.metrics.discovery.tasks.labels(*labels).set(counts.get(labels, 0))


def _triple(found: Found) -> tuple[str, str, str]:
    """The (account, product, region) a discovered task was found in."""
    task = found.task
    return (task.account, task.product, task.region)
