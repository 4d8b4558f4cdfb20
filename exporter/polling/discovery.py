"""Discovery: finds the operations nobody named by sweeping each product's list API, per region, and the
audit trail for the products whose task ID is a call's RequestId.

Sweepers (sweeper.py) page through each (account, product, region); AuditSweepers (auditsweep.py) through
each account's audit trail, for every such product and region at once. What a sweep finds goes to Discovery,
which keeps every discovered task with what the list said of it (at most MAX_TASKS of them), hands new ones
to the daemon to watch, passes the statuses a list reports to the scheduler (`speak`), and forgets tasks
`retention` after they reached a final state. A failed sweep (throttled, auth, transport, a page missing) is
counted and tried again at the next interval; the tasks found before stay.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import itertools
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from exporter.catalogue.listapis import Listed
from exporter.catalogue.products import BY_NAME, Product
from exporter.config.lanes import Lane
from exporter.config.parser import DISCOVERED, ApiConfig, DiscoveryConfig, Key, WatchedTask
from exporter.credentials.chain import CredentialProvider
from exporter.exposition.metrics import Metrics
from exporter.polling.auditsweep import AuditSweeper, audit_sweeps
from exporter.polling.client import ApiClient
from exporter.polling.instancesweep import instance_sweep
from exporter.polling.ratelimit import SWEEP_BACKLOG_SECONDS, TokenBucket
from exporter.polling.sweeper import MAX_TASKS, SpeakCallback, Sweeper

__all__ = ["MAX_TASKS", "Discovery", "Found", "Sweeper"]

log = logging.getLogger("exporter.discovery")


# Listed operations are set up in batches of ABSORB_BATCH; once ABSORB_SLICE_S of work has gone by, the loop
# is given ABSORB_YIELD_S before the next batch. A status request takes several loop turns to leave (the
# lane's worker chooses it, its poll takes the token, aiohttp writes it), so one turn between batches
# (sleep(0)) let at most one request out per batch: setting up a first sweep's 5,000 operations held status
# polling at 0.88 of the quota in the second after the sweep (python -m bench --discovery). A short sleep
# lets every ready request out, whatever it needs.
ABSORB_BATCH = 25
ABSORB_SLICE_S = 0.004
ABSORB_YIELD_S = 0.001


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
        self._audits: list[AuditSweeper] = []
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
                    # Every replica sweeps; each keeps only its shard's tasks.
                    rate = (api.list_rate_limit or 1.0) / shards
                    bucket = self._bucket(lane, rate)
                    kind, steps = instance_sweep(listing, lane, functools.partial(self._bucket, rate=rate))
                    self._sweepers.append(
                        kind(
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
                            **steps,
                        )
                    )
        self._audits = self._audit_sweepers(config, client, credentials, shards)
        self.metrics.discovery.configure(config.interval, self.swept)
        self._workers = [
            asyncio.create_task(s.run(), name=f"discover-{'-'.join(s.labels)}") for s in self._sweepers
        ] + [asyncio.create_task(a.run(), name=f"discover-audit-{a.spec.account}") for a in self._audits]

    def _audit_sweepers(
        self,
        config: DiscoveryConfig,
        client: ApiClient,
        credentials: Mapping[str, CredentialProvider],
        shards: int,
    ) -> list[AuditSweeper]:
        """The audit trail's sweepers (auditsweep.py): one per account, in a bucket of CloudAudit's own."""
        sweepers = []
        for sweep, rate in audit_sweeps(config, shards):
            bucket = self._bucket(sweep.lane, rate)
            found, wall_clock = self._take, self._wall_clock
            sweepers.append(
                AuditSweeper(
                    sweep,
                    bucket,
                    client,
                    credentials[sweep.account],
                    self.metrics,
                    config,
                    found,
                    self,
                    wall_clock,
                )
            )
        return sweepers

    def _bucket(self, lane: Lane, rate: float) -> TokenBucket:
        bucket = self._buckets.get(lane)
        if bucket is None:
            # A sweep's pause between sweeps is not repaid as a burst (ratelimit.SWEEP_BACKLOG_SECONDS).
            bucket = self._buckets[lane] = TokenBucket(rate, backlog=SWEEP_BACKLOG_SECONDS)
            self.metrics.lane_opened(lane, bucket)
        return bucket

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
        return {s.labels for s in self._sweepers} | {t for a in self._audits for t in a.triples}

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
        left_out = new = 0
        slice_began = time.perf_counter()
        for start in range(0, len(items), ABSORB_BATCH):
            if start and time.perf_counter() - slice_began >= ABSORB_SLICE_S:
                await asyncio.sleep(ABSORB_YIELD_S)
                slice_began = time.perf_counter()
            batch = items[start : start + ABSORB_BATCH]
            out, taken = self._absorb(account, product, region, batch, now, speaks_for)
            left_out, new = left_out + out, new + taken
        self.count()
        if new:
            fields = {"account": account, "product": product.name, "cloud_region": region, "new": new}
            log.info("tasks discovered", extra={"fields": fields})
        return left_out

    def _absorb(
        self,
        account: str,
        product: Product,
        region: str,
        items: list[Listed],
        now: float,
        speaks_for: float = 0.0,
    ) -> tuple[int, int]:
        """Takes a batch of listed operations; returns how many new ones were left out at the cap, and how
        many were taken. The ones whose status the list gave are then recorded as polled (`speak`)."""
        config = self.config
        if config is None:
            return 0, 0
        batch: list[tuple[WatchedTask, Listed]] = []
        unchanged: list[tuple[WatchedTask, Listed]] = []
        left_out = taken = 0
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
                taken += 1
            elif found.task == task and found.listed == listed:
                # Listed as last time: already watched with these facts (a sweep every polling.interval
                # lists thousands unchanged); only the list's word on the status is news (freshness).
                found.last_listed = now
                unchanged.append((task, listed))
                continue
            else:
                found.task, found.listed, found.last_listed = task, listed, now
            batch.append((task, listed))
        if batch:  # a sweep every polling.interval lists thousands unchanged: nothing to watch anew
            self._watch(batch)
        if self._speak is not None:
            for task, listed in itertools.chain(batch, unchanged):
                if listed.status is not None:
                    self._speak(task.key, listed, now, speaks_for)
        return left_out, taken

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
        self._sweepers, self._audits = [], []
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
