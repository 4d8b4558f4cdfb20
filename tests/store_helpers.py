"""What the store's test modules share (test_store.py, test_store_files.py): tasks, registrations, a
store file's contents, the file path fixture and small file helpers."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from exporter.catalogue.products import BY_NAME, MARIADB
from exporter.config.parser import WatchedTask
from exporter.store.database import (
    Registration,
    StatusSince,
    Store,
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
