"""An AuditSweeper reads the audit trail (CloudAudit's DescribeEvents) for one account every
discovery.interval: the calls that started a task of a product whose task ID is the call's RequestId (CLB,
VPC), in every discovery region at once, so nobody has to name those tasks.

One sweep an account covers every such product: the request names every product's event names (ORed by the
API), and each event is given to its product by name (`exporter.catalogue.auditlists`). Its requests go
through one bucket per (account, CloudAudit endpoint), the API's one quota, which no product's list or status
requests touch. Pages follow one another by NextToken until ListOver, at most MAX_AUDIT_PAGES a sweep.

Its health is reported under every (account, product, region) it covers, as a list sweep's is: a failed page
counts as a failed sweep of each of them. The audit trail records a call some time after it was made; that
delay is not measured here: an operation shows up one sweep after the trail has it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass

from exporter.catalogue.auditlists import AUDIT_TRAIL, AuditPage, AuditTrail
from exporter.catalogue.listapis import Listed
from exporter.catalogue.products import BY_NAME, Product, audit_owners
from exporter.config.auditconfig import AuditConfig
from exporter.config.lanes import Lane
from exporter.config.parser import DiscoveryConfig
from exporter.credentials.chain import CredentialProvider
from exporter.exposition.metrics import Metrics
from exporter.log import FirstOfKind
from exporter.polling.client import INTERNAL_ERROR, INVALID_RESPONSE, ApiClient, AuditOutcome
from exporter.polling.ratelimit import TokenBucket
from exporter.polling.sweeper import FoundCallback, Room, SweepFailed, credentials_now, read_page

log = logging.getLogger("exporter.discovery")

# A sweep reads at most this many pages (10,000 audited calls of the lookback); the rest are not read, loudly.
MAX_AUDIT_PAGES = 200


@dataclass(frozen=True)
class AuditSweep:
    """What one account's sweep covers: its products and regions, and how to reach the trail."""

    account: str
    products: tuple[Product, ...]
    regions: tuple[str, ...]
    lane: Lane
    audit: AuditConfig

    @property
    def triples(self) -> list[tuple[str, str, str]]:
        """The (account, product, region) series its health is reported under."""
        return [(self.account, p.name, r) for p in self.products for r in self.regions]


class AuditSweeper:
    """Sweeps the audit trail for one account, every interval, until cancelled."""

    def __init__(
        self,
        sweep: AuditSweep,
        bucket: TokenBucket,
        client: ApiClient,
        credentials: CredentialProvider,
        metrics: Metrics,
        config: DiscoveryConfig,
        found: FoundCallback,
        room: Room,
        wall_clock: Callable[[], float] = time.time,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        trail: AuditTrail = AUDIT_TRAIL,
    ) -> None:
        self.spec, self.bucket, self.client, self.credentials = sweep, bucket, client, credentials
        self.metrics, self.config, self.trail = metrics, config, trail
        self._found, self._room = found, room
        self._wall_clock, self._clock, self._sleep = wall_clock, clock, sleep
        self._owners = audit_owners(sweep.products)
        self._names = tuple(sorted(self._owners))
        self._failures = 0
        self._reported = FirstOfKind()
        self.capped_logged = False
        self.pages_read = 0  # by the last sweep

    @property
    def triples(self) -> list[tuple[str, str, str]]:
        return self.spec.triples

    async def run(self) -> None:
        while True:
            started = self._clock()
            await self.sweep()
            await asyncio.sleep(max(0.0, started + self.config.interval - self._clock()))

    async def sweep(self) -> bool:
        """One sweep; True when every page was read. Never raises but for cancellation."""
        health = self.metrics.discovery
        started, now = self._clock(), self._wall_clock()
        for labels in self.triples:
            health.sweeps.labels(*labels).inc()
        found: dict[tuple[str, str], dict[str, Listed]] = {
            (p.name, r): {} for p in self.spec.products for r in self.spec.regions
        }
        try:
            capped = await self._pages(now, found)
        except SweepFailed as exc:
            await self._failed(exc.code, exc.message, found, now)
            return False
        except Exception as exc:
            # Whatever a sweep runs into, it is counted and tried again at the next interval.
            if self._reported.first(exc):
                log.error(
                    "unexpected error in an audit sweep", exc_info=exc, extra={"fields": self._fields()}
                )
            await self._failed(INTERNAL_ERROR, type(exc).__name__, found, now)
            return False
        finally:
            for labels in self.triples:
                health.duration.labels(*labels).set(self._clock() - started)
        left_out = await self._deliver(found, now)
        if capped or left_out:
            for labels in self.triples:
                health.capped.labels(*labels).inc()
            level = logging.DEBUG if self.capped_logged else logging.WARNING
            log.log(
                level,
                "discovery reached its cap of discovered tasks; the audit sweep stopped",
                extra={"fields": self._fields()},
            )
            self.capped_logged = True
        if self._failures:
            log.info("audit sweep recovered", extra={"fields": self._fields()})
        self._failures = 0
        for labels in self.triples:
            health.failures.labels(*labels).set(0)
            health.last_success.labels(*labels).set(self._wall_clock())
        return True

    async def _pages(self, now: float, found: Mapping[tuple[str, str], dict[str, Listed]]) -> bool:
        """Reads the sweep's pages into `found`; True when it stopped at the discovered-task cap."""
        begin, end = self.trail.window(now, self.config.lookback)
        token: int | None = None
        tokens: set[int] = set()
        room, new = self._room.room(), 0
        self.pages_read = 0
        for _ in range(MAX_AUDIT_PAGES):
            page = await self._page(begin, end, token)
            self.pages_read += 1
            new += self._collect(page, found)
            if new > room:
                return True
            if page.list_over or page.next_token is None:
                return False
            if page.next_token in tokens:
                # A token answered twice would page forever: the answer is broken, the sweep fails.
                raise SweepFailed(INVALID_RESPONSE, f"NextToken {page.next_token} came back twice")
            tokens.add(page.next_token)
            token = page.next_token
        log.warning(
            "the audit trail holds more calls than one sweep reads; the rest are not watched",
            extra={"fields": {**self._fields(), "pages": MAX_AUDIT_PAGES}},
        )
        return False

    def _collect(self, page: AuditPage, found: Mapping[tuple[str, str], dict[str, Listed]]) -> int:
        """Adds a page's operations of the swept products and regions; returns how many would be new."""
        new = 0
        for item in page.items:
            listed = found.get((item.product, item.region))
            if listed is None:
                continue  # a region not swept
            if item.listed.task_id not in listed and self._room.takes(
                self.spec.account, BY_NAME[item.product], item.region, item.listed.task_id
            ):
                new += 1
            listed[item.listed.task_id] = item.listed
        return new

    async def _page(self, begin: int, end: int, token: int | None) -> AuditPage:
        return await read_page(
            lambda: self._ask(begin, end, token), self.trail.is_throttling, self.bucket, self._sleep
        )

    async def _ask(self, begin: int, end: int, token: int | None) -> AuditOutcome:
        credentials = await credentials_now(self.credentials)
        payload = self.trail.payload(begin, end, self._names, token)
        # Let through after the last await before the send, so the bucket counts the page when it leaves.
        ticket = await self.bucket.acquire()
        outcome = await self.client.audit_page(
            self.trail,
            self.spec.lane.endpoint,
            self.spec.audit.region,
            credentials,
            payload,
            self._owners,
            ticket,
        )
        self.metrics.observe_api(self.spec.lane, self.trail, outcome)
        return outcome

    async def _deliver(self, found: Mapping[tuple[str, str], dict[str, Listed]], now: float) -> int:
        """Hands each (product, region)'s operations to discovery; returns how many were left out at the cap.
        The audit trail says no status, so a listed operation speaks for none (0)."""
        left_out = 0
        for (product, region), listed in found.items():
            left_out += await self._found(
                self.spec.account, BY_NAME[product], region, list(listed.values()), now, 0.0
            )
        return left_out

    async def _failed(
        self, code: str, message: str, found: Mapping[tuple[str, str], dict[str, Listed]], now: float
    ) -> None:
        self._failures += 1
        health = self.metrics.discovery
        for labels in self.triples:
            health.failed(labels, code)
            health.failures.labels(*labels).set(self._failures)
        # Pages read before the failure still name real operations: watch them now, not an interval later.
        if any(found.values()):
            await self._deliver(found, now)
        log.log(
            logging.WARNING if self._failures == 1 else logging.DEBUG,
            "audit sweep failed; tried again at the next interval",
            extra={
                "fields": {**self._fields(), "code": code, "message": message, "failures": self._failures}
            },
        )

    def _fields(self) -> dict[str, object]:
        return {
            "account": self.spec.account,
            "products": ",".join(p.name for p in self.spec.products),
            "cloud_regions": ",".join(self.spec.regions),
            "action": self.trail.action,
        }


def audit_sweeps(config: DiscoveryConfig, shards: int) -> Iterable[tuple[AuditSweep, float]]:
    """One sweep per account over the configured products that the audit trail lists, in every discovery
    region, with its bucket's rate (each replica of a sharded exporter sweeps with its share)."""
    products = tuple(BY_NAME[name] for name in config.products if BY_NAME[name].audit_events)
    if not products:
        return
    audit = config.cloudaudit
    for account in config.accounts:
        lane = Lane(account, AUDIT_TRAIL.service, AUDIT_TRAIL.action, audit.endpoint)
        yield AuditSweep(account, products, config.regions, lane, audit), audit.rate_limit / shards
