"""The sweep of a two-step list (`ListApi.instances`, catalogue/instancelists.py): the instances busy with a
task, then each busy instance's own task list, every step inside the token bucket of its own action (one per
account, action and endpoint, as Tencent counts quotas). A sweep costs 1 request per 100 busy instances plus
1 per busy instance (one page of its running tasks); a throttled page is asked again as Sweeper's are, and a
failed step fails the sweep, which is counted and tried again at the next interval.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from typing import Any

from exporter.catalogue.instancelists import InstanceList
from exporter.catalogue.listapis import PAGE_SIZE, ListApi, Listed, Page, within
from exporter.config.lanes import Lane
from exporter.polling.client import PageOutcome
from exporter.polling.ratelimit import TokenBucket
from exporter.polling.sweeper import MAX_CONCURRENT_PAGES, MAX_PAGES, Sweeper, read_page

__all__ = ["InstanceSweeper", "instance_sweep"]


class InstanceSweeper(Sweeper):
    """A Sweeper whose list is read per busy instance: `instance_bucket` and `instance_lane` are the first
    step's (the busy instances' list action), the Sweeper's own bucket and lane the task list's."""

    def __init__(self, *args: Any, instance_bucket: TokenBucket, instance_lane: Lane, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        instances = self.listing.instances
        if instances is None:
            raise ValueError(f"{self.product.name}'s list has no instance step")
        self.instances: InstanceList = instances
        self.instance_bucket, self.instance_lane = instance_bucket, instance_lane

    async def _pages(self, now: float, items: dict[str, Listed], full: bool = True) -> bool:
        """Reads the busy instances, then each one's tasks, into `items`; True when it stopped at the cap."""
        busy: dict[str, Listed] = {}
        first = await self._step(True, 0, None)
        busy.update((i.task_id, i) for i in first.items)
        for offset in range(PAGE_SIZE, min(first.total, MAX_PAGES * PAGE_SIZE), PAGE_SIZE):
            page = await self._step(True, offset, None)
            busy.update((i.task_id, i) for i in page.items)
        room = self._room.room()
        slots = asyncio.Semaphore(MAX_CONCURRENT_PAGES)

        async def tasks_of(instance: Listed) -> tuple[Listed, Page]:
            async with slots:
                return instance, await self._step(False, 0, instance.task_id)

        reads = [asyncio.ensure_future(tasks_of(instance)) for instance in busy.values()]
        new = 0
        try:
            for read in asyncio.as_completed(reads):
                instance, page = await read
                listed = (within(instance, task) for task in page.items)
                tasks = tuple(task for task in listed if task is not None)
                # Only running tasks are listed (Status filter 1): none ended before the lookback.
                new += self._collect(Page(tasks, len(tasks), page.size), items, -math.inf)
                if new > room:
                    return True  # the reads still out are cancelled below
        finally:
            for pending in reads:
                pending.cancel()
            await asyncio.gather(*reads, return_exceptions=True)
        return False

    async def _step(self, instances: bool, offset: int, instance: str | None) -> Page:
        """One page of either step, asked again when throttled (as Sweeper._page)."""
        bucket = self.instance_bucket if instances else self.bucket
        return await read_page(
            lambda: self._ask_step(instances, offset, instance, bucket),
            self.product.is_throttling,
            bucket,
            self._sleep,
        )

    async def _ask_step(
        self, instances: bool, offset: int, instance: str | None, bucket: TokenBucket
    ) -> PageOutcome:
        credentials = await self._credentials_now()
        if instances:
            payload = self.instances.payload(offset, PAGE_SIZE)
            lane = self.instance_lane
        else:
            payload = {**self.listing.payload(offset, 0.0, 0.0), self.instances.param: instance}
            lane = self.lane
        ticket = await bucket.acquire()
        outcome = await self.client.list_page(
            self.product, self.endpoint, self.region, credentials, payload, ticket, instances=instances
        )
        self.metrics.observe_api(lane, self.product, outcome)
        return outcome


def instance_sweep(
    listing: ListApi, lane: Lane, bucket: Callable[[Lane], TokenBucket]
) -> tuple[type[Sweeper], dict[str, Any]]:
    """The sweeper class for a list and the arguments it needs beyond Sweeper's: for a two-step list, the
    first step's lane (its own action at the same endpoint) and its bucket, from `bucket`."""
    if listing.instances is None:
        return Sweeper, {}
    first = Lane(lane.account, lane.product, listing.instances.action, lane.endpoint)
    return InstanceSweeper, {"instance_bucket": bucket(first), "instance_lane": first}
