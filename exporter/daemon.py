"""The running exporter: task store, metrics, HTTP session, schedulers and registered tasks, as one unit.

It owns every piece of state that lives across polls, so reloads and run-time registrations are changes to
one object: the watched set is always `config tasks + registered tasks`, filtered to this replica's shard.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from exporter import __version__
from exporter.client import ApiClient
from exporter.config import Config, ConfigError, WatchedTask, load_config
from exporter.credentials import CredentialProvider, CredentialsError, open_provider
from exporter.metrics import Metrics
from exporter.ratelimit import TokenBucket
from exporter.registry import TaskRegistry
from exporter.scheduler import Scheduler, ServiceScheduler
from exporter.services import SERVICES
from exporter.sharding import Shard
from exporter.state import TaskState, TaskStore

log = logging.getLogger(__name__)

API_TOKEN_ENV = "TENCENTCLOUD_EXPORTER_API_TOKEN"
_LOOP_PROBE_INTERVAL = 0.01


class ReloadError(Exception):
    pass


@dataclass(frozen=True)
class Options:
    """Settings from the command line: fixed for the life of the process."""

    config_path: Path | None = None  # None: nothing to reload from (demo mode)
    shard: Shard = field(default_factory=Shard)
    state_file: Path | None = None
    retention: float = 86400.0
    api_token_file: Path | None = None


def read_api_token(options: Options, env: Mapping[str, str]) -> str | None:
    """The task API's bearer token from its file or the environment; None leaves the API off."""
    if options.api_token_file is not None:
        try:
            token = options.api_token_file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ReloadError(f"{options.api_token_file}: cannot read the API token file: {exc}") from None
        if not token:
            raise ReloadError(f"{options.api_token_file}: the API token file is empty")
        return token
    return env.get(API_TOKEN_ENV, "").strip() or None


class Daemon:
    def __init__(
        self,
        config: Config,
        credentials: CredentialProvider,
        options: Options | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.config = config
        self._config_keys = {t.key for t in config.tasks}
        self.credentials = credentials
        self.options = options or Options()
        self.env = os.environ if env is None else env
        self.api_token = read_api_token(self.options, self.env)
        self.store = TaskStore()
        self.registry = TaskRegistry(self.options.state_file)
        self.metrics = Metrics(self._rate_limits(config), self.options.shard)
        self.metrics.set_polling(config.polling)
        self.metrics.reloaded(True, time.time())
        self._session: aiohttp.ClientSession | None = None
        self._scheduler: Scheduler | None = None
        self._background: list[asyncio.Task[None]] = []
        self._reload_lock = asyncio.Lock()

    def _rate_limits(self, config: Config) -> dict[str, float]:
        return {name: api.rate_limit / self.options.shard.count for name, api in config.apis.items()}

    async def start(self) -> None:
        # A corrupt state file stops the start (StateFileError) rather than being overwritten with nothing.
        self.registry.load()
        # The per-task semaphores bound concurrency; the connector must not add a lower, hidden cap.
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0, keepalive_timeout=30),
            trust_env=False,  # proxies come from ApiClient._proxy, read once
            headers={"User-Agent": f"tencentcloud-task-exporter/{__version__}"},
        )
        client = ApiClient(self._session, self.config.polling.timeout)
        rates = self._rate_limits(self.config)
        services = {
            spec.name: ServiceScheduler(
                spec,
                self.config.apis[spec.name].endpoint,
                TokenBucket(rates[spec.name]),
                client,
                self.credentials,
                self.store,
                self.metrics,
                self.config.polling,
            )
            for spec in SERVICES
        }
        self._scheduler = Scheduler(services)
        self._sync(spread=True)
        self._scheduler.start()
        self._background = [
            asyncio.create_task(self._sweep_registered(), name="retention"),
            asyncio.create_task(self._probe_loop(), name="loop-probe"),
        ]
        log.info(
            "polling started",
            extra={
                "fields": {
                    "tasks": len(self.store),
                    "registered": len(self.registry),
                    "shard": f"{self.options.shard.index}/{self.options.shard.count}",
                }
            },
        )

    async def stop(self) -> None:
        for task in self._background:
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        if self._scheduler is not None:
            await self._scheduler.stop()
        try:
            await self.registry.save()
        except OSError as exc:
            log.error("could not save registered tasks", extra={"fields": {"error": str(exc)}})
        if self._session is not None:
            await self._session.close()

    @property
    def ready(self) -> bool:
        return self._scheduler is not None and self._scheduler.running

    def render(self, openmetrics: bool) -> bytes:
        return self.metrics.render(self.store, openmetrics)

    # ---- the watched set

    def watched(self) -> dict[tuple[str, str, str], WatchedTask]:
        shard = self.options.shard
        tasks = {r.task.key: r.task for r in self.registry}
        tasks.update({t.key: t for t in self.config.tasks})  # the config file's labels win
        return {k: t for k, t in tasks.items() if shard.owns(t.service, t.task_id)}

    def source(self, key: tuple[str, str, str]) -> str:
        return "config" if key in self._config_keys else "api"

    def _sync(self, spread: bool) -> None:
        if self._scheduler is not None:
            self._scheduler.sync(self.watched().values(), spread)
        self.metrics.set_watched(self.store.count_by_service())

    async def register(self, task: WatchedTask) -> bool:
        """Adds a run-time task, persisted before this returns; True when it is new."""
        new = self.registry.add(task)
        self._sync(spread=False)
        await self.registry.save()
        log.info("task registered", extra={"fields": _fields(task, new=new)})
        return new

    async def unregister(self, key: tuple[str, str, str]) -> bool:
        if not self.registry.remove(key):
            return False
        self._sync(spread=False)
        await self.registry.save()
        log.info("task unregistered", extra={"fields": _key_fields(key)})
        return True

    async def _sweep_registered(self) -> None:
        """Forgets registered tasks that have been final for longer than the retention."""
        period = min(60.0, max(0.5, self.options.retention / 4))
        while True:
            await asyncio.sleep(period)
            changed = False
            for registration in self.registry:
                state = self.store.get(registration.task.key)
                if state is not None:
                    changed |= self.registry.mark_final(registration.task.key, _final_since(state))
            expired = self.registry.expired(time.time(), self.options.retention)
            for key in expired:
                self.registry.remove(key)
                log.info(
                    "finished registered task forgotten after retention",
                    extra={"fields": _key_fields(key)},
                )
            if expired:
                self._sync(spread=False)
            if changed or expired:
                try:
                    await self.registry.save()
                except OSError as exc:
                    # Kept in memory and marked unsaved: the next sweep or registration writes it again.
                    log.error("could not save registered tasks", extra={"fields": {"error": str(exc)}})

    async def _probe_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            started = loop.time()
            await asyncio.sleep(_LOOP_PROBE_INTERVAL)
            self.metrics.loop_lag.observe(max(0.0, loop.time() - started - _LOOP_PROBE_INTERVAL))

    # ---- reload

    async def reload(self) -> None:
        """Loads the config file again; on any problem the running config stays and ReloadError says why."""
        async with self._reload_lock:
            try:
                await self._reload()
            except ReloadError as exc:
                self.metrics.reloaded(False, time.time())
                log.error(
                    "config reload failed; keeping the running config", extra={"fields": {"error": str(exc)}}
                )
                raise
            self.metrics.reloaded(True, time.time())

    async def _reload(self) -> None:
        path = self.options.config_path
        if path is None:
            raise ReloadError("no config file to reload (demo mode)")
        try:
            config = await asyncio.to_thread(load_config, path, self.env)
        except ConfigError as exc:
            raise ReloadError(str(exc)) from None
        api_token = read_api_token(self.options, self.env)
        credentials, old_credentials = self.credentials, None
        if config.credentials != self.config.credentials:
            try:
                credentials = await open_provider(config, self.env)
            except CredentialsError as exc:
                raise ReloadError(str(exc)) from None
            old_credentials = self.credentials
        # Nothing below can fail: the new config is applied whole or not at all.
        self.config, self.credentials, self.api_token = config, credentials, api_token
        self._config_keys = {t.key for t in config.tasks}
        rates = self._rate_limits(config)
        if self._scheduler is not None:
            for name, scheduler in self._scheduler.services.items():
                scheduler.endpoint = config.apis[name].endpoint
                scheduler.polling = config.polling
                scheduler.credentials = credentials
                if scheduler.bucket.max_rate != rates[name]:
                    scheduler.bucket.set_rate(rates[name])
                scheduler.client.set_timeout(config.polling.timeout)
        self.metrics.set_rate_limits(rates)
        self.metrics.set_polling(config.polling)
        self._sync(spread=False)
        if old_credentials is not None:
            await old_credentials.close()
        log.info("config reloaded", extra={"fields": {"tasks": len(self.store), "source": str(path)}})


def _final_since(state: TaskState) -> float | None:
    return state.status_since if state.final else None


def _fields(task: WatchedTask, **extra: object) -> dict[str, object]:
    return {"service": task.service, "region": task.region, "task_id": task.task_id, **extra}


def _key_fields(key: tuple[str, str, str]) -> dict[str, object]:
    return dict(zip(("service", "region", "task_id"), key, strict=True))
