from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from exporter.catalogue.products import CDB
from exporter.store.database import (
    SCHEMA_VERSION,
    Registration,
    StatusSince,
    Store,
    StoreError,
)
from tests.store_helpers import (
    ROOT,
    contents,
    legacy_document,
    names,
    registration,
    task,
    write_lock,
)


@pytest.fixture
def db(tmp_path: Path) -> Path:
    """The store's file, in a folder the store creates."""
    return tmp_path / "state" / "store.db"


# ---- round trips


async def test_registrations_and_statuses_survive_close_and_open(db: Path) -> None:
    store = Store(db)
    await store.open()
    assert store.registrations() == []
    assert store.statuses() == {}
    kept = Registration(task(1, labels=(("pipeline", "deploy-42"), ("team", "dba"))), 100.0, 160.5)
    await store.put_registration(kept)
    await store.put_registration(registration(2, CDB.name))
    await store.put_registration(registration(3))
    await store.delete_registrations([task(3).key, task(99).key])
    store.record_status(task(1).key, "success", 150.25)
    store.record_status(task(2, CDB.name).key, "running", 151.0)
    store.record_status(task(2, CDB.name).key, "paused", 152.0)
    store.record_status(task(3).key, "running", 153.0)
    store.forget_statuses([task(3).key])
    await store.close()

    registrations, statuses = await contents(db)
    assert registrations == {kept.task.key: kept, task(2, CDB.name).key: registration(2, CDB.name)}
    assert statuses == {
        task(1).key: StatusSince("success", 150.25),
        task(2, CDB.name).key: StatusSince("paused", 152.0),
    }
    with contextlib.closing(sqlite3.connect(db)) as raw:
        assert raw.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
        assert raw.execute("PRAGMA journal_mode").fetchone() == ("wal",)


async def test_put_registration_replaces_the_row_of_the_same_key(db: Path) -> None:
    store = Store(db)
    await store.open()
    await store.put_registration(registration(1, team="a"))
    final = Registration(task(1, labels=(("team", "b"),)), 5.0, 9.0)
    await store.put_registration(final)
    await store.close()
    assert (await contents(db))[0] == {final.task.key: final}


async def test_in_memory_store_works_and_writes_no_file(tmp_path: Path) -> None:
    store = Store(None)
    await store.open()
    await store.put_registration(registration(1))
    store.record_status(task(1).key, "running", 1.0)
    await store.flush()
    assert store.commits >= 1
    await store.close()
    assert names(tmp_path) == []


async def test_flush_commits_statuses_for_other_readers_before_close(db: Path) -> None:
    store = Store(db)
    await store.open()
    store.record_status(task(1).key, "running", 10.0)
    store.record_status(task(2).key, "failed", 11.0)
    await store.flush()
    with contextlib.closing(sqlite3.connect(db)) as raw:
        assert sorted(raw.execute("SELECT task_id, status, since FROM statuses")) == [
            ("1", "running", 10.0),
            ("2", "failed", 11.0),
        ]
    store.forget_statuses([task(1).key])
    await store.flush()
    with contextlib.closing(sqlite3.connect(db)) as raw:
        assert list(raw.execute("SELECT task_id FROM statuses")) == [("2",)]
    await store.close()


# ---- group commit, durability, failures


async def test_concurrent_registrations_share_transactions(db: Path) -> None:
    store = Store(db)
    await store.open()
    before = store.commits
    await asyncio.gather(*(store.put_registration(registration(n)) for n in range(1, 2001)))
    assert store.commits - before < 100  # one fsync per batch, not per registration
    await store.close()
    registrations, _ = await contents(db)
    assert set(registrations) == {task(n).key for n in range(1, 2001)}


CHILD = """
import asyncio, os, signal, sys
from pathlib import Path
from exporter.catalogue.products import MARIADB
from exporter.config.parser import WatchedTask
from exporter.store.database import Registration, Store

async def put(store, number, kill_at):
    await store.put_registration(Registration(WatchedTask(MARIADB.name, str(number), "ap-guangzhou"), 1.0))
    print(number, flush=True)
    if number == kill_at:  # at once: the writer is still busy with the writes queued behind this one
        os.kill(os.getpid(), signal.SIGKILL)

async def main():
    store = Store(Path(sys.argv[1]))
    await store.open()
    number = 0
    while True:
        await asyncio.gather(*(put(store, number + n, int(sys.argv[2])) for n in range(1, 51)))
        number += 50

asyncio.run(main())
"""


@pytest.mark.parametrize("kill_at", [1, 280, 1000])
def test_acknowledged_registrations_survive_sigkill(tmp_path: Path, kill_at: int) -> None:
    db = tmp_path / "store.db"
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    child = subprocess.run(
        [sys.executable, "-c", CHILD, str(db), str(kill_at)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert child.returncode == -signal.SIGKILL, child.stderr
    acknowledged = {int(line) for line in child.stdout.split()}
    assert kill_at in acknowledged
    registrations, _ = asyncio.run(contents(db))
    assert {task(n).key for n in acknowledged} <= set(registrations)


async def test_acknowledged_registration_is_visible_to_other_readers_at_once(db: Path) -> None:
    store = Store(db)
    await store.open()
    with contextlib.closing(sqlite3.connect(db)) as reader:
        for number in range(1, 51):
            await store.put_registration(registration(number))
            assert reader.execute("SELECT count(*) FROM registrations").fetchone() == (number,)
    await store.close()


async def test_failed_batch_is_kept_in_order_and_lands_with_the_next(db: Path) -> None:
    store = Store(db, busy_timeout=0.05)
    await store.open()
    await store.put_registration(registration(2))
    with write_lock(db):
        with pytest.raises(StoreError, match="locked") as caught:
            await store.put_registration(registration(1, team="first"))
        assert str(db) in str(caught.value)
        for attempt in (
            store.put_registration(registration(1, team="second")),
            store.delete_registrations([task(2).key]),
            store.put_registration(registration(3)),
        ):
            with pytest.raises(StoreError):
                await attempt
    await store.flush()
    assert store.failed_commits >= 4
    await store.close()
    registrations, _ = await contents(db)
    assert registrations == {task(1).key: registration(1, team="second"), task(3).key: registration(3)}


async def test_failed_batch_is_retried_at_close(db: Path) -> None:
    store = Store(db, busy_timeout=0.05)
    await store.open()
    with write_lock(db):
        with pytest.raises(StoreError):
            await store.put_registration(registration(1))
        store.record_status(task(1).key, "running", 3.0)
    await store.close()
    assert await contents(db) == ({task(1).key: registration(1)}, {task(1).key: StatusSince("running", 3.0)})


async def test_close_reports_changes_it_could_not_write(db: Path) -> None:
    store = Store(db, busy_timeout=0.05)
    await store.open()
    with write_lock(db):
        with pytest.raises(StoreError):
            await store.put_registration(registration(1))
        with pytest.raises(StoreError, match="not written"):
            await store.close()
    await store.close()  # already closed: nothing more to report
    assert await contents(db) == ({}, {})


async def test_cancelled_caller_is_skipped_and_its_write_still_lands(db: Path) -> None:
    problems: list[dict[str, Any]] = []
    asyncio.get_running_loop().set_exception_handler(lambda _loop, context: problems.append(context))
    store = Store(db)
    await store.open()
    call = store.put_registration(registration(1))
    waited_on = call.send(None)  # runs the call up to its wait: the write is queued
    waited_on.cancel()  # what cancelling the caller's task does to the future it waits on
    call.close()
    await asyncio.wait_for(store.flush(), 10)  # a settling error would leave the flush waiting forever
    await store.close()
    assert waited_on.cancelled()
    assert problems == []
    assert set((await contents(db))[0]) == {task(1).key}


async def test_sqlite_is_only_used_on_the_writer_thread(
    db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    used: set[int] = set()
    real_connect = sqlite3.connect

    def connect(*args: Any, **kwargs: Any) -> sqlite3.Connection:
        connection: sqlite3.Connection = real_connect(*args, **kwargs)
        used.add(threading.get_ident())
        connection.set_trace_callback(lambda _sql: used.add(threading.get_ident()))
        return connection

    monkeypatch.setattr(sqlite3, "connect", connect)
    legacy = tmp_path / "state.json"
    legacy.write_text(json.dumps(legacy_document(registration(5))))
    store = Store(db, legacy)
    await store.open()
    await store.put_registration(registration(1))
    store.record_status(task(1).key, "running", 1.0)
    await store.delete_registrations([task(1).key])
    await store.flush()
    await store.close()
    assert used == {store.writer_ident}
    assert threading.get_ident() not in used


# ---- lifecycle


async def test_close_is_idempotent_and_safe_before_and_after_a_failed_open(tmp_path: Path) -> None:
    never_opened = Store(tmp_path / "never.db")
    await never_opened.close()
    assert not (tmp_path / "never.db").exists()

    broken = tmp_path / "broken.db"
    broken.write_bytes(b"not a database")
    failed = Store(broken)
    with pytest.raises(StoreError):
        await failed.open()
    await failed.close()
    await failed.close()

    store = Store(tmp_path / "ok.db")
    await store.open()
    await asyncio.gather(store.close(), store.close())
    await store.close()
    with pytest.raises(StoreError, match="not open"):
        await store.put_registration(registration(1))
    with pytest.raises(StoreError, match="not open"):
        store.record_status(task(1).key, "running", 1.0)
    assert not any(t.name == "store-writer" and t.is_alive() for t in threading.enumerate())
