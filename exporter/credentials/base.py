"""What every credential source shares: the provider protocol, its error, and keys that never change.

The sources themselves are in `profile` (profile file) and `sources` (CVM role, STS AssumeRole, TKE OIDC)
on `expiring` (renewal ahead of expiry); the chain that picks one is `chain`.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Protocol

from exporter import __version__
from exporter.credentials.signing import Credentials

MAX_TEXT = 200  # longest text quoted from a file or an answer in a message
USER_AGENT = f"tencentcloud-task-exporter/{__version__}"


class CredentialsError(Exception):
    pass


class CredentialProvider(Protocol):
    @property
    def source(self) -> str:
        """Where the keys come from, for logs (never the keys themselves)."""
        ...

    @property
    def identity(self) -> str:
        """Stable across refreshes: requests signed by the same identity share one quota."""
        ...

    async def get(self) -> Credentials:
        """The key pair to sign the next request with; raises CredentialsError when none can be had."""
        ...

    async def close(self) -> None: ...


class StaticProvider:
    def __init__(self, credentials: Credentials, source: str) -> None:
        self._credentials = credentials
        self._source = source

    @property
    def source(self) -> str:
        return self._source

    @property
    def identity(self) -> str:
        return self._credentials.secret_id

    async def get(self) -> Credentials:
        return self._credentials

    async def close(self) -> None:
        return None


def key_pair(secret_id: str, secret_key: str, token: str, where: str) -> Credentials | None:
    """The pair when both halves are set, None when neither is; half a pair is an error."""
    if secret_id and secret_key:
        return Credentials(secret_id, secret_key, token)
    if secret_id or secret_key:
        missing = "secret_key" if secret_id else "secret_id"
        raise CredentialsError(f"{where}: {missing} is empty while the other half of the key pair is set")
    return None


def clip(text: str) -> str:
    return text if len(text) <= MAX_TEXT else text[:MAX_TEXT] + "..."


class NotRegularFile(OSError):
    """A secret's file that is a FIFO, a device, a socket or a directory: refused, never waited on."""


_KINDS = ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISDIR, "a directory"), (stat.S_ISSOCK, "a socket"))


def read_regular_file(path: Path, limit: int) -> bytes:
    """At most `limit + 1` bytes of `path` (so a caller can tell a file over its limit), which must be a
    regular file; symbolic links are followed (Kubernetes mounts secrets through them).

    Opened with O_NONBLOCK and checked with fstat before a byte is read: opening a FIFO for reading
    otherwise waits for a writer, forever, and reading a device may never end. Raises OSError (its
    `strerror` says why: NotRegularFile for those)."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            kind = next((name for test, name in _KINDS if test(mode)), "a device")
            raise NotRegularFile(0, f"not a regular file ({kind})")
        os.set_blocking(fd, True)
        chunks: list[bytes] = []
        left = limit + 1
        while left > 0:
            chunk = os.read(fd, min(left, 65536))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)
