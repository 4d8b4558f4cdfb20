"""Keys from an INI profile file (`secret_id`/`secret_key` in a section), re-read when the file changes.

File access (stat and read) runs in a worker thread; no message ever quotes a line of the file.
"""

from __future__ import annotations

import asyncio
import configparser
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from exporter.credentials.base import CredentialsError, key_pair, read_regular_file
from exporter.credentials.signing import Credentials

log = logging.getLogger("exporter.credentials")  # one logger for the whole chain, as before the split

_MAX_PROFILE_BYTES = 64 * 1024  # a profile file holds a few sections of a few keys


@dataclass(frozen=True)
class ProfileRead:
    signature: tuple[int, int, int] | None  # (mtime_ns, size, inode); None: the file does not exist
    credentials: Credentials | None = None
    reason: str = ""  # why there are no credentials, when the file exists


def _unquote(value: str) -> str:
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
        return value[1:-1].strip()
    return value


def read_profile(path: Path, section: str, known: tuple[int, int, int] | None) -> ProfileRead | None:
    """Runs in a worker thread. None when the file is unchanged since `known`.

    Raises CredentialsError for a file that exists but is unusable; the message never quotes a line of it.
    """
    try:
        stat = path.stat()
    except FileNotFoundError:
        return ProfileRead(None)
    except OSError as exc:
        raise CredentialsError(
            f"profile file {path}: cannot stat: {exc.strerror or type(exc).__name__}"
        ) from None
    signature = (stat.st_mtime_ns, stat.st_size, stat.st_ino)
    if signature == known:
        return None
    try:
        data = read_regular_file(path, _MAX_PROFILE_BYTES)
        if len(data) > _MAX_PROFILE_BYTES:
            raise CredentialsError(f"profile file {path}: larger than {_MAX_PROFILE_BYTES // 1024} KiB")
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise CredentialsError(f"profile file {path}: not UTF-8 text") from None
    except OSError as exc:
        raise CredentialsError(
            f"profile file {path}: cannot read: {exc.strerror or type(exc).__name__}"
        ) from None
    parser = configparser.ConfigParser(interpolation=None)
    try:
        parser.read_string(text, source=str(path))
    except configparser.Error as exc:
        # str(exc) quotes the offending line, which may hold a key: report its number only.
        line = getattr(exc, "lineno", None)
        errors = getattr(exc, "errors", None)
        if line is None and errors:
            line = errors[0][0]
        where = f" (line {line})" if line is not None else ""
        raise CredentialsError(
            f"profile file {path}: not a valid INI file{where}: {type(exc).__name__}"
        ) from None
    if not parser.has_section(section):
        return ProfileRead(signature, reason=f"no [{section}] section")
    values = parser[section]
    found = key_pair(
        _unquote(values.get("secret_id", "")),
        _unquote(values.get("secret_key", "")),
        "",
        f"profile file {path} [{section}]",
    )
    if found is None:
        return ProfileRead(signature, reason=f"no secret_id/secret_key in [{section}]")
    return ProfileRead(signature, found)


class ProfileProvider:
    """Keys from an INI profile file, re-read (in a worker thread) when its mtime, size or inode changes."""

    def __init__(
        self,
        path: Path,
        section: str,
        first: ProfileRead,
        clock: Callable[[], float],
        check_interval: float,
    ) -> None:
        assert first.credentials is not None
        assert first.signature is not None
        self._path = path
        self._section = section
        self._credentials = first.credentials
        self._signature: tuple[int, int, int] | None = first.signature
        self._clock = clock
        self._check_interval = check_interval
        self._checked_at = clock()
        self._lock = asyncio.Lock()
        self._problem = ""

    @property
    def source(self) -> str:
        return f"profile file {self._path} [{self._section}]"

    @property
    def identity(self) -> str:
        return f"profile:{self._path}[{self._section}]"

    async def get(self) -> Credentials:
        # At most one check per interval, and no poll waits on one: while it runs, the current keys serve.
        if self._clock() - self._checked_at < self._check_interval or self._lock.locked():
            return self._credentials
        async with self._lock:
            self._checked_at = self._clock()
            try:
                read = await asyncio.to_thread(read_profile, self._path, self._section, self._signature)
            except CredentialsError as exc:
                self._keep(str(exc))
                return self._credentials
            if read is None:
                return self._credentials
            if read.credentials is None:
                self._keep(f"{self.source}: {read.reason or 'file not found'}")
                return self._credentials
            self._signature, self._problem = read.signature, ""
            if read.credentials != self._credentials:
                self._credentials = read.credentials
                fields = {"credentials": self.source}
                log.info("profile file changed, new keys loaded", extra={"fields": fields})
        return self._credentials

    def _keep(self, problem: str) -> None:
        # A file half-way through being rewritten must not stop polling: keep the keys read last.
        if problem == self._problem:
            return  # said once, not every second
        self._problem = problem
        log.warning(
            "profile file unusable, keeping the keys read before",
            extra={"fields": {"credentials": self.source, "error": problem}},
        )

    async def close(self) -> None:
        return None
