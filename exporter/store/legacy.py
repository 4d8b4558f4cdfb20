"""Reading the v1 JSON state file that the SQLite store replaced, for its one-time migration, and cleaning
up after the old writer. Delete this module once no v1 files are left in the wild."""

from __future__ import annotations

import contextlib
import json
import logging
import os
from pathlib import Path

from exporter.config.parser import Key, LimitsConfig
from exporter.config.validation import describe, shown
from exporter.store.rows import Registration, StoreError, check_registration

log = logging.getLogger("exporter.store")

LEGACY_VERSION = 1  # the JSON state file this store replaces
SQLITE_HEADER = b"SQLite format 3\x00"


def read_legacy(path: Path, limits: LimitsConfig | None, in_place: bool) -> tuple[bytes, list[Registration]]:
    """A v1 JSON state file's bytes and registrations (the last entry of a key wins, as it did)."""
    try:
        payload = path.read_bytes()
    except OSError as exc:
        raise StoreError(f"{path}: cannot read the JSON state file: {exc}") from None
    if payload.startswith(SQLITE_HEADER):
        raise StoreError(f"{path}: a SQLite database, not a JSON state file to migrate")
    # In place, the file was meant to be the store itself: say both things it could have been.
    expected = "neither a SQLite store nor" if in_place else "not"
    try:
        document = json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise StoreError(f"{path}: {expected} a version 1 JSON state file: {shown(str(exc), 120)}") from None
    if not isinstance(document, dict) or document.get("version") != LEGACY_VERSION:
        raise StoreError(f"{path}: {expected} a version 1 JSON state file")
    tasks = document.get("tasks")
    if not isinstance(tasks, list):
        raise StoreError(f"{path}: tasks: expected a list, got {describe(tasks)}")
    problems: list[str] = []
    found: dict[Key, Registration] = {}
    for index, item in enumerate(tasks):
        where = f"{path}: tasks[{index}]"
        if not isinstance(item, dict):
            problems.append(f"{where}: expected a mapping, got {describe(item)}")
            continue
        registration, errors = check_registration(where, item, limits, product_key="service")
        problems.extend(errors)
        if registration is not None:
            found[registration.task.key] = registration
    if problems:
        raise StoreError("\n".join(problems))
    return payload, list(found.values())


def remove_old_temporary_files(beside: Path) -> None:
    """Removes the `.<name>.*.tmp` files the JSON state file's writer left when killed mid-write."""
    prefix, removed = f".{beside.name}.", 0
    with contextlib.suppress(OSError):
        for entry in os.scandir(beside.parent):
            if entry.name.startswith(prefix) and entry.name.endswith(".tmp") and entry.is_file():
                os.unlink(entry.path)
                removed += 1
    if removed:
        log.info(
            "removed temporary files of the JSON state file",
            extra={"fields": {"directory": str(beside.parent), "files": removed}},
        )


def log_migration(count: int, source: Path, migrated: Path, store: Path) -> None:
    fields = {"tasks": count, "from": str(source), "kept_as": str(migrated), "store": str(store)}
    log.info("JSON state file migrated into the store", extra={"fields": fields})
