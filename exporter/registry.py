"""Tasks registered at run time over the HTTP API, persisted so a restart (even `kill -9`) loses none.

The state file is rewritten whole on every change: write a temporary file beside it, fsync, rename over the
old one, fsync the directory. A reader therefore sees the old file or the new one, never half of either.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from exporter.config import WatchedTask

log = logging.getLogger(__name__)

FORMAT_VERSION = 1


class StateFileError(Exception):
    pass


@dataclass(frozen=True)
class Registration:
    task: WatchedTask
    registered_at: float
    final_since: float | None = None  # unix time the task was first seen in a final state


def _to_json(r: Registration) -> dict[str, Any]:
    return {
        "service": r.task.service,
        "id": r.task.task_id,
        "region": r.task.region,
        "labels": dict(r.task.labels),
        "registered_at": r.registered_at,
        "final_since": r.final_since,
    }


def _from_json(item: Any, where: str) -> Registration:
    try:
        task = WatchedTask(
            str(item["service"]),
            str(item["id"]),
            str(item["region"]),
            tuple(sorted((str(k), str(v)) for k, v in dict(item.get("labels") or {}).items())),
        )
        final = item.get("final_since")
        return Registration(task, float(item["registered_at"]), None if final is None else float(final))
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise StateFileError(f"{where}: malformed entry: {exc!r}") from None


class TaskRegistry:
    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._entries: dict[tuple[str, str, str], Registration] = {}
        self._lock = asyncio.Lock()
        self._dirty = False  # changed since the file was last written

    def __iter__(self) -> Iterator[Registration]:
        return iter(list(self._entries.values()))

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def load(self) -> None:
        """Reads the state file; a missing file is an empty registry, a corrupt one is an error."""
        if self.path is None or not self.path.exists():
            return
        try:
            document = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise StateFileError(f"{self.path}: cannot read state file: {exc}") from None
        if not isinstance(document, dict) or document.get("version") != FORMAT_VERSION:
            raise StateFileError(f"{self.path}: not a version {FORMAT_VERSION} state file")
        tasks = document.get("tasks")
        if not isinstance(tasks, list):
            raise StateFileError(f"{self.path}: tasks: expected a list")
        for index, item in enumerate(tasks):
            registration = _from_json(item, f"{self.path}: tasks[{index}]")
            self._entries[registration.task.key] = registration

    def add(self, task: WatchedTask, now: float | None = None) -> bool:
        """Registers a task (or updates its labels); True when it was not registered before."""
        old = self._entries.get(task.key)
        registered_at = old.registered_at if old else (time.time() if now is None else now)
        self._entries[task.key] = Registration(task, registered_at, old.final_since if old else None)
        self._dirty = True
        return old is None

    def remove(self, key: tuple[str, str, str]) -> bool:
        removed = self._entries.pop(key, None) is not None
        self._dirty |= removed
        return removed

    def mark_final(self, key: tuple[str, str, str], since: float | None) -> bool:
        """Records when a task reached (or left, with None) a final state; True when that changed anything."""
        old = self._entries.get(key)
        if old is None or old.final_since == since:
            return False
        self._entries[key] = Registration(old.task, old.registered_at, since)
        self._dirty = True
        return True

    def expired(self, now: float, retention: float) -> list[tuple[str, str, str]]:
        return [
            key
            for key, r in self._entries.items()
            if r.final_since is not None and now - r.final_since >= retention
        ]

    async def save(self) -> None:
        """Writes the file if anything changed since the last write (so a read-only run writes nothing)."""
        if self.path is None or not self._dirty:
            return
        # Cleared before the write: a change made while it runs marks the registry dirty again.
        self._dirty = False
        document = {"version": FORMAT_VERSION, "tasks": [_to_json(r) for r in self._entries.values()]}
        payload = json.dumps(document, indent=1, sort_keys=True).encode("utf-8")
        # Serialised, so an older snapshot can never be renamed over a newer one.
        async with self._lock:
            try:
                await asyncio.to_thread(atomic_write, self.path, payload)
            except OSError:
                self._dirty = True
                raise


def atomic_write(path: Path, payload: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)
