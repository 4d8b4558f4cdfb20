"""The running exporter: task states, metrics, HTTP session, schedulers, the store and registered tasks.

It owns every resource it opens (each account's credential provider, HTTP session, store, schedulers,
discovery, background tasks) and closes each exactly once, in reverse order, whether start() finished, failed
half-way or was never called, and after any number of reloads. The watched set is always `config tasks +
registered tasks + discovered tasks` of the configured accounts, filtered to this replica's shard.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from exporter.catalogue.listapis import Listed
from exporter.catalogue.products import PRODUCTS
from exporter.config.parser import (
    API,
    CONFIG,
    DISCOVERED,
    Config,
    ConfigError,
    Key,
    WatchedTask,
    key_fields,
    load_config,
)
from exporter.config.sharding import Shard
from exporter.credentials.accounts import AccountProviders
from exporter.credentials.base import read_regular_file
from exporter.credentials.chain import CredentialProvider, CredentialsError
from exporter.daemon.credentialstate import CredentialsCollector
from exporter.exposition.metrics import Metrics
from exporter.exposition.state import TaskStore
from exporter.polling.client import ApiClient, api_session
from exporter.polling.discovery import Discovery
from exporter.polling.scheduler import Plan, Scheduler
from exporter.store.database import Registration, Store, StoreError

log = logging.getLogger("exporter.daemon")

API_TOKEN_ENV = "TENCENTCLOUD_EXPORTER_API_TOKEN"
_LOOP_PROBE_INTERVAL = 0.01
_MAX_API_TOKEN_BYTES = 64 * 1024  # a bearer token is a line of text


class ReloadError(Exception):
    pass


@dataclass(frozen=True)
class Options:
    """Settings from the command line: fixed for the life of the process."""

    config_path: Path | None = None  # None: nothing to reload from (demo mode)
    shard: Shard = field(default_factory=Shard)
    storage_path: Path | None = None  # None: nothing kept across restarts
    retention: float = 86400.0
    api_token_file: Path | None = None
    enable_lifecycle: bool = False  # POST /-/reload allowed
    legacy_state_file: Path | None = None  # a v1 JSON state file to migrate into the store


def read_api_token(options: Options, env: Mapping[str, str]) -> str | None:
    """The task API's bearer token from its file or the environment; None leaves the API off."""
    if options.api_token_file is not None:
        path = options.api_token_file
        try:
            data = read_regular_file(path, _MAX_API_TOKEN_BYTES)
            token = data.decode("utf-8").strip()
        except OSError as exc:
            reason = exc.strerror or type(exc).__name__
            raise ReloadError(f"{path}: cannot read the API token file: {reason}") from None
        except UnicodeDecodeError:
            raise ReloadError(f"{path}: the API token file is not UTF-8 text") from None
        if len(data) > _MAX_API_TOKEN_BYTES:
            raise ReloadError(f"{path}: the API token file is larger than {_MAX_API_TOKEN_BYTES // 1024} KiB")
        if not token:
            raise ReloadError(f"{options.api_token_file}: the API token file is empty")
        return token
    return env.get(API_TOKEN_ENV, "").strip() or None


class Daemon:
    def __init__(
        self,
        config: Config,
        credentials: CredentialProvider | None = None,
        options: Options | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        """`credentials`: one provider to adopt for every account (closed by stop()); None opens each
        account's own chain from the config at start."""
        self.config = config
        self._config_keys = {t.key for t in config.tasks}
        self.options = options or Options()
        self.env = os.environ if env is None else env
        self.accounts = AccountProviders(credentials, self.env)
        self.api_token = read_api_token(self.options, self.env)
        self.db = Store(self.options.storage_path, self.options.legacy_state_file, limits=config.limits)
        self.store = TaskStore()
        self._registered: dict[Key, Registration] = {}
        self.metrics = Metrics(self.options.shard)
        self.metrics.registry.register(CredentialsCollector(self.accounts, lambda: self.config.account_names))
        self.metrics.set_polling(config.polling)
        self.metrics.reloaded(True, time.time())
        self._scheduler: Scheduler | None = None
        self._client: ApiClient | None = None
        self.discovery = Discovery(
            self._watch_discovered, self._owns, self.metrics, max_tasks=config.limits.discovered_tasks
        )
        self._resources = contextlib.AsyncExitStack()
        self._reload_lock = asyncio.Lock()

    @property
    def credentials(self) -> Mapping[str, CredentialProvider]:
        """Each account's credential provider."""
        if not self.accounts.current:
            raise RuntimeError("the daemon has not started")
        return self.accounts.current

    def _rate_limits(self, config: Config) -> dict[tuple[str, str], float]:
        """Each (account, product) status lane's rate for this replica: its share of the quota, less what
        discovery spends of it where the list API is the status action itself (postgres)."""
        discovery = config.discovery
        rates = {}
        for account in config.account_names:
            swept = set(discovery.products) if discovery and account in discovery.accounts else set()
            for spec in PRODUCTS:
                api = config.apis[spec.name]
                rate = api.rate_limit
                if spec.listing_shares_quota and spec.name in swept and api.list_rate_limit is not None:
                    rate -= api.list_rate_limit
                rates[account, spec.name] = rate / self.options.shard.count
        return rates

    def _plan(self, config: Config) -> Plan:
        return Plan(config.apis, self._rate_limits(config), config.polling, self.credentials)

    def _count(self) -> None:
        self.metrics.set_watched(self.store.count_by_account(self.config.account_names))

    async def start(self) -> None:
        """Opens everything; on any failure, closes what was opened and raises (CredentialsError,
        StoreError: problems with the daemon's inputs)."""
        try:
            await self._start()
        except BaseException:
            await self.stop()
            raise

    async def _start(self) -> None:
        resources = self._resources
        # The provider in use when stopping is closed, whichever reload put it there (and one given to the
        # daemon, however early the start fails).
        resources.push_async_callback(self.accounts.close)
        # Closed after the schedulers stop (callbacks run in reverse), so the last statuses are written.
        resources.push_async_callback(self._close_store)
        # Credentials no retry can mend stop the start before anything is written (CredentialsError).
        self.accounts.check(self.config)
        # A corrupt store stops the start (StoreError) rather than being overwritten with nothing; so does
        # a store another daemon holds, before any credential source is asked for keys.
        await self.db.open()
        await self.accounts.open(self.config)
        self._registered = {r.task.key: r for r in self.db.registrations()}
        remembered = {key: (s.status, s.since) for key, s in self.db.statuses().items()}
        operations = {
            key: (o.in_progress_since, o.duration_observed_at is not None)
            for key, o in self.db.operations().items()
        }
        self.store = TaskStore(
            remembered,
            self.db.record_status,
            self._forget_status,
            operations=operations,
            on_operation=self.db.record_operation,
            on_duration=self.metrics.observe_duration,
            current_status_only=self.config.metrics.current_status_only,
        )
        session = api_session()
        resources.push_async_callback(session.close)
        self._client = ApiClient(session, self.config.polling.timeout)
        self._scheduler = Scheduler(self._client, self.store, self.metrics, self._plan(self.config))
        self._sync(spread=True)
        # Statuses kept for tasks no longer watched are not needed again; those of tasks discovery may find
        # again wait for it, so a discovered task keeps its status's first-seen time across a restart.
        self.db.forget_statuses(self.store.unclaimed(self._discoverable))
        self._scheduler.start()
        resources.push_async_callback(self._scheduler.stop)
        # Stopped before the schedulers (callbacks run in reverse): no sweep adds tasks to a stopped one.
        resources.push_async_callback(self.discovery.stop)
        self._start_discovery(self.config)
        background = (
            (self._sweep_registered(), "retention"),
            (self._expire_discovered(), "discovery-retention"),
            (self._probe_loop(), "loop-probe"),
        )
        for coroutine, name in background:
            task = asyncio.create_task(coroutine, name=name)
            resources.push_async_callback(_cancel, task)
        log.info(
            "polling started",
            extra={
                "fields": {
                    "tasks": len(self.store),
                    "registered": len(self._registered),
                    "shard": f"{self.options.shard.index}/{self.options.shard.count}",
                }
            },
        )

    async def stop(self) -> None:
        """Closes everything opened, once each; safe to call again, and before or after a failed start."""
        await self._resources.aclose()

    async def _close_store(self) -> None:
        try:
            await self.db.close()
        except StoreError as exc:
            # Stopping goes on; what could not be written is named in the message.
            log.error("could not write the store's last changes", extra={"fields": {"error": str(exc)}})

    def _forget_status(self, key: Key) -> None:
        self.db.forget_statuses([key])

    @property
    def ready(self) -> bool:
        return self.readiness()[0]

    def readiness(self) -> tuple[bool, list[str]]:
        """Whether the daemon is ready (/-/ready: 200 or 503), and a line for each account without keys.

        Ready once polling runs and at least one account has its keys: an account whose credentials fail
        is named here and on /metrics (tencentcloud_exporter_credentials_available) while the others are
        polled, and it alone does not take the replica out of service."""
        running = self._scheduler is not None and self._scheduler.running and self.discovery.running
        missing = self.accounts.unavailable() if running else {}
        lines = [f"account {name}: no credentials (retrying): {why}" for name, why in missing.items()]
        return running and len(missing) < len(self.accounts.current), lines

    # ---- the watched set

    def watched(self) -> dict[Key, WatchedTask]:
        tasks = {key: found.task for key, found in self.discovery.found.items()}
        tasks.update({key: r.task for key, r in self._registered.items()})
        tasks.update({t.key: t for t in self.config.tasks})  # the config file's labels win
        accounts = set(self.config.account_names)
        return {k: t for k, t in tasks.items() if self._owns(t) and t.account in accounts}

    def _owns(self, task: WatchedTask) -> bool:
        return self.options.shard.owns(task.product, task.task_id)

    def source(self, key: Key) -> str:
        """Which declaration of the task is in force now: the config file's, a registration, or discovery."""
        if key in self._config_keys:
            return CONFIG
        return API if key in self._registered else DISCOVERED

    def _discoverable(self, key: Key) -> bool:
        discovery = self.config.discovery
        return discovery is not None and key[0] in discovery.products and key[1] in discovery.regions

    def _wanted(self, key: Key) -> bool:
        return key in self._config_keys or key in self._registered or key in self.discovery.found

    def _sync(self, spread: bool) -> None:
        accounts = set(self.config.account_names)
        orphans = sorted({r.task.account for r in self._registered.values()} - accounts)
        if orphans:
            # Kept in the store, not polled: putting the account back into the config brings them back.
            waiting = sum(r.task.account in orphans for r in self._registered.values())
            log.warning(
                "registered tasks name accounts the config does not have; they are not polled",
                extra={"fields": {"accounts": ", ".join(orphans), "tasks": waiting}},
            )
        if self._scheduler is not None:
            self._scheduler.sync(self.watched().values(), spread)
        self._count()

    def can_register(self, key: Key) -> bool:
        """False when a new registration would go over limits.registered_tasks."""
        return key in self._registered or len(self._registered) < self.config.limits.registered_tasks

    async def register(self, task: WatchedTask) -> bool:
        """Adds a run-time task, written to the store before this returns; True when it is new.

        The task is watched from the moment it is accepted, even if the write fails (StoreError: the
        store retries it with the next write)."""
        old = self._registered.get(task.key)
        registration = Registration(
            task, old.registered_at if old else time.time(), old.final_since if old else None
        )
        self._registered[task.key] = registration
        owned = self.options.shard.owns(task.product, task.task_id)
        if self._scheduler is not None and owned and task.key not in self._config_keys:
            self._scheduler.add(task)  # O(log n): no re-sync of the whole watched set
            self._count()
        await self.db.put_registration(registration)
        log.info("task registered", extra={"fields": {**key_fields(task.key), "new": old is None}})
        return old is None

    async def unregister(self, key: Key) -> bool:
        if self._registered.pop(key, None) is None:
            return False
        self._unwatch(key)
        await self.db.delete_registrations([key])
        log.info("task unregistered", extra={"fields": key_fields(key)})
        return True

    def _unwatch(self, key: Key) -> None:
        if self._scheduler is not None and not self._wanted(key):
            self._scheduler.discard(key)
            self._count()

    # ---- discovery

    def _start_discovery(self, config: Config) -> None:
        if config.discovery is not None and self._client is not None:
            shards = self.options.shard.count
            # Where a list reports statuses, its pages speak for the tasks they list (polling/discovery.py).
            speak = self._scheduler.listed if self._scheduler is not None else None
            self.discovery.start(
                config.discovery,
                config.apis,
                self._client,
                self.credentials,
                shards,
                speak=speak,
                busy_interval=config.polling.interval,
            )

    async def _restart_discovery(self, config: Config) -> None:
        """New discovery settings (or credentials): sweepers start afresh; tasks of (product, region) pairs
        still swept stay, the others are no longer watched (unless declared otherwise)."""
        await self.discovery.stop()
        discovery = config.discovery
        swept = (
            {(a, p, r) for a in discovery.accounts for p in discovery.products for r in discovery.regions}
            if discovery
            else set()
        )
        for key in self.discovery.retain(swept):
            self._unwatch(key)
        if discovery is None:
            self.metrics.discovery.interval.set(0)
        self._start_discovery(config)

    def _watch_discovered(self, batch: list[tuple[WatchedTask, Listed]]) -> None:
        """Tasks a sweep listed: watched from now on (unless declared otherwise), with the list's facts."""
        if self._scheduler is None:
            return
        for task, listed in batch:
            state = self.store.get(task.key)
            if state is None:
                # A first sweep may find thousands: one line each is for debugging (Discovery logs one line
                # per sweep at info).
                if log.isEnabledFor(logging.DEBUG):
                    fields = {**key_fields(task.key), "instance_id": listed.instance_id}
                    log.debug("task discovered", extra={"fields": {**fields, "type": listed.task_type}})
                self.store.add(task, listed)  # rendered once, with the list's facts
            else:
                state.list(listed)
            if task.key not in self._config_keys and task.key not in self._registered:
                self._scheduler.add(task)  # O(log n); takes new tag labels of a task already watched
        self._count()

    def _final_since(self, key: Key) -> float | None:
        state = self.store.get(key)
        if state is None or not state.final:
            return None
        # The product's end time where known: a task discovered long after it ended is not kept longer.
        return state.end_time if state.end_time is not None else state.status_since

    def _known(self, key: Key) -> bool:
        state = self.store.get(key)
        return state is not None and state.status is not None

    async def _expire_discovered(self) -> None:
        """Forgets discovered tasks `discovery.retention` after they reached a final state."""
        while True:
            discovery = self.config.discovery
            retention = discovery.retention if discovery else 60.0
            await asyncio.sleep(min(60.0, max(0.5, retention / 4)))
            for key in self.discovery.expire(time.time(), self._final_since, self._known):
                self._unwatch(key)
                log.info("discovered task forgotten after retention", extra={"fields": key_fields(key)})

    async def _sweep_registered(self) -> None:
        """Forgets registered tasks that have been final for longer than the retention."""
        period = min(60.0, max(0.5, self.options.retention / 4))
        while True:
            await asyncio.sleep(period)
            changed, expired = [], []
            now = time.time()
            for key, registration in list(self._registered.items()):
                state = self.store.get(key)
                final_since = registration.final_since
                if state is not None:
                    final_since = state.status_since if state.final else None
                if final_since is not None and now - final_since >= self.options.retention:
                    expired.append(key)
                elif final_since != registration.final_since:
                    registration = Registration(registration.task, registration.registered_at, final_since)
                    self._registered[key] = registration
                    changed.append(registration)
            for key in expired:
                del self._registered[key]
                self._unwatch(key)
                log.info(
                    "finished registered task forgotten after retention", extra={"fields": key_fields(key)}
                )
            try:
                for registration in changed:
                    await self.db.put_registration(registration)
                if expired:
                    await self.db.delete_registrations(expired)
            except Exception as exc:
                # The store keeps what it could not write and tries again with its next batch.
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
        if self._scheduler is None:
            raise ReloadError("the exporter is not running")
        try:
            config = await asyncio.to_thread(load_config, path, self.env)
        except ConfigError as exc:
            raise ReloadError(str(exc)) from None
        api_token = read_api_token(self.options, self.env)
        try:
            providers = await self.accounts.prepare(config)
        except CredentialsError as exc:
            raise ReloadError(str(exc)) from None
        # Nothing below can fail: the new config is applied whole or not at all.
        old_config = self.config
        self.config, self.api_token = config, api_token
        retired = self.accounts.commit(config, providers)
        self.db.limits = config.limits
        self.discovery.max_tasks = config.limits.discovered_tasks
        self._config_keys = {t.key for t in config.tasks}
        self._scheduler.reconfigure(self._plan(config))
        if self._client is not None:
            self._client.set_timeout(config.polling.timeout)
        self.metrics.set_polling(config.polling)
        self.store.show_current_status_only(config.metrics.current_status_only)
        changed = (config.discovery, config.apis) != (old_config.discovery, old_config.apis)
        if changed or retired:
            await self._restart_discovery(config)
        self._sync(spread=False)
        await self.accounts.retire(retired)
        log.info("config reloaded", extra={"fields": {"tasks": len(self.store), "file": str(path)}})


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        pass
    except Exception:
        # Stopping goes on: every other resource still has to be closed.
        log.exception("background task failed", extra={"fields": {"task": task.get_name()}})
