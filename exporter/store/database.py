"""The exporter's run-time state on SQLite: registered tasks, and when each task's status was first seen.

One thread of the store owns its only connection: nothing touches SQLite on the event loop. Callers queue
operations; the thread takes everything queued so far and commits it in one transaction (group commit), so a
burst of registrations costs a few fsyncs instead of one each. An awaited write is committed (WAL,
synchronous=FULL) when it returns, so `kill -9` loses none. A batch that fails is kept and written again in
front of the next one, and at close: a failure is reported, never a reason to drop a change.

The file is untrusted input: every row is checked like a config watch entry when the store is opened, and
every write is checked the same way before it is queued, so the store never holds a row that stops a start.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import queue
import sqlite3
import threading
import time
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

from exporter.config.parser import Key, LimitsConfig
from exporter.config.validation import is_utf8, shown
from exporter.store.legacy import (
    SQLITE_HEADER,
    log_migration,
    read_legacy,
    remove_old_temporary_files,
)
from exporter.store.lock import StoreLock
from exporter.store.rows import (
    OperationTimes,
    Registration,
    StatusSince,
    StoreError,
    check_operation,
    check_registration,
    check_status,
    ident,
    json_object,
)
from exporter.store.schema import SCHEMA_VERSION, prepare

# The store's whole surface, rows and errors included, so callers import from one place.
__all__ = [
    "OBSERVED_KEPT",
    "SCHEMA_VERSION",
    "SQLITE_HEADER",
    "OperationTimes",
    "Registration",
    "StatusSince",
    "Store",
    "StoreError",
]

log = logging.getLogger("exporter.store")

_RETRY_FIRST, _RETRY_MAX = 0.5, 30.0  # seconds before a failed batch is tried again when nothing new comes

_PUT = (
    "INSERT OR REPLACE INTO registrations (product, region, task_id, labels, registered_at, final_since,"
    " account) VALUES (?, ?, ?, ?, ?, ?, ?)"
)
_DELETE = "DELETE FROM registrations WHERE product = ? AND region = ? AND task_id = ?"
_RECORD = "INSERT OR REPLACE INTO statuses VALUES (?, ?, ?, ?, ?)"
_FORGET = "DELETE FROM statuses WHERE product = ? AND region = ? AND task_id = ?"
_RECORD_OPERATION = "INSERT OR REPLACE INTO operations VALUES (?, ?, ?, ?, ?)"
# An operation whose duration was observed stays (a list API may show it again after its task was forgotten,
# or after a restart): only pruned once older than any list API looks back.
_FORGET_OPERATION = (
    "DELETE FROM operations WHERE product = ? AND region = ? AND task_id = ? AND duration_observed_at IS NULL"
)
_PRUNE_OPERATIONS = "DELETE FROM operations WHERE duration_observed_at < ?"
OBSERVED_KEPT = 200 * 86400.0  # seconds: beyond the longest list API lookback (180 days)


@dataclass(frozen=True)
class _Op:
    """One statement and its parameter rows, built (and checked) on the loop; the writer only runs it."""

    sql: str
    rows: tuple[tuple[str | float | None, ...], ...]


@dataclass(frozen=True)
class _Request:
    op: _Op | None = None
    future: asyncio.Future[None] | None = None  # settled once the batch holding `op` is committed or failed
    stop: bool = False


class Store:
    """Opened and closed once, from one event loop."""

    def __init__(
        self,
        path: Path | None,
        legacy_json: Path | None = None,
        *,
        limits: LimitsConfig | None = None,
        busy_timeout: float = 5.0,
    ) -> None:
        """`path` None keeps everything in memory. `limits` should be the config's: rows are checked against
        them. `busy_timeout`: how long a write waits while another process holds the file's write lock."""
        self.path = path
        self.legacy_json = legacy_json
        self.limits = limits
        self.busy_timeout = busy_timeout
        self.name = str(path) if path is not None else ":memory:"
        self.commits = 0  # transactions committed by the writer thread
        self.failed_commits = 0
        self.writer_ident: int | None = None  # threading.get_ident() of the writer thread
        self._queue: queue.SimpleQueue[_Request] = queue.SimpleQueue()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._opened: asyncio.Future[None] | None = None
        self._stopped: asyncio.Future[None] | None = None
        self._accepting = False
        self._registrations: list[Registration] = []
        self._statuses: dict[Key, StatusSince] = {}
        self._operations: dict[Key, OperationTimes] = {}

    async def open(self) -> None:
        """Creates the directory and the file, migrates a v1 JSON state file and loads every row; raises
        StoreError naming the file (and every bad row) when it is not a usable store."""
        if self._opened is not None:
            raise StoreError(f"{self.name}: the store was already opened")
        self._loop = asyncio.get_running_loop()
        self._opened = self._loop.create_future()
        self._thread = threading.Thread(target=self._run, name="store-writer", daemon=True)
        self._thread.start()
        await asyncio.shield(self._opened)  # a cancelled open() must not hide the outcome from close()
        self._accepting = self._stopped is None  # close() may have been called meanwhile

    def registrations(self) -> list[Registration]:
        """The registrations as loaded by open()."""
        self._check(opened=True)
        return list(self._registrations)

    def statuses(self) -> dict[Key, StatusSince]:
        """Each task's status and when it was first seen, as loaded by open()."""
        self._check(opened=True)
        return dict(self._statuses)

    def operations(self) -> dict[Key, OperationTimes]:
        """Each operation's first in-progress poll and duration observation, as loaded by open()."""
        self._check(opened=True)
        return dict(self._operations)

    def record_operation(self, key: Key, in_progress_since: float | None, observed_at: float | None) -> None:
        """Remembers an operation's first in-progress poll and when its duration was observed; written
        with the next batch (not awaited). A value the store could not load again is logged and dropped."""
        self._check()
        where = f"{self.name}: operation {ident(*key)}"
        problems = check_operation(where, key, in_progress_since, observed_at)
        if problems:
            log.warning("operation not stored", extra={"fields": {"error": "; ".join(problems)}})
            return
        self._queue.put(_Request(_Op(_RECORD_OPERATION, ((*key, in_progress_since, observed_at),))))

    async def put_registration(self, registration: Registration) -> None:
        """Inserts or replaces the registration of its task's key; committed when this returns."""
        task = registration.task
        row: dict[str, object] = dict(product=task.product, id=task.task_id, region=task.region)
        row.update(account=task.account)
        row.update(labels=dict(task.labels), registered_at=registration.registered_at)
        row.update(final_since=registration.final_since)
        where = f"{self.name}: registration {ident(*task.key)}"
        checked, problems = check_registration(where, row, self.limits)
        if checked is None:
            raise StoreError("\n".join(problems))
        await self._submit(_Op(_PUT, (_registration_row(checked),)))

    async def delete_registrations(self, keys: Collection[Key]) -> None:
        """Deletes the registrations of `keys` (an unknown key is no error); committed when this returns."""
        self._check()
        # A key that is not UTF-8 cannot have been stored, and binding it would fail the whole batch.
        rows = tuple(key for key in keys if all(is_utf8(part) for part in key))
        if rows:
            await self._submit(_Op(_DELETE, rows))

    def record_status(self, key: Key, status: str, since: float) -> None:
        """Remembers when `key`'s current status was first seen; written with the next batch (not awaited).

        A value the store could not load again is logged and dropped, not raised into the poller."""
        self._check()
        problems = check_status(f"{self.name}: status of {ident(*key)}", key, status, since)
        if problems:
            log.warning("status not stored", extra={"fields": {"error": "; ".join(problems)}})
            return
        self._queue.put(_Request(_Op(_RECORD, ((*key, status, float(since)),))))

    def forget_statuses(self, keys: Collection[Key]) -> None:
        """Drops the statuses of `keys`, and their operation times unless a duration was observed (kept so it
        is never observed twice); written with the next batch (not awaited)."""
        self._check()
        rows = tuple(key for key in keys if all(is_utf8(part) for part in key))
        if rows:
            self._queue.put(_Request(_Op(_FORGET, rows)))
            self._queue.put(_Request(_Op(_FORGET_OPERATION, rows)))

    async def flush(self) -> None:
        """Returns once everything queued so far is committed; StoreError when that write failed."""
        await self._submit(None)

    async def close(self) -> None:
        """Writes what is queued (and what failed before), closes the file and stops the writer thread.

        StoreError when that last write fails: those changes are lost. Safe to call again, before open()
        and after a failed open()."""
        if self._stopped is not None:
            await asyncio.wait([self._stopped])  # the first caller reports the outcome
            return
        self._stopped = asyncio.get_running_loop().create_future()
        self._accepting = False
        if self._opened is None or self._thread is None:
            self._stopped.set_result(None)
            return
        await asyncio.wait([self._opened])
        if self._opened.exception() is None:
            self._queue.put(_Request(future=self._stopped, stop=True))
            await asyncio.wait([self._stopped])
        else:
            self._stopped.set_result(None)  # the thread ended with the failed open
        await asyncio.to_thread(self._thread.join)  # it has nothing left to do but return
        error = self._stopped.exception()
        if error is not None:
            raise error

    def _check(self, opened: bool = False) -> None:
        ok = self._opened is not None and self._opened.done() and not self._opened.exception()
        if not (ok if opened else self._accepting):
            raise StoreError(f"{self.name}: the store is not open")

    async def _submit(self, op: _Op | None) -> None:
        self._check()
        assert self._loop is not None
        future: asyncio.Future[None] = self._loop.create_future()
        self._queue.put(_Request(op, future))
        await future

    # ---- the writer thread: the only one that touches the connection

    def _run(self) -> None:
        assert self._opened is not None
        self.writer_ident = threading.get_ident()
        path = self.path
        lock = StoreLock(path) if path is not None else None
        try:
            if path is not None and lock is not None:
                path.parent.mkdir(parents=True, exist_ok=True)
                lock.acquire()  # before anything reads or migrates the file
            connection = self._connect()
        except Exception as exc:  # whatever the file holds, open() gets an answer naming it, never a hang
            if lock is not None:
                lock.release()
            self._settle([self._opened], _open_problem(self.name, exc))
            return
        self._settle([self._opened], None)
        try:
            self._serve(connection)
        finally:
            connection.close()
            if lock is not None:
                lock.release()  # held until the store is closed: for the daemon, the process's life

    def _serve(self, connection: sqlite3.Connection) -> None:
        retry: list[_Op] = []  # from failed batches: written first, in their order
        delay = _RETRY_FIRST
        while True:
            requests = self._take(delay if retry else None)
            ops = retry + [r.op for r in requests if r.op is not None]
            error = self._commit(connection, ops) if ops else None
            retry, delay = ([], _RETRY_FIRST) if error is None else (ops, min(delay * 2, _RETRY_MAX))
            waiting = [r.future for r in requests if r.future is not None]
            if any(r.stop for r in requests):
                if error is not None:
                    error = f"{error} ({len(retry)} changes were not written)"
                    log.error("store closed with changes unwritten", extra={"fields": {"error": error}})
                connection.close()  # before close() returns: the file is complete and unlocked
                self._settle(waiting, error)
                return
            self._settle(waiting, error)

    def _take(self, timeout: float | None) -> list[_Request]:
        """Waits for one request (at most `timeout`), then takes every request queued behind it."""
        requests: list[_Request] = []
        with contextlib.suppress(queue.Empty):
            requests.append(self._queue.get(timeout=timeout))
            while True:
                requests.append(self._queue.get_nowait())
        return requests

    def _commit(self, connection: sqlite3.Connection, ops: list[_Op]) -> str | None:
        """Writes `ops` in one transaction, or none of them: then returns the problem."""
        try:
            connection.execute("BEGIN IMMEDIATE")
            for op in ops:
                connection.executemany(op.sql, op.rows)
            connection.execute("COMMIT")
        except Exception as exc:
            if connection.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    connection.execute("ROLLBACK")
            self.failed_commits += 1
            message = f"{self.name}: cannot write the store: {exc}"
            if not isinstance(exc, sqlite3.Error):
                # A bug (the ops were checked when queued): retried, it would fail every later batch too.
                log.exception(
                    "store batch dropped", extra={"fields": {"error": message, "changes": len(ops)}}
                )
                ops.clear()
            else:
                log.warning("store write failed", extra={"fields": {"error": message, "changes": len(ops)}})
            return message
        self.commits += 1
        return None

    def _settle(self, futures: list[asyncio.Future[None]], error: str | None) -> None:
        assert self._loop is not None
        if futures:
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits any more
                self._loop.call_soon_threadsafe(_resolve, futures, error)

    def _connect(self) -> sqlite3.Connection:
        path, legacy = self.path, self.legacy_json
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            if _is_foreign(path):
                self._migrate_in_place(path)
        connection = _connection(path, self.busy_timeout)
        try:
            mode = connection.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if path is not None and mode != "wal":
                log.warning("store not in WAL mode", extra={"fields": {"file": self.name, "mode": mode}})
            prepare(connection, self.name)
            connection.execute(_PRUNE_OPERATIONS, (time.time() - OBSERVED_KEPT,))
            if (
                legacy is not None
                and legacy.exists()
                and (path is None or legacy.resolve() != path.resolve())
            ):
                self._import_legacy(connection, legacy)
            if path is not None:  # in memory, the store changes no file
                for beside in (path, legacy or path):
                    remove_old_temporary_files(beside)
            self._load(connection)
        except BaseException:
            connection.close()
            raise
        return connection

    def _migrate_in_place(self, path: Path) -> None:
        """`path` holds a v1 JSON state file. The database is built beside it and renamed over it once
        complete, so a crash anywhere leaves the JSON file (migrated again next start) or the database."""
        payload, registrations = read_legacy(path, self.limits, in_place=True)
        building = path.with_name(f".{path.name}.migrating")
        migrated = path.with_name(path.name + ".migrated")
        try:
            for leftover in (building, building.with_name(building.name + "-journal")):
                leftover.unlink(missing_ok=True)
            # A new file is in rollback-journal mode: once closed it is complete, with no -wal beside it.
            connection = _connection(building, self.busy_timeout)
            try:
                prepare(connection, str(building))
                _insert_legacy(connection, registrations)
            finally:
                connection.close()
            with migrated.open("wb") as handle:
                handle.write(payload)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(building, path)
            _fsync_directory(path.parent)
        except (OSError, sqlite3.Error) as exc:
            building.unlink(missing_ok=True)
            raise StoreError(f"{path}: cannot migrate the JSON state file: {exc}") from None
        log_migration(len(registrations), path, migrated, path)

    def _import_legacy(self, connection: sqlite3.Connection, legacy: Path) -> None:
        _, registrations = read_legacy(legacy, self.limits, in_place=False)
        # Rows already stored win: after a crash between this commit and the rename, the same file is
        # imported again and must not bring back what changed since.
        _insert_legacy(connection, registrations)
        if self.path is None:
            return  # nothing is persisted: the JSON file stays the only copy
        migrated = legacy.with_name(legacy.name + ".migrated")
        try:
            os.replace(legacy, migrated)
            _fsync_directory(legacy.parent)
        except OSError as exc:
            raise StoreError(f"{legacy}: imported, but cannot be renamed to {migrated.name}: {exc}") from None
        log_migration(len(registrations), legacy, migrated, self.path)

    def _load(self, connection: sqlite3.Connection) -> None:
        problems: list[str] = []
        for product, region, task_id, labels, registered_at, final_since, account in connection.execute(
            "SELECT product, region, task_id, labels, registered_at, final_since, account FROM registrations"
            " ORDER BY registered_at, product, region, task_id"
        ):
            where = f"{self.name}: registrations row {ident(product, region, task_id)}"
            row = {"product": product, "id": task_id, "region": region, "labels": json_object(labels)}
            row["account"] = account
            if row["labels"] is None:
                problems.append(f"{where}: labels: expected a JSON object, got {shown(labels)}")
                continue
            row.update(registered_at=registered_at, final_since=final_since)
            registration, found = check_registration(where, row, self.limits)
            problems.extend(found)
            if registration is not None:
                self._registrations.append(registration)
        for product, region, task_id, status, since in connection.execute(
            "SELECT product, region, task_id, status, since FROM statuses"
        ):
            key = (product, region, task_id)
            found = check_status(f"{self.name}: statuses row {ident(*key)}", key, status, since)
            problems.extend(found)
            if not found:
                self._statuses[key] = StatusSince(status, float(since))
        for product, region, task_id, in_progress, observed in connection.execute(
            "SELECT product, region, task_id, in_progress_since, duration_observed_at FROM operations"
        ):
            key = (product, region, task_id)
            found = check_operation(f"{self.name}: operations row {ident(*key)}", key, in_progress, observed)
            problems.extend(found)
            if not found:
                self._operations[key] = OperationTimes(_real(in_progress), _real(observed))
        if problems:
            raise StoreError("\n".join(problems))


def _real(value: float | None) -> float | None:
    return None if value is None else float(value)


def _resolve(futures: list[asyncio.Future[None]], error: str | None) -> None:
    """On the loop: settles each future still awaited (a cancelled caller's is done already)."""
    for future in futures:
        if future.done():
            continue
        if error is None:
            future.set_result(None)
        else:
            future.set_exception(StoreError(error))  # one each: a raised exception collects its traceback


def _open_problem(name: str, exc: Exception) -> str:
    if isinstance(exc, StoreError):
        return str(exc)
    # OperationalError (cannot open, locked, I/O) is a DatabaseError too, but says nothing about the file.
    if isinstance(exc, sqlite3.DatabaseError) and not isinstance(exc, sqlite3.OperationalError):
        return f"{name}: not a SQLite database, or corrupt: {exc}"
    return f"{name}: cannot open the store: {exc}"


def _connection(path: Path | None, busy_timeout: float) -> sqlite3.Connection:
    # Autocommit: the writer begins and commits its own transactions. check_same_thread stays on, so a use
    # from any thread but the one that opened it is an error rather than a race.
    connection = sqlite3.connect(
        ":memory:" if path is None else str(path), timeout=busy_timeout, isolation_level=None
    )
    # Invalid UTF-8 in a tampered file becomes lone surrogates, which the row checks then report row by
    # row, instead of one decoding error for the whole file.
    connection.text_factory = _decode
    return connection


def _decode(data: bytes) -> str:
    return data.decode("utf-8", "surrogateescape")


def _registration_row(r: Registration) -> tuple[str, str, str, str, float, float | None, str]:
    labels = json.dumps(dict(r.task.labels), sort_keys=True)
    return (*r.task.key, labels, r.registered_at, r.final_since, r.task.account)


def _is_foreign(path: Path) -> bool:
    """True when `path` exists and is not a SQLite file (an empty file is one SQLite initialises)."""
    try:
        with path.open("rb") as handle:
            header = handle.read(len(SQLITE_HEADER))
    except FileNotFoundError:
        return False
    return bool(header) and header != SQLITE_HEADER


def _insert_legacy(connection: sqlite3.Connection, registrations: list[Registration]) -> None:
    connection.execute("BEGIN IMMEDIATE")
    try:
        connection.executemany(_PUT.replace("OR REPLACE", "OR IGNORE"), map(_registration_row, registrations))
        connection.execute("COMMIT")
    except BaseException:
        connection.execute("ROLLBACK")
        raise


def _fsync_directory(directory: Path) -> None:
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
