from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import signal
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from exporter.catalogue.products import BY_NAME, CDB, MARIADB
from exporter.config.parser import WatchedTask
from exporter.store.database import (
    SCHEMA_VERSION,
    SQLITE_HEADER,
    Registration,
    StatusSince,
    Store,
    StoreError,
)

ROOT = Path(__file__).resolve().parent.parent
REGION = "ap-guangzhou"
Key = tuple[str, str, str]


def task(number: int, product: str = MARIADB.name, labels: tuple[tuple[str, str], ...] = ()) -> WatchedTask:
    task_id = str(number) if BY_NAME[product].id_kind.integer else f"f96e4f3c-{number}"
    return WatchedTask(product, task_id, REGION, labels)


def registration(number: int, product: str = MARIADB.name, **labels: str) -> Registration:
    return Registration(task(number, product, tuple(sorted(labels.items()))), 1_700_000_000.0 + number)


async def contents(path: Path) -> tuple[dict[Key, Registration], dict[Key, StatusSince]]:
    store = Store(path)
    await store.open()
    try:
        return {r.task.key: r for r in store.registrations()}, store.statuses()
    finally:
        await store.close()


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "state" / "store.db"


@contextlib.contextmanager
def write_lock(path: Path) -> Iterator[None]:
    """Holds the database's write lock from another connection, as another process could."""
    blocker = sqlite3.connect(path, isolation_level=None)
    try:
        blocker.execute("BEGIN IMMEDIATE")
        yield
        blocker.execute("ROLLBACK")
    finally:
        blocker.close()


def names(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def read(path: Path) -> bytes:
    return path.read_bytes()


def write(path: Path, content: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)


def legacy_document(*registrations: Registration) -> dict[str, Any]:
    return {
        "version": 1,
        "tasks": [
            {
                "service": r.task.product,  # the v1 JSON file's name for the product
                "id": r.task.task_id,
                "region": r.task.region,
                "labels": dict(r.task.labels),
                "registered_at": r.registered_at,
                "final_since": r.final_since,
            }
            for r in registrations
        ],
    }


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


# ---- untrusted files and values


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"\x00\x01garbage that is neither", "neither a SQLite store nor a version 1 JSON state file"),
        (SQLITE_HEADER + b"\xff" * 4000, "not a SQLite database, or corrupt"),
    ],
)
async def test_unusable_file_is_refused_and_left_alone(db: Path, content: bytes, problem: str) -> None:
    write(db, content)
    store = Store(db)
    with pytest.raises(StoreError, match=problem) as caught:
        await store.open()
    assert str(caught.value).startswith(f"{db}: ")
    await store.close()
    assert read(db) == content


async def test_corrupt_database_is_refused(db: Path) -> None:
    store = Store(db)
    await store.open()
    await asyncio.gather(*(store.put_registration(registration(n, note="x" * 200)) for n in range(1, 300)))
    await store.close()
    with db.open("r+b") as handle:
        handle.seek(100)  # past the header: the schema page
        handle.write(b"\xa5" * 3000)
    with pytest.raises(StoreError, match=f"^{re.escape(str(db))}: ") as caught:
        await contents(db)
    assert "corrupt" in str(caught.value)


@pytest.mark.parametrize(
    ("statement", "problem"),
    [
        (
            f"PRAGMA user_version = {SCHEMA_VERSION + 1}",
            f"schema version {SCHEMA_VERSION + 1} is newer than this exporter knows",
        ),
        ("PRAGMA application_id = 42", "not this exporter's store"),
        # A planted trigger could fail or rewrite every write: only the exporter's own schema is accepted.
        (
            "CREATE TRIGGER t AFTER INSERT ON registrations BEGIN DELETE FROM statuses; END",
            "not this exporter's store",
        ),
    ],
)
async def test_database_of_unknown_version_application_or_schema_is_refused(
    db: Path, statement: str, problem: str
) -> None:
    await contents(db)
    with contextlib.closing(sqlite3.connect(db)) as raw:
        raw.execute(statement)
        raw.commit()
    with pytest.raises(StoreError, match=problem):
        await contents(db)


async def test_database_of_another_application_is_refused(db: Path) -> None:
    db.parent.mkdir()
    with contextlib.closing(sqlite3.connect(db)) as raw:
        raw.execute("CREATE TABLE invoices (id INTEGER)")
    with pytest.raises(StoreError, match="not this exporter's store"):
        await contents(db)


# The tables as older exporters wrote them, spelled out: files in the wild hold exactly this text.
_OLD_STATUSES = (
    "CREATE TABLE statuses (service TEXT NOT NULL, region TEXT NOT NULL, task_id TEXT NOT NULL,"
    " status TEXT NOT NULL, since REAL NOT NULL, PRIMARY KEY (service, region, task_id)) WITHOUT ROWID"
)
_OLD_REGISTRATIONS = {
    1: "CREATE TABLE registrations (service TEXT NOT NULL, region TEXT NOT NULL, task_id TEXT NOT NULL,"
    " labels TEXT NOT NULL, registered_at REAL NOT NULL, final_since REAL,"
    " PRIMARY KEY (service, region, task_id)) WITHOUT ROWID",
    2: "CREATE TABLE registrations (service TEXT NOT NULL, region TEXT NOT NULL, task_id TEXT NOT NULL,"
    " labels TEXT NOT NULL, registered_at REAL NOT NULL, final_since REAL,"
    " account TEXT NOT NULL DEFAULT '', PRIMARY KEY (service, region, task_id)) WITHOUT ROWID",
}


def schema_of(path: Path) -> tuple[int, set[str], list[str]]:
    """A file's schema version, its tables' text and the columns of `registrations`."""
    with contextlib.closing(sqlite3.connect(path)) as raw:
        version = raw.execute("PRAGMA user_version").fetchone()[0]
        tables = {row[0] for row in raw.execute("SELECT sql FROM sqlite_schema WHERE sql IS NOT NULL")}
        columns = [row[1] for row in raw.execute("PRAGMA table_info(registrations)")]
    return version, tables, columns


@pytest.mark.parametrize("version", [1, 2])
async def test_an_older_store_is_migrated_in_place_to_product_columns(
    db: Path, tmp_path: Path, version: int, caplog: pytest.LogCaptureFixture
) -> None:
    fresh = tmp_path / "fresh.db"
    await contents(fresh)
    db.parent.mkdir()
    with contextlib.closing(sqlite3.connect(db)) as raw:
        raw.execute(_OLD_REGISTRATIONS[version])
        raw.execute(_OLD_STATUSES)
        account = ", 'staging'" if version == 2 else ""
        row = f"'{CDB.name}', '{REGION}', 'old', '{{}}', 1.0, NULL{account}"
        raw.execute(f"INSERT INTO registrations VALUES ({row})")
        raw.execute(f"INSERT INTO statuses VALUES ('{MARIADB.name}', '{REGION}', '7', 'running', 2.0)")
        raw.execute("PRAGMA application_id = 1413698629")
        raw.execute(f"PRAGMA user_version = {version}")
        raw.commit()
    with caplog.at_level(logging.INFO, logger="exporter.store"):
        registrations, statuses = await contents(db)
    [stored] = registrations.values()
    assert (stored.task.key, stored.task.account) == (
        (CDB.name, REGION, "old"),
        "staging" if version == 2 else "default",
    )
    assert statuses == {(MARIADB.name, REGION, "7"): StatusSince("running", 2.0)}
    assert "store migrated to schema version 3 (product columns)" in caplog.messages
    # Exactly the schema a new file gets, so the exact-schema check accepts the migrated file from now on.
    assert schema_of(db) == schema_of(fresh)
    assert schema_of(db)[0] == SCHEMA_VERSION == 3
    assert schema_of(db)[2][0] == "product"
    await contents(db)
    assert schema_of(db) == schema_of(fresh)


async def test_every_bad_row_is_reported_with_its_key(db: Path) -> None:
    store = Store(db)
    await store.open()
    await store.put_registration(registration(1))
    await store.close()
    flow = f"'{MARIADB.name}'"
    rows = [
        ("'rds'", "'ap-guangzhou'", "'1'", "'{}'"),
        (flow, "'ap-guangzhou'", "'abc'", "'{}'"),
        (flow, "'ap-guangzhou' || char(10) || 'x'", "'7'", "'{}'"),
        (f"'{CDB.name}'", "'ap-guangzhou'", "CAST(X'EDA080' AS TEXT)", "'{}'"),  # a lone surrogate, as UTF-8
        (flow, "'ap-guangzhou'", "'8'", '\'{"team": "\\ud800"}\''),
        (flow, "'ap-guangzhou'", "'9'", "'[1]'"),
        (flow, "'ap-guangzhou'", "'10'", "'{}'", "'no spaces'"),
    ]
    with contextlib.closing(sqlite3.connect(db)) as raw:
        empty = "''"
        for product, region, task_id, labels, *account in rows:
            raw.execute(
                f"INSERT INTO registrations VALUES ({product}, {region}, {task_id}, {labels}, 1.0, NULL,"
                f" {account[0] if account else empty})"
            )
        raw.execute(f"INSERT INTO statuses VALUES ({flow}, 'ap-guangzhou', '1', 'running', 'soon')")
        raw.commit()
    with pytest.raises(StoreError) as caught:
        await contents(db)
    message = str(caught.value)
    message.encode("utf-8")  # printable and loggable, whatever the rows hold
    prefix = f"{db}: registrations row "
    for expected in (
        f"{prefix}rds/ap-guangzhou/1: product: expected one of {', '.join(sorted(BY_NAME))}",
        f"{prefix}{MARIADB.name}/ap-guangzhou/abc: id: expected a positive integer flow ID",
        f"{prefix}{MARIADB.name}/'ap-guangzhou\\nx'/7: region: expected a region name",
        f"{prefix}{CDB.name}/ap-guangzhou/'\\udced\\udca0\\udc80': id: expected UTF-8 text",
        f"{prefix}{MARIADB.name}/ap-guangzhou/8: labels.team: expected UTF-8 text",
        f"{prefix}{MARIADB.name}/ap-guangzhou/9: labels: expected a JSON object",
        f"{prefix}{MARIADB.name}/ap-guangzhou/10: account: expected an account name",
        f"{db}: statuses row {MARIADB.name}/ap-guangzhou/1: since: expected a unix time",
    ):
        assert any(line.startswith(expected) for line in message.splitlines()), (expected, message)
    assert f"{prefix}mariadb/ap-guangzhou/1:" not in message  # the good row


@pytest.mark.parametrize(
    "bad",
    [
        Registration(WatchedTask(MARIADB.name, "1", REGION, (("team", "\ud800"),)), 1.0),
        Registration(WatchedTask(MARIADB.name, "1", "ap-guangzhou\nx"), 1.0),
        Registration(WatchedTask(MARIADB.name, "01", REGION), 1.0),
        Registration(WatchedTask("rds", "1", REGION), 1.0),
        Registration(task(1), float("nan")),
        Registration(task(1), 1.0, float("inf")),
    ],
)
async def test_unstorable_registration_is_refused_before_it_is_queued(db: Path, bad: Registration) -> None:
    store = Store(db)
    await store.open()
    with pytest.raises(StoreError, match=f"^{re.escape(str(db))}: registration "):
        await store.put_registration(bad)
    await store.put_registration(registration(2))  # the store goes on working
    await store.close()
    assert set((await contents(db))[0]) == {task(2).key}


async def test_unstorable_status_is_logged_and_dropped(db: Path, caplog: pytest.LogCaptureFixture) -> None:
    store = Store(db)
    await store.open()
    store.record_status(task(1).key, "run\udcffning", 1.0)
    store.record_status(task(2).key, "running", float("nan"))
    store.record_status(task(3).key, "running", 2.0)
    await store.close()
    assert (await contents(db))[1] == {task(3).key: StatusSince("running", 2.0)}
    assert [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING] == [
        "status not stored"
    ] * 2


# ---- the v1 JSON state file


async def test_legacy_json_is_imported_and_renamed(
    db: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    legacy = tmp_path / "state.json"
    old = [registration(1, team="a"), Registration(task(2, CDB.name), 50.0, 60.0)]
    legacy.write_text(json.dumps(legacy_document(*old)))
    original = legacy.read_bytes()
    write(tmp_path / ".state.json.k2j4h.tmp", b"{half")  # the old writer's, killed mid-write
    write(tmp_path / ".other.json.k2j4h.tmp", b"")  # someone else's
    caplog.set_level(logging.INFO, logger="exporter.store")

    store = Store(db, legacy)
    await store.open()
    assert {r.task.key: r for r in store.registrations()} == {r.task.key: r for r in old}
    await store.close()

    assert names(tmp_path) == [".other.json.k2j4h.tmp", "state", "state.json.migrated"]
    assert (tmp_path / "state.json.migrated").read_bytes() == original
    [line] = [r for r in caplog.records if "migrated" in r.getMessage()]
    assert line.levelno == logging.INFO
    assert line.fields == {  # type: ignore[attr-defined]
        "tasks": 2,
        "from": str(legacy),
        "kept_as": str(tmp_path / "state.json.migrated"),
        "store": str(db),
    }
    again = Store(db, legacy)  # the same flags on the next start: nothing left to migrate
    await again.open()
    assert len(again.registrations()) == 2
    await again.close()


async def test_rows_already_stored_win_over_a_legacy_file_imported_again(db: Path, tmp_path: Path) -> None:
    store = Store(db)
    await store.open()
    await store.put_registration(registration(1, team="newer"))
    await store.close()
    legacy = tmp_path / "state.json"
    legacy.write_text(json.dumps(legacy_document(registration(1, team="older"), registration(2))))
    store = Store(db, legacy)
    await store.open()
    assert {r.task.key: r for r in store.registrations()} == {
        task(1).key: registration(1, team="newer"),
        task(2).key: registration(2),
    }
    await store.close()


async def test_store_path_holding_the_json_file_becomes_the_database(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    old = [registration(1), registration(2, CDB.name, pipeline="deploy-42")]
    path.write_text(json.dumps(legacy_document(*old)))
    original = path.read_bytes()
    (tmp_path / ".state.json.x1.tmp").write_text("")

    store = Store(path)
    await store.open()
    assert {r.task.key for r in store.registrations()} == {r.task.key for r in old}
    await store.put_registration(registration(3))
    await store.close()

    assert path.read_bytes().startswith(SQLITE_HEADER)
    assert (tmp_path / "state.json.migrated").read_bytes() == original
    assert names(tmp_path) == ["state.json", "state.json.migrated"]
    assert set((await contents(path))[0]) == {task(1).key, task(2, CDB.name).key, task(3).key}


@pytest.mark.parametrize("in_place", [False, True])
@pytest.mark.parametrize(
    ("document", "problem"),
    [
        (
            f'{{"version": 1, "tasks": [{{"service": "{MARIADB.name}", "id": "x", "region": "ap-guangzhou"',
            "JSON",
        ),
        ('{"version": 2, "tasks": []}', "version 1 JSON state file"),
        (
            json.dumps({"version": 1, "tasks": [{"service": CDB.name, "id": "", "region": REGION}]}),
            ": tasks[0]: id: expected an async request ID",
        ),
        (
            json.dumps(
                {"version": 1, "tasks": [{**legacy_document(registration(1))["tasks"][0], "service": "x"}]}
            ),
            f": tasks[0]: service: expected one of {', '.join(sorted(BY_NAME))}",
        ),
    ],
)
async def test_bad_legacy_json_is_refused_and_left_untouched(
    tmp_path: Path, in_place: bool, document: str, problem: str
) -> None:
    legacy = tmp_path / "state.json"
    legacy.write_text(document)
    store = Store(legacy) if in_place else Store(tmp_path / "store.db", legacy)
    with pytest.raises(StoreError, match=re.escape(problem)) as caught:
        await store.open()
    assert str(caught.value).startswith(f"{legacy}: ")
    await store.close()
    assert legacy.read_text() == document
    assert not (tmp_path / "state.json.migrated").exists()


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
