"""The store against untrusted files and values: unusable, corrupt or foreign databases, older schemas
migrated in place, bad rows and values, and the version 1 JSON state file."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import sqlite3
from pathlib import Path

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
from tests.store_helpers import (
    REGION,
    contents,
    legacy_document,
    names,
    read,
    registration,
    task,
    write,
)


@pytest.fixture
def db(tmp_path: Path) -> Path:
    """The store's file, in a folder the store creates."""
    return tmp_path / "state" / "store.db"


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
    assert "store migrated to schema version 4 (operation durations)" in caplog.messages
    # Exactly the schema a new file gets, so the exact-schema check accepts the migrated file from now on.
    assert schema_of(db) == schema_of(fresh)
    assert schema_of(db)[0] == SCHEMA_VERSION == 4
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
    # The lock file stays beside the store, unlocked: removing it would race the next holder.
    assert names(tmp_path) == ["state.json", "state.json.lock", "state.json.migrated"]
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
