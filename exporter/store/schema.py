"""The store's SQLite schema, by version, and what opening a file checks and migrates.

Only this exporter's exact schema is accepted (a trigger planted in the file could fail or rewrite every
write); an older version is migrated in place, once, and a newer one is refused.
"""

from __future__ import annotations

import logging
import sqlite3

from exporter.config.validation import shown
from exporter.store.rows import StoreError

log = logging.getLogger("exporter.store")

SCHEMA_VERSION = 4  # PRAGMA user_version
APPLICATION_ID = 0x54435445  # PRAGMA application_id ("TCTE"): this exporter's file, not another database


def _statuses(key: str) -> str:
    # Not tied to registrations: tasks from the config file keep their statuses here too.
    return (
        f"CREATE TABLE statuses ({key} TEXT NOT NULL, region TEXT NOT NULL, task_id TEXT NOT NULL,"
        f" status TEXT NOT NULL, since REAL NOT NULL, PRIMARY KEY ({key}, region, task_id)) WITHOUT ROWID"
    )


def _registrations(key: str) -> str:
    # Keyed like WatchedTask.key; WITHOUT ROWID stores each row once, in key order.
    return (
        f"CREATE TABLE registrations ({key} TEXT NOT NULL, region TEXT NOT NULL, task_id TEXT NOT NULL,"
        " labels TEXT NOT NULL, registered_at REAL NOT NULL, final_since REAL,"
        f" account TEXT NOT NULL DEFAULT '', PRIMARY KEY ({key}, region, task_id)) WITHOUT ROWID"
    )


# Version 4: each operation's first in-progress poll and when its duration was observed (NULL: not yet), so
# the duration histogram counts an operation once, across restarts too. Forgotten with the task's status.
_OPERATIONS = (
    "CREATE TABLE operations (product TEXT NOT NULL, region TEXT NOT NULL, task_id TEXT NOT NULL,"
    " in_progress_since REAL, duration_observed_at REAL,"
    " PRIMARY KEY (product, region, task_id)) WITHOUT ROWID"
)


# Version 1, before accounts; still read (and migrated) from older files.
_SCHEMA_V1 = (
    "CREATE TABLE registrations (service TEXT NOT NULL, region TEXT NOT NULL, task_id TEXT NOT NULL,"
    " labels TEXT NOT NULL, registered_at REAL NOT NULL, final_since REAL,"
    " PRIMARY KEY (service, region, task_id)) WITHOUT ROWID",
    _statuses("service"),
)
# Version 2 adds the account ("": a row from version 1, the account named default). This is the text SQLite
# keeps after the migration's ALTER TABLE too, so a migrated file and a new one have the same schema.
_SCHEMA_V2 = (_registrations("service"), _statuses("service"))
# Version 3 calls the product key `product`, as the rest of the exporter does (it was `service`). SQLite's
# RENAME COLUMN rewrites the stored text word for word, so a migrated file has exactly this schema too.
_SCHEMA_V3 = (_registrations("product"), _statuses("product"))
_SCHEMA = (*_SCHEMA_V3, _OPERATIONS)
_MIGRATE_V1 = ("ALTER TABLE registrations ADD COLUMN account TEXT NOT NULL DEFAULT ''",)
_MIGRATE_V2 = (
    "ALTER TABLE registrations RENAME COLUMN service TO product",
    "ALTER TABLE statuses RENAME COLUMN service TO product",
)
_MIGRATE_V3 = (_OPERATIONS,)
_EXPECTED = {
    0: frozenset[str](),
    1: frozenset(_SCHEMA_V1),
    2: frozenset(_SCHEMA_V2),
    3: frozenset(_SCHEMA_V3),
}


def prepare(connection: sqlite3.Connection, name: str) -> None:
    """Checks the file is this exporter's store, of a schema version it knows; creates a new one's schema."""
    connection.execute("PRAGMA synchronous=FULL")  # every commit reaches the disk before it is acknowledged
    connection.execute("PRAGMA trusted_schema=OFF")  # a trigger planted in the file calls no risky function
    check = [str(row[0]) for row in connection.execute("PRAGMA quick_check")]
    if check != ["ok"]:
        raise StoreError(f"{name}: corrupt SQLite database: {shown('; '.join(check), 200)}")
    version = connection.execute("PRAGMA user_version").fetchone()[0]
    application = connection.execute("PRAGMA application_id").fetchone()[0]
    if version > SCHEMA_VERSION:
        raise StoreError(
            f"{name}: store schema version {version} is newer than this exporter knows ({SCHEMA_VERSION});"
            " run a newer exporter or restore a backup"
        )
    # Exactly this schema: a planted trigger could fail or change every write, a missing column every read.
    schema = {row[0] for row in connection.execute("SELECT sql FROM sqlite_schema WHERE sql IS NOT NULL")}
    expected = _EXPECTED.get(version, frozenset(_SCHEMA))
    if application not in (0, APPLICATION_ID) or schema != expected:
        raise StoreError(f"{name}: not this exporter's store (unexpected application or tables)")
    if version in (1, 2, 3):
        # Every step in one transaction: a crash leaves the old version, migrated again at the next start.
        connection.execute("BEGIN IMMEDIATE")
        steps = (
            *(_MIGRATE_V1 if version == 1 else ()),
            *(_MIGRATE_V2 if version < 3 else ()),
            *_MIGRATE_V3,
        )
        for statement in steps:
            connection.execute(statement)
        connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        connection.execute("COMMIT")
        fields = {"fields": {"store": name}}
        if version == 1:
            log.info("store migrated to schema version 2 (accounts)", extra=fields)
        if version < 3:
            log.info("store migrated to schema version 3 (product columns)", extra=fields)
        log.info("store migrated to schema version 4 (operation durations)", extra=fields)
    if version == 0:
        connection.execute("BEGIN IMMEDIATE")
        for statement in _SCHEMA:
            connection.execute(statement)
        connection.execute(f"PRAGMA application_id = {APPLICATION_ID}")
        connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        connection.execute("COMMIT")
