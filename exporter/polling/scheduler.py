"""Decides which task to poll next, per token bucket, inside that bucket.

Tencent counts a quota per (sub-account, API, endpoint), so the Scheduler keeps one lane per (account,
product, endpoint) a watched task needs, each with its own bucket and worker; a task's requests carry its
account's keys and go to its region's endpoint only. Within a lane each task has its own due time. The worker
waits for the earliest due task, takes a token, then polls the most urgent task due at that moment: tasks
still in progress (or never polled) before tasks in a final state, earliest due first within each group.
Polls run concurrently, so API latency does not cap throughput; only the bucket does.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import math
import random
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import NamedTuple

from exporter.catalogue.listapis import Listed
from exporter.catalogue.products import BY_NAME, Observation, Product
from exporter.config.lanes import Lane
from exporter.config.parser import DEFAULT_ACCOUNT, ApiConfig, Key, PollingConfig, WatchedTask, key_fields
from exporter.credentials.chain import CredentialProvider, CredentialsError
from exporter.exposition.metrics import Metrics
from exporter.exposition.state import TaskState, TaskStore
from exporter.log import FirstOfKind
from exporter.polling.client import CREDENTIALS_UNAVAILABLE, INTERNAL_ERROR, ApiClient, Outcome
from exporter.polling.ratelimit import TokenBucket

log = logging.getLogger("exporter.scheduler")

# A list page saying what the task's last observation said refreshes its freshness (a render) at most this
# often, or every polling.interval when that is longer: sweeps every polling.interval list thousands of
# unchanged operations, and the staleness alert waits 300 s. At 10 s, 50,000 listed operations were all
# rendered again by every sweep (500 pages take 5 s or more, setting them up as long): 4 to 17 s of event
# loop a sweep, measured in process; at 60 s a fifth of the alert's wait, 830 renders a second at most.
FRESHNESS_FLOOR = 60.0


class _Entry(NamedTuple):
    """A heap entry, ordered by (due, seq): seq is unique, so key and generation are never compared. A tuple,
    so the heap compares in C: after a sweep hands over 50,000 operations, as many stale entries are popped
    in one go, and a dataclass's Python-level __lt__ made that hold the loop for 0.4 s."""

    due: float
    seq: int
    key: tuple[str, str, str]
    generation: int


class Slots:
    """A semaphore whose size can change while tasks wait on it: a reload may raise the rate or timeout."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self._freed = asyncio.Event()

    async def acquire(self) -> None:
        while self.used >= self.limit:
            self._freed.clear()
            await self._freed.wait()
        self.used += 1

    def release(self) -> None:
        self.used -= 1
        self._freed.set()

    def resize(self, limit: int) -> None:
        self.limit = limit
        self._freed.set()


async def describe_task(
    client: ApiClient,
    product: Product,
    endpoint: str,
    task: WatchedTask,
    credentials: CredentialProvider,
    bucket: TokenBucket,
    admitted: Callable[[], None] = lambda: None,
) -> Outcome:
    """One status request for `task` signed with the provider's current keys, let through by `bucket` after
    the last await before the send (so it counts when it leaves); `admitted` is called as it is let through.
    A provider that has no keys gives the Exporter.CredentialsUnavailable outcome, counted like any error and
    retried with backoff; it still spends a token, so failing tasks are paced like requests."""
    try:
        keys = await credentials.get()
    except CredentialsError as exc:
        await bucket.acquire()
        admitted()
        return Outcome(CREDENTIALS_UNAVAILABLE, message=str(exc))
    ticket = await bucket.acquire()
    admitted()
    return await client.describe(product, endpoint, task.region, keys, task.task_id, ticket)


def concurrency_for(rate: float, timeout: float) -> int:
    """Enough concurrent calls to spend the whole quota even if every call takes the full timeout."""
    return max(4, math.ceil(rate * timeout) + 1)


def backoff_delay(consecutive_errors: int, polling: PollingConfig, rand: Callable[[], float]) -> float:
    """Exponential in the number of consecutive errors, capped, with jitter so failures do not synchronise."""
    exponent = min(max(consecutive_errors - 1, 0), 30)
    ceiling = min(polling.max_backoff, polling.interval * 2.0**exponent)
    ceiling = max(ceiling, min(polling.interval, polling.max_backoff))
    return ceiling * (0.5 + 0.5 * rand())


class LaneScheduler:
    """Polls the watched tasks of one lane: one product's status API, as one account, at one endpoint.

    It schedules the tasks it is given; which tasks exist is the Scheduler's (and the store's) business."""

    def __init__(
        self,
        product: Product,
        endpoint: str,
        bucket: TokenBucket,
        client: ApiClient,
        credentials: CredentialProvider,
        store: TaskStore,
        metrics: Metrics,
        polling: PollingConfig,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        rand: Callable[[], float] = random.random,
        account: str = DEFAULT_ACCOUNT,
    ) -> None:
        self.product = product
        self.lane = Lane(account, product.name, product.action, endpoint)
        self.endpoint = endpoint
        self.bucket = bucket
        self.client = client
        self.credentials = credentials
        self.store = store
        self.metrics = metrics
        self.polling = polling
        self._clock = clock
        self._wall_clock = wall_clock
        self._rand = rand
        self._active: list[_Entry] = []  # in progress or never polled
        self._finished: list[_Entry] = []  # in a final state
        self._generation: dict[tuple[str, str, str], int] = {}
        # Tasks a list speaks for: (the generation of their held-back entry, when it is due).
        self._held: dict[Key, tuple[int, float]] = {}
        self._seq = itertools.count()
        self._wake = asyncio.Event()
        self._in_flight: set[asyncio.Task[None]] = set()
        self._slots = Slots(concurrency_for(bucket.max_rate, polling.timeout))
        self._reported = FirstOfKind()

    def reconfigure(self, rate: float, polling: PollingConfig, credentials: CredentialProvider) -> None:
        """New settings from a reload; they apply from the next request."""
        self.polling, self.credentials = polling, credentials
        if self.bucket.max_rate != rate:
            self.bucket.set_rate(rate)
        self._slots.resize(concurrency_for(rate, polling.timeout))

    @property
    def concurrency(self) -> int:
        return self._slots.limit

    def sync(self, tasks: Iterable[WatchedTask], spread: bool) -> None:
        """Makes `tasks` the lane's set: new ones are scheduled, gone ones dropped (their state is the
        caller's to remove), the rest keep their state and schedule (labels may change). With `spread`,
        first polls are spaced over one interval."""
        wanted = {t.key: t for t in tasks}
        for key in [k for k in self._generation if k not in wanted]:
            # Forgetting the key makes every heap entry for it stale, and an in-flight poll's result unwanted.
            del self._generation[key]
            self._held.pop(key, None)
        new = [t for key, t in wanted.items() if key not in self._generation]
        for task in wanted.values():
            self.store.add(task)
        now = self._clock()
        for index, task in enumerate(new):
            offset = self.polling.interval * index / len(new) if spread else 0.0
            self._schedule(self.store.add(task), now + offset)

    def add(self, task: WatchedTask) -> None:
        """Watches one more task (or takes its new labels), polled at once when it is new: O(log n)."""
        state = self.store.add(task)
        if task.key not in self._generation:
            self._schedule(state, self._clock())

    def discard(self, key: Key) -> None:
        """Stops polling the task here (its state is the caller's to remove, or to hand to another lane)."""
        self._generation.pop(key, None)
        self._held.pop(key, None)

    @property
    def watched(self) -> int:
        return len(self._generation)

    def _schedule(self, state: TaskState, due: float) -> None:
        key = state.task.key
        generation = self._generation.get(key, 0) + 1
        self._generation[key] = generation
        heap = self._finished if state.final else self._active
        heapq.heappush(heap, _Entry(due, next(self._seq), key, generation))
        self._wake.set()

    def _top(self, heap: list[_Entry]) -> _Entry | None:
        while heap and self._generation.get(heap[0].key) != heap[0].generation:
            heapq.heappop(heap)
        return heap[0] if heap else None

    def _next_due(self) -> float | None:
        dues = [e.due for e in (self._top(self._active), self._top(self._finished)) if e is not None]
        return min(dues) if dues else None

    def _pop_due(self) -> TaskState | None:
        now = self._clock()
        for heap in (self._active, self._finished):
            entry = self._top(heap)
            if entry is not None and entry.due <= now:
                heapq.heappop(heap)
                state = self.store.get(entry.key)
                if state is not None:
                    return state
        return None

    async def run(self) -> None:
        try:
            while True:
                await self._wait_until_due()
                await self._slots.acquire()
                # The task is chosen when the bucket can let a request through, so the most urgent one at
                # that moment goes; its poll takes the token itself right before sending (counted when it
                # leaves, ratelimit.py), and the next choice waits until it has.
                await self.bucket.ready()
                state = self._pop_due()
                if state is None:
                    self._slots.release()
                    continue
                # Marks the entry consumed so a reload cannot schedule the task twice while it is in flight.
                self._generation[state.task.key] += 1
                admitted = asyncio.get_running_loop().create_future()
                poll = asyncio.create_task(self._poll(state, admitted))
                self._in_flight.add(poll)
                poll.add_done_callback(self._in_flight.discard)
                await admitted
        finally:
            for poll in self._in_flight:
                poll.cancel()
            await asyncio.gather(*self._in_flight, return_exceptions=True)

    async def _wait_until_due(self) -> None:
        while True:
            self._wake.clear()
            due = self._next_due()
            if due is not None and due <= self._clock():
                return
            timeout = None if due is None else due - self._clock()
            try:
                # Not asyncio.wait_for: on Python 3.11 it swallows a cancellation that arrives as the wake-up
                # event is set, and the worker then outlives stop() (seen as a hang with several lanes).
                async with asyncio.timeout(timeout):
                    await self._wake.wait()
            except TimeoutError:
                return

    async def _poll(self, state: TaskState, admitted: asyncio.Future[None]) -> None:
        started = self._clock()

        def let_through() -> None:
            if not admitted.done():
                admitted.set_result(None)

        try:
            delay = await self._poll_once(state, let_through)
        except Exception as exc:
            # Whatever one poll runs into, the task is counted, and polled again after a backoff: an
            # exception must never end a task's polling silently.
            delay = self._internal_error(state, exc)
        finally:
            let_through()  # also when the poll ended before its request was let through
            self._slots.release()
        key = state.task.key
        # Not when the task left this lane meanwhile (unwatched, or moved to another account or endpoint).
        if delay is not None and key in self._generation and self.store.get(key) is state:
            self._schedule(state, started + delay)

    async def _poll_once(self, state: TaskState, admitted: Callable[[], None]) -> float | None:
        task = state.task
        outcome = await describe_task(
            self.client, self.product, self.endpoint, task, self.credentials, self.bucket, admitted
        )
        self.metrics.observe_api(self.lane, self.product, outcome)
        if self.store.get(task.key) is not state:
            return None  # removed while in flight
        return self._record(state, outcome)

    def _internal_error(self, state: TaskState, exc: Exception) -> float:
        fields = {**_task_fields(state.task), "code": INTERNAL_ERROR, "exception": type(exc).__name__}
        if self._reported.first(exc):
            log.error(
                "unexpected error while polling; the task is polled again",
                exc_info=exc,
                extra={"fields": fields},
            )
        else:
            log.debug("unexpected error while polling; the task is polled again", extra={"fields": fields})
        try:
            state.fail(INTERNAL_ERROR, self._wall_clock())
        except Exception:
            # Counting failed as well (the state cannot render): the task is still polled again.
            state.consecutive_errors += 1
        return backoff_delay(state.consecutive_errors, self.polling, self._rand)

    def listed(self, key: Key, listed: Listed, listed_at: float, speaks_for: float) -> None:
        """A sweep page's word on a watched task, in the status API's words: it counts as a poll, and the
        task's own status request waits `speaks_for` seconds (the next sweeps speak for it meanwhile). A
        final status from a page is confirmed by one status request at once (catalogue/listapis.py)."""
        state = self.store.get(key)
        if listed.status is None or state is None or key not in self._generation:
            return
        if state.last_success is not None and state.last_success > listed_at:
            return  # the status API answered after the page was read: its word is the newer one
        final = listed.status in self.product.final_statuses
        if state.final and not final:
            return  # a page lagging behind never takes back a final status
        was_final = state.final
        now, seen = self._wall_clock(), state.observation
        same = seen is not None and (seen.status, seen.progress, seen.end_time) == (
            listed.status,
            listed.progress,
            listed.end_time,
        )
        fresh = state.last_success is not None and now - state.last_success < max(
            self.polling.interval, FRESHNESS_FLOOR
        )
        if not (same and fresh):  # else nothing new: no render of thousands of unchanged tasks every sweep
            observation = Observation(
                listed.status,
                info=state.info,
                start_time=listed.start_time,
                end_time=listed.end_time,
                task_type=listed.task_type,
                instance_id=listed.instance_id,
                progress=listed.progress,
            )
            self._observed(state, observation, now)
        if not final:
            until = self._clock() + speaks_for
            generation, due = self._held.get(key, (-1, 0.0))
            if generation == self._generation.get(key) and due >= until - speaks_for / 2:
                return  # still held back long enough: no new heap entry for every task every sweep
            self._schedule(state, until)
            self._held[key] = (self._generation[key], until)
        elif not was_final:
            self._schedule(state, self._clock())  # the confirming request
        # A task already final keeps its schedule (finished_interval, or none).

    def _observed(self, state: TaskState, observation: Observation, now: float) -> None:
        """Records a status seen by a poll or on a list page, with its logs."""
        task = state.task
        fields = _task_fields(task)
        recovered, previous = state.consecutive_errors > 0, state.status
        if recovered:
            log.info("task poll recovered", extra={"fields": fields})
        if self.store.observe(state, observation, now):
            log.info(
                "task status changed",
                extra={"fields": {**fields, "from": previous or "", "to": state.status}},
            )
        if state.status and self.store.first_sighting(task.product, state.status):
            log.warning(
                "undocumented status; exported as its own state",
                extra={"fields": {"product": task.product, "status": state.status}},
            )

    def _record(self, state: TaskState, outcome: Outcome) -> float | None:
        """Updates the task from one poll; returns the delay to its next poll, None to stop polling it."""
        task, now = state.task, self._wall_clock()
        fields = _task_fields(task)
        if outcome.observation is not None:
            self._observed(state, outcome.observation, now)
            if not state.final:
                return self.polling.interval
            return self.polling.finished_interval or None
        code = outcome.code or "Transport.InvalidResponse"
        state.fail(code, now)
        if self.product.is_throttling(outcome.code):
            self.bucket.throttled()
        level = logging.WARNING if state.consecutive_errors == 1 else logging.DEBUG
        log.log(
            level,
            "task poll failed",
            extra={
                "fields": {
                    **fields,
                    "code": code,
                    "message": outcome.message,
                    "request_id": outcome.request_id,
                    "consecutive_errors": state.consecutive_errors,
                }
            },
        )
        delay = backoff_delay(state.consecutive_errors, self.polling, self._rand)
        if state.final and self.polling.finished_interval:
            delay = max(delay, self.polling.finished_interval)
        return delay


@dataclass(frozen=True)
class Plan:
    """What the lanes take from the config: where each product's requests go, how fast, and as whom."""

    apis: Mapping[str, ApiConfig]
    rates: Mapping[tuple[str, str], float]  # (account, product): each of its lanes' rate for this replica
    polling: PollingConfig
    credentials: Mapping[str, CredentialProvider]  # by account

    def lane(self, task: WatchedTask) -> Lane:
        product = BY_NAME[task.product]
        endpoint = self.apis[task.product].endpoint_for(task.region)
        return Lane(task.account, task.product, product.action, endpoint)


class Scheduler:
    """The lanes the watched tasks need, each started on first use, and which task is in which."""

    def __init__(self, client: ApiClient, store: TaskStore, metrics: Metrics, plan: Plan) -> None:
        self.client, self.store, self.metrics, self.plan = client, store, metrics, plan
        self.lanes: dict[Lane, LaneScheduler] = {}
        self._lane_of: dict[Key, Lane] = {}
        self._workers: dict[Lane, asyncio.Task[None]] = {}
        self._stopping: set[asyncio.Task[None]] = set()
        self._started = False

    def _open(self, lane: Lane) -> LaneScheduler:
        scheduler = self.lanes.get(lane)
        if scheduler is None:
            plan = self.plan
            scheduler = LaneScheduler(
                BY_NAME[lane.product],
                lane.endpoint,
                TokenBucket(plan.rates[lane.account, lane.product]),
                self.client,
                plan.credentials[lane.account],
                self.store,
                self.metrics,
                plan.polling,
                account=lane.account,
            )
            self.lanes[lane] = scheduler
            self.metrics.lane_opened(lane, scheduler.bucket)
            if self._started:
                self._start(lane, scheduler)
        return scheduler

    def _close(self, lane: Lane) -> None:
        scheduler = self.lanes.pop(lane)
        self.metrics.lane_closed(lane, scheduler.bucket)
        worker = self._workers.pop(lane, None)
        if worker is not None:
            worker.cancel()
            self._stopping.add(worker)
            worker.add_done_callback(self._stopping.discard)

    def reconfigure(self, plan: Plan) -> None:
        """New settings from a reload, for the lanes of accounts still configured; sync() then moves the
        tasks whose endpoint or account changed and closes the lanes left empty."""
        self.plan = plan
        for lane, scheduler in self.lanes.items():
            credentials = plan.credentials.get(lane.account)
            rate = plan.rates.get((lane.account, lane.product))
            if credentials is not None and rate is not None:
                scheduler.reconfigure(rate, plan.polling, credentials)

    def sync(self, tasks: Iterable[WatchedTask], spread: bool) -> None:
        """Makes `tasks` the watched set, each in its lane; tasks no longer watched lose their state."""
        by_lane: dict[Lane, list[WatchedTask]] = {}
        lane_of: dict[Key, Lane] = {}
        for task in tasks:
            lane = self.plan.lane(task)
            by_lane.setdefault(lane, []).append(task)
            lane_of[task.key] = lane
        for key in [k for k in self._lane_of if k not in lane_of]:
            self.store.remove(key)
        self._lane_of = lane_of
        for lane in [lane for lane in self.lanes if lane not in by_lane]:
            self._close(lane)
        for lane, group in by_lane.items():
            self._open(lane).sync(group, spread)

    def add(self, task: WatchedTask) -> None:
        """Watches one more task, or takes its new settings (which may move it to another lane)."""
        lane = self.plan.lane(task)
        old = self._lane_of.get(task.key)
        if old is not None and old != lane and old in self.lanes:
            self.lanes[old].discard(task.key)
        self._lane_of[task.key] = lane
        self._open(lane).add(task)

    def listed(self, key: Key, listed: Listed, listed_at: float, speaks_for: float) -> None:
        """A sweep page's word on a task, if it is watched (LaneScheduler.listed)."""
        lane = self._lane_of.get(key)
        scheduler = self.lanes.get(lane) if lane is not None else None
        if scheduler is not None:
            scheduler.listed(key, listed, listed_at, speaks_for)

    def discard(self, key: Key) -> None:
        lane = self._lane_of.pop(key, None)
        if lane is not None and lane in self.lanes:
            self.lanes[lane].discard(key)
        self.store.remove(key)

    def _start(self, lane: Lane, scheduler: LaneScheduler) -> None:
        name = f"poll-{lane.account}-{lane.product}-{lane.host}"
        worker = asyncio.create_task(scheduler.run(), name=name)
        worker.add_done_callback(_worker_ended)
        self._workers[lane] = worker

    def start(self) -> None:
        self._started = True
        for lane, scheduler in self.lanes.items():
            self._start(lane, scheduler)

    async def stop(self) -> None:
        self._started = False
        workers = [*self._workers.values(), *self._stopping]
        for worker in workers:
            worker.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
        self._workers = {}

    @property
    def running(self) -> bool:
        """Started, and every lane's worker alive: one that died shows as not ready (/-/ready answers 503)."""
        return self._started and all(not w.done() for w in self._workers.values())


def _task_fields(task: WatchedTask) -> dict[str, object]:
    """A polled task as log fields: its key, and whose keys polled it."""
    return {**key_fields(task.key), "account": task.account}


def _worker_ended(worker: asyncio.Task[None]) -> None:
    if not worker.cancelled() and worker.exception() is not None:
        log.critical(
            "a polling worker stopped; its API is no longer polled",
            exc_info=worker.exception(),
            extra={"fields": {"worker": worker.get_name()}},
        )
