"""One daemon per store file: an exclusive lock on `<store>.lock`, held from open to close.

Two daemons on one store would both poll every task in it (spending the quota twice) and never see each
other's registrations. The lock is flock(2) on a file beside the store (not on the store itself, whose
POSIX locks are SQLite's), so it is released by the kernel however the holder ends, `kill -9` included: a
stale lock file never blocks a start. The holder writes its PID into the file for the refusal message.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

from exporter.store.rows import StoreError

_PID_BYTES = 32


def lock_path(store: Path) -> Path:
    return store.with_name(store.name + ".lock")


class StoreLock:
    def __init__(self, store: Path) -> None:
        self.store = store
        self.path = lock_path(store)
        self._fd: int | None = None

    def acquire(self) -> None:
        """Takes the lock, or raises StoreError naming the process that holds it."""
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o644)
        except OSError as exc:
            raise StoreError(f"{self.path}: cannot open the store's lock file: {exc.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            os.close(fd)
            raise StoreError(
                f"{self.store}: in use by another exporter process ({holder}, lock file {self.path}); "
                "two daemons on one store would poll the same tasks twice: stop that one, or give this "
                "one its own --storage.path"
            ) from None
        except OSError as exc:
            os.close(fd)
            raise StoreError(f"{self.path}: cannot lock the store: {exc.strerror}") from None
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        except OSError:
            pass  # the lock is what matters; the PID only makes the refusal clearer
        self._fd = fd

    def release(self) -> None:
        """Closing the descriptor drops the lock; the file stays (removing it would race a new holder)."""
        fd, self._fd = self._fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)


def _holder(fd: int) -> str:
    try:
        text = os.pread(fd, _PID_BYTES, 0).decode("ascii", "replace").strip()
    except OSError:
        text = ""
    return f"PID {text}" if text.isdigit() else "PID unknown"
