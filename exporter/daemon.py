"""The running exporter: task store, metrics, HTTP session and scheduler, started and stopped together."""

from __future__ import annotations

import aiohttp

from exporter import __version__
from exporter.client import ApiClient
from exporter.config import Config
from exporter.credentials import CredentialProvider
from exporter.metrics import Metrics
from exporter.ratelimit import TokenBucket
from exporter.scheduler import Scheduler, ServiceScheduler
from exporter.services import SERVICES
from exporter.state import TaskStore


class Daemon:
    def __init__(self, config: Config, credentials: CredentialProvider) -> None:
        self.config = config
        self.credentials = credentials
        self.store = TaskStore()
        self.metrics = Metrics({name: api.rate_limit for name, api in config.apis.items()})
        self._session: aiohttp.ClientSession | None = None
        self._scheduler: Scheduler | None = None

    async def start(self) -> None:
        # The per-task semaphores bound concurrency; the connector must not add a lower, hidden cap.
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0, keepalive_timeout=30),
            trust_env=True,
            headers={"User-Agent": f"tencentcloud-task-exporter/{__version__}"},
        )
        client = ApiClient(self._session, self.config.polling.timeout)
        buckets: dict[tuple[str, str], TokenBucket] = {}
        services = {}
        for spec in SERVICES:
            api = self.config.apis[spec.name]
            bucket = buckets.setdefault((self.credentials.identity, spec.name), TokenBucket(api.rate_limit))
            services[spec.name] = ServiceScheduler(
                spec,
                api.endpoint,
                bucket,
                client,
                self.credentials,
                self.store,
                self.metrics,
                self.config.polling,
            )
        self._scheduler = Scheduler(services)
        self._scheduler.add(self.config.tasks)
        self.metrics.set_watched(self.store.count_by_service())
        self._scheduler.start()

    async def stop(self) -> None:
        if self._scheduler is not None:
            await self._scheduler.stop()
        if self._session is not None:
            await self._session.close()

    @property
    def ready(self) -> bool:
        return self._scheduler is not None and self._scheduler.running

    def render(self, openmetrics: bool) -> bytes:
        return self.metrics.render(self.store, openmetrics)
