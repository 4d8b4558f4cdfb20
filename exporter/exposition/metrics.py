"""The /metrics exposition: pre-rendered per-task families plus a small prometheus_client registry.

Per-task series (the bulk, one set per watched task) come from the lines each TaskState keeps ready; the few
per-API and per-exporter series live in an ordinary CollectorRegistry owned by this object (no global
registry, so tests and several apps in one process never share counters).
"""

from __future__ import annotations

import contextlib
import platform
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info, ProcessCollector
from prometheus_client import exposition as text_exposition
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.openmetrics import exposition as om_exposition
from prometheus_client.registry import Collector

from exporter import __version__, buildinfo
from exporter.catalogue.auditlists import AuditTrail
from exporter.catalogue.products import Phase, Product
from exporter.config.lanes import Lane
from exporter.config.parser import PollingConfig
from exporter.config.sharding import Shard
from exporter.exposition.families import POLLED, TASK_FAMILIES
from exporter.exposition.state import TaskState

# Spelled out: what we render is the classic 0.0.4 text format, whatever newer default the library has.
TEXT_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
OPENMETRICS_CONTENT_TYPE = "application/openmetrics-text; version=1.0.0; charset=utf-8"

CHUNK_TASKS = 1000
# From seconds (a flow that is done by the second poll) to a week (large backups, migrations).
DURATION_BUCKETS = (
    *(1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0),
    *(3600.0, 7200.0, 14400.0, 28800.0, 43200.0, 86400.0, 172800.0, 345600.0, 604800.0),
)
DURATION_LABELS = ("account", "product", "cloud_region", "task_type", "phase")


# Every per-API series: one per token bucket (api_endpoint: host[:port], the unit Tencent counts quotas by).
API_LABELS = ("account", "product", "action", "api_endpoint")


class Bucket(Protocol):
    """What a scrape reads of a token bucket (polling.ratelimit.Bucket); a protocol, so exposition does
    not import the polling wing above it."""

    @property
    def max_rate(self) -> float: ...
    def current_rate(self) -> float: ...


class CallOutcome(Protocol):
    """What is counted of one API call (polling.client.Outcome, PageOutcome and AuditOutcome)."""

    @property
    def code(self) -> str | None: ...
    @property
    def duration(self) -> float: ...


class BucketCollector(Collector):
    """Each bucket's configured and current rate, read at scrape time (the current one moves on its own).

    Buckets of one Lane are summed: PostgreSQL's list and status requests spend one quota from two buckets.
    """

    def __init__(self) -> None:
        self._buckets: dict[Lane, list[Bucket]] = defaultdict(list)

    def track(self, lane: Lane, bucket: Bucket) -> None:
        self._buckets[lane].append(bucket)

    def untrack(self, lane: Lane, bucket: Bucket) -> None:
        buckets = self._buckets.get(lane, [])
        if bucket in buckets:
            buckets.remove(bucket)
        if not buckets:
            self._buckets.pop(lane, None)

    def collect(self) -> Iterator[Metric]:
        configured = GaugeMetricFamily(
            "tencentcloud_api_rate_limit_requests_per_second",
            "Request rate this exporter process keeps to, per token bucket: one per (account, product, "
            "action, endpoint), at the configured rate_limit / shard count.",
            labels=API_LABELS,
        )
        current = GaugeMetricFamily(
            "tencentcloud_api_current_rate_limit_requests_per_second",
            "Request rate the token bucket allows now: its rate limit, lowered after throttling "
            "(another client spending the same quota) and climbing back within seconds.",
            labels=API_LABELS,
        )
        for lane, buckets in sorted(self._buckets.items(), key=lambda item: item[0].labels):
            configured.add_metric(lane.labels, sum(b.max_rate for b in buckets))
            current.add_metric(lane.labels, sum(b.current_rate() for b in buckets))
        yield configured
        yield current


class Metrics:
    def __init__(self, shard: Shard | None = None) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        # process_* series (CPU, memory, open files, start time), as every exporter has.
        ProcessCollector(registry=self.registry)
        labels = API_LABELS
        self.api_requests = Counter(
            "tencentcloud_api_requests",
            f"Requests sent to the Tencent Cloud API. {POLLED}",
            labels,
            registry=self.registry,
        )
        self.api_errors = Counter(
            "tencentcloud_api_errors",
            f"Failed API requests by error code (Transport.* for failures without an API answer). {POLLED}",
            (*labels, "code"),
            registry=self.registry,
        )
        self.api_throttled = Counter(
            "tencentcloud_api_throttled_requests",
            "API requests rejected as too many (RequestLimitExceeded and its sub-codes, or the product's own "
            f"throttling codes); each also counts in tencentcloud_api_errors_total. {POLLED}",
            labels,
            registry=self.registry,
        )
        self.api_duration = Histogram(
            "tencentcloud_api_request_duration_seconds",
            f"Latency of Tencent Cloud API requests. {POLLED}",
            labels,
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
            registry=self.registry,
        )
        self.task_duration = Histogram(
            "tencentcloud_task_duration_seconds",
            "How long finished operations took, observed once per operation when a poll first sees it "
            "succeeded or failed: the API's end minus start time where the product's status or list API "
            "gives both, else the time from the first poll that saw it pending or running to the first that "
            "saw it final (none when first seen final without the API's times). task_type where the product "
            f"gives one. {POLLED}",
            DURATION_LABELS,
            buckets=DURATION_BUCKETS,
            registry=self.registry,
        )
        self.buckets = BucketCollector()
        self.registry.register(self.buckets)
        self.poll_interval = Gauge(
            "tencentcloud_exporter_poll_interval_seconds",
            "Configured polling interval by task state (in_progress, finished; 0 = not polled again).",
            ("state",),
            registry=self.registry,
        )
        self.reload_successful = Gauge(
            "tencentcloud_exporter_config_last_reload_successful",
            "Whether the last configuration reload attempt succeeded (1) or failed (0).",
            registry=self.registry,
        )
        self.reload_timestamp = Gauge(
            "tencentcloud_exporter_config_last_reload_success_timestamp_seconds",
            "Unix time of the last successful configuration load.",
            registry=self.registry,
        )
        self.loop_lag = Histogram(
            "tencentcloud_exporter_event_loop_lag_seconds",
            "How late a 10 ms timer on the exporter's event loop woke up: a stall shows here.",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0),
            registry=self.registry,
        )
        shard = shard or Shard()
        Gauge(
            "tencentcloud_exporter_shard_index",
            "Index of the shard of watched tasks this replica polls (--shard.index).",
            registry=self.registry,
        ).set(shard.index)
        Gauge(
            # Not `..._shard_count`: promtool's lint reserves `_count` for histograms and summaries. Named
            # like kube-state-metrics' kube_state_metrics_total_shards.
            "tencentcloud_exporter_total_shards",
            "Number of replicas the watched tasks are partitioned across (--shard.count).",
            registry=self.registry,
        ).set(shard.count)
        self.watched = Gauge(
            "tencentcloud_exporter_watched_tasks",
            "Number of tasks the exporter watches.",
            ("account", "product"),
            registry=self.registry,
        )
        build = buildinfo.current()
        Info(
            "tencentcloud_exporter_build",
            "Build information of the exporter: version, VCS revision and branch (unknown when neither the "
            "image build nor a git checkout says), Python version.",
            registry=self.registry,
        ).info(
            {
                "version": __version__,
                "revision": build.revision,
                "branch": build.branch,
                "python_version": platform.python_version(),
            }
        )
        self.discovery = DiscoveryMetrics(self.registry)

    def observe_duration(self, state: TaskState, phase: Phase, seconds: float) -> None:
        """One finished operation's duration (TaskStore's on_duration)."""
        task = state.task
        labels = (task.account, task.product, task.region, state.task_type or "", str(phase))
        self.task_duration.labels(*labels).observe(seconds)

    def lane_opened(self, lane: Lane, bucket: Bucket) -> None:
        """A token bucket in use from now on: its rates are exported, and its request series exist at zero
        from the start, so rate() and dashboards work before the first error."""
        self.buckets.track(lane, bucket)
        self.api_requests.labels(*lane.labels)
        self.api_throttled.labels(*lane.labels)
        self.api_duration.labels(*lane.labels)

    def lane_closed(self, lane: Lane, bucket: Bucket) -> None:
        """The bucket is no longer used; its request counters stay (a counter does not go back)."""
        self.buckets.untrack(lane, bucket)

    def set_polling(self, polling: PollingConfig) -> None:
        self.poll_interval.labels("in_progress").set(polling.interval)
        self.poll_interval.labels("finished").set(polling.finished_interval)

    def reloaded(self, success: bool, now: float) -> None:
        self.reload_successful.set(1 if success else 0)
        if success:
            self.reload_timestamp.set(now)

    def observe_api(self, lane: Lane, product: Product | AuditTrail, outcome: CallOutcome) -> None:
        """One request through `lane`'s bucket to one of `product`'s actions (or the audit trail's)."""
        labels = lane.labels
        self.api_requests.labels(*labels).inc()
        self.api_duration.labels(*labels).observe(outcome.duration)
        if outcome.code is not None:
            self.api_errors.labels(*labels, outcome.code).inc()
            if product.is_throttling(outcome.code):
                self.api_throttled.labels(*labels).inc()

    def set_watched(self, counts: Mapping[tuple[str, str], int]) -> None:
        """Watched tasks per (account, product): exactly these series, so a removed account's go."""
        self.watched.clear()
        for (account, product), count in counts.items():
            self.watched.labels(account, product).set(count)

    def chunks(self, tasks: Sequence[TaskState], openmetrics: bool = False) -> Iterator[bytes]:
        """The exposition in pieces of at most CHUNK_TASKS tasks' lines, so a caller can yield between them.

        At 10,000 tasks the body is over 10 MB; building it in one piece held the event loop for tens of
        milliseconds (and copied it several times), while a chunk costs well under a millisecond.
        """
        for index, family in enumerate(TASK_FAMILIES):
            header = family.header(openmetrics).encode("utf-8")
            for start in range(0, len(tasks), CHUNK_TASKS):
                chunk = b"".join([state.lines[index] for state in tasks[start : start + CHUNK_TASKS]])
                if chunk:
                    yield header + chunk if header else chunk
                    header = b""
        generate = om_exposition.generate_latest if openmetrics else text_exposition.generate_latest
        registry_text: bytes = generate(self.registry)
        yield registry_text

    def render(self, tasks: Iterable[TaskState], openmetrics: bool = False) -> bytes:
        return b"".join(self.chunks(list(tasks), openmetrics))


class DiscoveryMetrics:
    """The health of discovery's sweeps per (product, cloud_region), on the exporter's registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        labels = ("account", "product", "cloud_region")
        self._codes: dict[tuple[str, str, str], set[str]] = defaultdict(set)
        self.sweeps = Counter(
            "tencentcloud_discovery_sweeps",
            "Sweeps of a product's list API in a region for an account (each pages through every operation "
            "it lists).",
            labels,
            registry=registry,
        )
        self.errors = Counter(
            "tencentcloud_discovery_errors",
            "Failed sweeps by the error code of the page that failed; retried at the next interval.",
            (*labels, "code"),
            registry=registry,
        )
        self.last_success = Gauge(
            "tencentcloud_discovery_last_success_timestamp_seconds",
            "Unix time the last complete sweep succeeded.",
            labels,
            registry=registry,
        )
        self.failures = Gauge(
            "tencentcloud_discovery_consecutive_failed_sweeps",
            "Sweeps that failed since the last one that succeeded.",
            labels,
            registry=registry,
        )
        self.tasks = Gauge(
            "tencentcloud_discovery_tasks",
            "Tasks the sweeps found that this exporter watches (those also in the config or registered too).",
            labels,
            registry=registry,
        )
        self.duration = Gauge(
            "tencentcloud_discovery_last_sweep_duration_seconds",
            "How long the last sweep took, every page included.",
            labels,
            registry=registry,
        )
        self.capped = Counter(
            "tencentcloud_discovery_capped_sweeps",
            "Sweeps that met the cap of discovered tasks (100,000): they stopped reading pages, and the "
            "operations beyond the cap are not watched.",
            labels,
            registry=registry,
        )
        self.interval = Gauge(
            "tencentcloud_discovery_interval_seconds",
            "Configured discovery interval: how often each product and region is swept (0: discovery off).",
            registry=registry,
        )

    def configure(self, interval: float, swept: Iterable[tuple[str, str, str]]) -> None:
        """Series for every swept (account, product, region) from the start, so alerts see them before a
        failure."""
        self.interval.set(interval)
        for labels in swept:
            self.sweeps.labels(*labels)
            self.failures.labels(*labels)
            self.tasks.labels(*labels)
            self.capped.labels(*labels)

    def failed(self, labels: tuple[str, str, str], code: str) -> None:
        self.errors.labels(*labels, code).inc()
        self._codes[labels].add(code)

    def forget(self, labels: tuple[str, str, str]) -> None:
        """An (account, product, region) no longer swept after a reload: its series go, not linger with
        old values."""
        for family in (self.sweeps, self.failures, self.tasks, self.duration, self.last_success, self.capped):
            with contextlib.suppress(KeyError):
                family.remove(*labels)
        for code in self._codes.pop(labels, set()):
            with contextlib.suppress(KeyError):
                self.errors.remove(*labels, code)
