"""Re-reading `--web.config.file` when it changes: certificates rotate and users change without a restart.

The exporter-toolkit reads its web config file again for every TLS handshake and every request. Reading YAML
and PEM files on the event loop for each connection would stall it, so WebConfigReloader instead:

- checks the file, and the certificate, key and client CA files it names, once per `interval` (1 s): one
  `stat()` each, in a worker thread. A file whose device, inode, size, modification or change time differs
  has changed; a file renamed over it (as `mv`, most editors and Kubernetes secret volumes do) counts.
- reads the files once they have been still for one more check, so a certificate and a key copied one after
  the other are read together, not the new certificate with the old key.
- validates the file and builds its TLS context in the worker thread, then, on the event loop, puts it in
  force: every new TLS connection is made by the new context (the listener's context is a
  `webtls.SwitchingContext`), and the request guard (`exporter.web.guard`) takes the new users, headers,
  allowed SANs and rate limit for the next request. TLS connections already open keep the context they
  were made with; TLS sessions made before the change are not resumed after it.
- keeps the last good config in force when the new one is invalid (bad YAML, an unknown key, a missing
  file, a key that does not belong to its certificate...): the problems are logged once for each change of
  the files, and `tencentcloud_exporter_web_config_last_reload_successful` is 0 until a change loads.

Turning TLS on or off is refused (the listener serves HTTPS or plain HTTP from the start, as the toolkit's
does).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import ssl
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from aiohttp import web
from aiohttp.typedefs import Middleware
from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import GaugeMetricFamily, Metric

from exporter.config.validation import read_yaml
from exporter.web import guard as webguard
from exporter.web.config import WebConfig, build_web_config, summary
from exporter.web.configcheck import WebConfigError
from exporter.web.tls import SwitchingContext

# The logger of everything about the web config.
log = logging.getLogger("exporter.webconfig")

DEFAULT_INTERVAL = 1.0  # seconds between two checks of the files
_FILE_KEYS = ("cert_file", "key_file", "client_ca_file")

# What stat() says of a file that tells a change: device, inode, size, mtime and ctime (ns); None if absent.
Stat = tuple[int, int, int, int, int] | None
Signature = Mapping[Path, Stat]


def _stat(path: Path) -> Stat:
    try:
        st = os.stat(path)  # follows symbolic links: a swapped `..data` link of a secret volume is a change
    except OSError:
        return None
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def _signature(paths: Iterable[Path]) -> dict[Path, Stat]:
    return {path: _stat(path) for path in paths}


def named_files(document: object, base: Path) -> tuple[Path, ...]:
    """The files a web config document names, resolved as its validation does; also from an invalid document,
    so a missing certificate is noticed when it appears."""
    tls = document.get("tls_server_config") if isinstance(document, dict) else None
    if not isinstance(tls, dict):
        return ()
    files = []
    for key in _FILE_KEYS:
        text = tls.get(key)
        if isinstance(text, str) and text:
            files.append(Path(text) if Path(text).is_absolute() else base / text)
    return tuple(files)


@dataclass(frozen=True)
class _Outcome:
    """One reading of the files, made in a worker thread."""

    signature: Signature  # of `watched`, as they were before they were read
    watched: tuple[Path, ...]  # the web config file and the files it names
    config: WebConfig | None = None
    context: ssl.SSLContext | None = None
    problems: tuple[str, ...] = ()


class WebConfigReloader:
    """The web config in force, re-read when the file or a file it names changes; see the module's doc.

    Created at startup (it raises WebConfigError when the file is invalid, like load_web_config()); give the
    server `ssl_context`, the app `middlewares()` and `add_headers` (to `on_response_prepare`), then
    `start()` the checks on the running loop and `stop()` them at shutdown (or use it as an async context
    manager).
    """

    def __init__(self, path: str | Path, *, interval: float = DEFAULT_INTERVAL) -> None:
        if interval <= 0:
            raise ValueError(f"interval must be positive, got {interval}")
        self.path = Path(path)
        self.source = str(path)
        self.interval = interval
        outcome = self._read(_signature((self.path,)), (self.path,))
        if outcome.config is None:
            raise WebConfigError(list(outcome.problems))
        self._config: WebConfig = outcome.config
        self._watched = outcome.watched
        self._applied: Signature = outcome.signature
        self._failed: Signature | None = None  # the files as they were when they last failed to load
        self._pending: Signature | None = None  # a change seen at the last check, read if still at the next
        self._current = outcome.context  # makes the new TLS connections
        self._front = None if outcome.context is None else SwitchingContext(self._in_force)
        self._header_hook = webguard.header_hook(lambda: self._config)
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self.checks = 0  # checks made, changed files or not
        self.reloads = 0  # changes put in force since the start
        self.failures = 0  # changes refused
        self.last_reload_successful = True
        self.last_success_time = time.time()

    # -- what the server uses

    @property
    def config(self) -> WebConfig:
        """The config in force now."""
        return self._config

    @property
    def ssl_context(self) -> ssl.SSLContext | None:
        """The listener's context (None for plain HTTP): the same object for the process' lifetime, whose
        connections are made by the context in force."""
        return self._front

    def middlewares(self, bearer_paths: tuple[str, ...] = ()) -> list[Middleware]:
        """The request guard for `create_app(..., middlewares=...)`, enforcing the config in force on each
        request (present even when the config now enforces nothing, since a reload may add users)."""
        return [webguard.middleware(lambda: self._config, bearer_paths)]

    async def add_headers(self, request: web.Request, response: web.StreamResponse) -> None:
        """For `app.on_response_prepare`: the headers in force on every response, streamed ones (/metrics)
        included, which the request guard alone cannot reach (see webguard.header_hook())."""
        await self._header_hook(request, response)

    def register(self, registry: CollectorRegistry) -> None:
        """Exports `tencentcloud_exporter_web_config_last_reload_*` in `registry`."""
        registry.register(_ReloadCollector(self))

    def _in_force(self) -> ssl.SSLContext:
        assert self._current is not None  # only called when serving TLS
        return self._current

    # -- checking

    async def start(self) -> None:
        """Starts checking the files every `interval` on the running loop."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="web-config-reloader")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def __aenter__(self) -> WebConfigReloader:
        await self.start()
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    async def _run(self) -> None:
        reported = False
        while True:
            await asyncio.sleep(self.interval)  # the polling period, not a wait for something to happen
            try:
                await self.check()
            except Exception:  # a bug: keep the config in force and keep checking, but say so once
                if not reported:
                    log.exception(
                        "checking the web config files failed", extra={"fields": {"web_config": self.source}}
                    )
                reported = True
            else:
                reported = False

    async def check(self) -> bool:
        """One check: reads the files if they changed and have been still since the previous check; True
        when a new config was put in force."""
        async with self._lock:
            self.checks += 1
            signature = await asyncio.to_thread(_signature, self._watched)
            if signature in (self._applied, self._failed):
                self._pending = None
                return False
            if signature != self._pending:
                self._pending = signature  # changed: read once still, so half-copied files are not read
                return False
            self._pending = None
            outcome = await asyncio.to_thread(self._read, signature, self._watched)
            return self._apply(outcome)

    async def reload(self) -> bool:
        """Reads the files now, changed or not (for a SIGHUP, say); True when the config was put in force."""
        async with self._lock:
            signature = await asyncio.to_thread(_signature, self._watched)
            outcome = await asyncio.to_thread(self._read, signature, self._watched)
            return self._apply(outcome)

    def _read(self, before: Signature, watched: tuple[Path, ...]) -> _Outcome:
        """Reads and validates the files (in a worker thread: file I/O and certificate parsing)."""
        try:
            document = read_yaml(self.path, WebConfigError)
        except WebConfigError as exc:
            return _Outcome(before, watched, problems=tuple(exc.problems))
        base = self.path.parent
        watched = (self.path, *dict.fromkeys(named_files(document, base)))
        try:
            config, context = build_web_config(document, self.source, base)
        except WebConfigError as exc:
            config, context, problems = None, None, tuple(exc.problems)
        except Exception as exc:  # a bug, not the file's fault: keep serving, say what
            config, context = None, None
            problems = (f"{self.source}: cannot load the web config ({type(exc).__name__})",)
        else:
            problems = ()
        # A file newly named is taken as it is now; the others as they were before the reading, so a change
        # made while they were read is read again at the next check.
        after = _signature(path for path in watched if path not in before)
        signature = {path: before[path] if path in before else after[path] for path in watched}
        return _Outcome(signature, watched, config, context, problems)

    def _apply(self, outcome: _Outcome) -> bool:
        """Puts a reading in force, on the event loop, or keeps the config in force and says why."""
        self._watched = outcome.watched
        problems, config = list(outcome.problems), outcome.config
        if config is not None and (config.tls is None) != (self._config.tls is None):
            now, turning = ("HTTPS", "off") if self._config.tls is not None else ("plain HTTP", "on")
            problems.append(
                f"{self.source}: tls_server_config: turning TLS {turning} needs a restart "
                f"(the listener serves {now})"
            )
        if problems or config is None:
            self._failed = outcome.signature
            self.failures += 1
            self.last_reload_successful = False
            log.error(
                "web config reload failed; keeping the running web config",
                extra={"fields": {"web_config": self.source, "error": "\n".join(problems)}},
            )
            return False
        previous = self._config
        if outcome.context is not None:
            self._current = outcome.context  # makes the next TLS connection
        self._config = config
        self._applied, self._failed = outcome.signature, None
        self.reloads += 1
        self.last_reload_successful = True
        self.last_success_time = time.time()
        for warning in config.warnings:
            if warning not in previous.warnings:
                log.warning(warning)
        log.info("web config reloaded", extra={"fields": summary(config)})
        return True


class _ReloadCollector:
    def __init__(self, reloader: WebConfigReloader) -> None:
        self._reloader = reloader

    def collect(self) -> Iterable[Metric]:
        r, n = self._reloader, "tencentcloud_exporter_web_config_last_reload_"
        yield GaugeMetricFamily(
            n + "successful",
            "1 if the last reload of --web.config.file worked",
            int(r.last_reload_successful),
        )
        yield GaugeMetricFamily(
            n + "success_timestamp_seconds", "When --web.config.file was last loaded", r.last_success_time
        )
