"""Where the API keys come from, in the official SDKs' order.

1. the config file (`credentials.secret_id/secret_key/token`),
2. the environment (`TENCENTCLOUD_SECRET_ID/SECRET_KEY/SESSION_TOKEN`),
3. a profile file (INI, `secret_id`/`secret_key` in `[default]`): `credentials.profile`, else
   `$TENCENTCLOUD_CREDENTIALS_FILE`, else `~/.tencentcloud/credentials`, else `/etc/tencentcloud/credentials`,
4. the CAM role of the CVM instance, from the metadata service (temporary keys with a token),

and, when `credentials.role_arn` is set, STS AssumeRole signed with the keys the chain found.

A provider hands out the current key pair on every call, so sources whose keys expire refresh them without
the scheduler knowing: ahead of expiry in the background (a poll never waits for it while the old keys are
still valid), one refresh at a time however many polls ask, and on failure the old keys stay in use until
they really expire. The profile file is re-read when it changes, so rotating it needs no restart. File
access (stat and read) runs in a worker thread, HTTP on the event loop: nothing here blocks the loop.

No key, token or profile line ever reaches a log record, an exception message or a repr.
"""

from __future__ import annotations

import asyncio
import configparser
import contextlib
import json
import logging
import os
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

import aiohttp

from exporter import __version__
from exporter.config import Config
from exporter.signing import Credentials, sign_headers

log = logging.getLogger(__name__)

ENV_SECRET_ID = "TENCENTCLOUD_SECRET_ID"
ENV_SECRET_KEY = "TENCENTCLOUD_SECRET_KEY"
ENV_TOKEN = "TENCENTCLOUD_SESSION_TOKEN"
ENV_CREDENTIALS_FILE = "TENCENTCLOUD_CREDENTIALS_FILE"  # the Go SDK's override of the profile path

HOME_PROFILE = Path(".tencentcloud") / "credentials"
SYSTEM_PROFILE = Path("/etc/tencentcloud/credentials")

STS_SERVICE = "sts"
STS_ACTION = "AssumeRole"
STS_VERSION = "2018-08-13"
STS_REGION = "ap-guangzhou"  # STS is global; the SDKs send this region

# Temporary keys are replaced this long before they expire (at least; 10% of a long lifetime, at most half
# of a short one). The API rejects requests whose timestamp is more than 300 s off, so 5 minutes also covers
# a request signed just before the switch.
REFRESH_MARGIN = 300.0
_ROLE_NAME = re.compile(r"[A-Za-z0-9_+=,.@-]{1,128}")
_MAX_TEXT = 200
_USER_AGENT = f"tencentcloud-task-exporter/{__version__}"


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


def _pair(secret_id: str, secret_key: str, token: str, where: str) -> Credentials | None:
    if secret_id and secret_key:
        return Credentials(secret_id, secret_key, token)
    if secret_id or secret_key:
        missing = "secret_key" if secret_id else "secret_id"
        raise CredentialsError(f"{where}: {missing} is empty while the other half of the key pair is set")
    return None


def _clip(text: str) -> str:
    return text if len(text) <= _MAX_TEXT else text[:_MAX_TEXT] + "..."


# ------------------------------------------------------------------------------------------ profile file


@dataclass(frozen=True)
class _ProfileRead:
    signature: tuple[int, int, int] | None  # (mtime_ns, size, inode); None: the file does not exist
    credentials: Credentials | None = None
    reason: str = ""  # why there are no credentials, when the file exists


def _unquote(value: str) -> str:
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
        return value[1:-1].strip()
    return value


def _read_profile(path: Path, section: str, known: tuple[int, int, int] | None) -> _ProfileRead | None:
    """Runs in a worker thread. None when the file is unchanged since `known`.

    Raises CredentialsError for a file that exists but is unusable; the message never quotes a line of it.
    """
    try:
        stat = path.stat()
    except FileNotFoundError:
        return _ProfileRead(None)
    except OSError as exc:
        raise CredentialsError(
            f"profile file {path}: cannot stat: {exc.strerror or type(exc).__name__}"
        ) from None
    signature = (stat.st_mtime_ns, stat.st_size, stat.st_ino)
    if signature == known:
        return None
    try:
        text = path.read_bytes().decode("utf-8-sig")
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
        return _ProfileRead(signature, reason=f"no [{section}] section")
    values = parser[section]
    found = _pair(
        _unquote(values.get("secret_id", "")),
        _unquote(values.get("secret_key", "")),
        "",
        f"profile file {path} [{section}]",
    )
    if found is None:
        return _ProfileRead(signature, reason=f"no secret_id/secret_key in [{section}]")
    return _ProfileRead(signature, found)


class ProfileProvider:
    """Keys from an INI profile file, re-read (in a worker thread) when its mtime, size or inode changes."""

    def __init__(
        self,
        path: Path,
        section: str,
        first: _ProfileRead,
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
        return f"profile:{self._path}"

    async def get(self) -> Credentials:
        # At most one check per interval, and no poll waits on one: while it runs, the current keys serve.
        if self._clock() - self._checked_at < self._check_interval or self._lock.locked():
            return self._credentials
        async with self._lock:
            self._checked_at = self._clock()
            try:
                read = await asyncio.to_thread(_read_profile, self._path, self._section, self._signature)
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
                log.info("profile file changed, new keys loaded", extra={"fields": {"source": self.source}})
        return self._credentials

    def _keep(self, problem: str) -> None:
        # A file half-way through being rewritten must not stop polling: keep the keys read last.
        if problem == self._problem:
            return  # said once, not every second
        self._problem = problem
        log.warning(
            "profile file unusable, keeping the keys read before",
            extra={"fields": {"source": self.source, "error": problem}},
        )

    async def close(self) -> None:
        return None


# ------------------------------------------------------------------------------- keys that expire


@dataclass(frozen=True)
class _Lease:
    credentials: Credentials
    expires_at: float  # Unix time
    refresh_at: float


def refresh_time(fetched_at: float, expires_at: float) -> float:
    """When keys valid from `fetched_at` to `expires_at` are replaced."""
    lifetime = max(0.0, expires_at - fetched_at)
    return expires_at - min(max(REFRESH_MARGIN, lifetime * 0.1), lifetime / 2)


class _ExpiringProvider:
    """Temporary keys that are replaced ahead of their `ExpiredTime`.

    `get()` is cheap while the keys are fresh. Inside the refresh window it returns the current keys and
    starts one background refresh; only once the keys have expired does a caller wait, and then all callers
    share one fetch. After a failed fetch the next try waits `retry_delay`, so a broken source is not
    hammered at the polling rate.
    """

    def __init__(
        self,
        source: str,
        identity: str,
        clock: Callable[[], float],
        retry_delay: float,
    ) -> None:
        self._source = source
        self._identity = identity
        self._clock = clock
        self._retry_delay = retry_delay
        self._lease: _Lease | None = None
        self._lock = asyncio.Lock()
        self._background: asyncio.Task[None] | None = None
        self._failed_at: float | None = None
        self._last_error = ""
        self._closers: list[Callable[[], Awaitable[None]]] = []
        self._closed = False

    @property
    def source(self) -> str:
        return self._source

    @property
    def identity(self) -> str:
        return self._identity

    async def _fetch(self) -> tuple[Credentials, float]:
        """New keys and their expiry (Unix time); raises CredentialsError with a secret-free message."""
        raise NotImplementedError

    async def prime(self) -> None:
        """The first fetch, at start: raises CredentialsError so the caller can report the source."""
        async with self._lock:
            fetched_at = self._clock()
            credentials, expires_at = await self._fetch()
            self._store(credentials, fetched_at, expires_at)

    async def get(self) -> Credentials:
        lease, now = self._lease, self._clock()
        if lease is not None and now < lease.expires_at:
            if now >= lease.refresh_at and self._may_try(now) and not self._refreshing():
                self._background = asyncio.create_task(self._refresh_ahead(), name="credentials-refresh")
            return lease.credentials
        async with self._lock:
            lease = self._lease
            if (lease is None or self._clock() >= lease.expires_at) and self._may_try(self._clock()):
                await self._attempt()
                lease = self._lease
            if lease is not None and self._clock() < lease.expires_at:
                return lease.credentials
        raise CredentialsError(f"{self._source}: temporary keys expired and not renewed: {self._last_error}")

    def _refreshing(self) -> bool:
        return self._background is not None and not self._background.done()

    def _may_try(self, now: float) -> bool:
        return self._failed_at is None or now - self._failed_at >= self._retry_delay

    async def _refresh_ahead(self) -> None:
        try:
            async with self._lock:
                lease = self._lease
                if lease is None or self._clock() >= lease.refresh_at:
                    await self._attempt()
        except Exception:  # a bug must not vanish in an unobserved task
            log.exception("credentials refresh crashed", extra={"fields": {"source": self._source}})

    async def _attempt(self) -> None:
        """One fetch, with the lock held; failures are recorded, not raised."""
        fetched_at = self._clock()
        try:
            credentials, expires_at = await self._fetch()
            self._store(credentials, fetched_at, expires_at)
        except CredentialsError as exc:
            self._failed_at = self._clock()
            self._last_error = str(exc)
            lease = self._lease
            left = max(0.0, lease.expires_at - self._failed_at) if lease is not None else 0.0
            log.warning(
                "credentials refresh failed",
                extra={
                    "fields": {
                        "source": self._source,
                        "error": self._last_error,
                        "current_keys_valid_for": f"{left:.0f}s",
                        "retry_in": f"{self._retry_delay:g}s",
                    }
                },
            )
            return
        log.info(
            "credentials refreshed",
            extra={"fields": {"source": self._source, "expires_in": f"{expires_at - self._clock():.0f}s"}},
        )

    def _store(self, credentials: Credentials, fetched_at: float, expires_at: float) -> None:
        if expires_at <= self._clock():
            raise CredentialsError(
                f"{self._source}: the keys received have already expired (ExpiredTime {expires_at:.0f}); "
                "is the system clock right?"
            )
        self._lease = _Lease(credentials, expires_at, refresh_time(fetched_at, expires_at))
        self._failed_at = None
        self._last_error = ""

    def on_close(self, closer: Callable[[], Awaitable[None]]) -> None:
        self._closers.append(closer)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        task, self._background = self._background, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for closer in self._closers:
            await closer()


async def _http(
    session: aiohttp.ClientSession,
    method: str,
    url: str,
    seconds: float,
    what: str,
    **kwargs: Any,
) -> tuple[int, bytes]:
    try:
        async with session.request(
            method, url, timeout=aiohttp.ClientTimeout(total=seconds), allow_redirects=False, **kwargs
        ) as response:
            return response.status, await response.read()
    except TimeoutError:
        raise CredentialsError(f"{what}: no answer within {seconds:g}s") from None
    except (aiohttp.ClientError, OSError) as exc:
        raise CredentialsError(_clip(f"{what}: {type(exc).__name__}: {exc}")) from None


async def discover_role(session: aiohttp.ClientSession, url: str, seconds: float) -> str:
    """The CAM role bound to this CVM instance, as the metadata service lists it."""
    what = f"metadata service {url}"
    status, body = await _http(session, "GET", url, seconds, what)
    if status == 404:
        raise CredentialsError(f"{what}: no CAM role is bound to this instance (HTTP 404)")
    if status != 200:
        raise CredentialsError(f"{what}: HTTP status {status}")
    lines = body.decode("utf-8", "replace").split()
    if not lines or not _ROLE_NAME.fullmatch(lines[0]):
        raise CredentialsError(f"{what}: the answer is not a CAM role name")
    return lines[0]


def _json_object(body: bytes, what: str) -> dict[str, Any]:
    try:
        document = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise CredentialsError(f"{what}: the answer is not JSON") from None
    if not isinstance(document, dict):
        raise CredentialsError(f"{what}: the answer is not a JSON object")
    return document


def _keys(document: Mapping[str, Any], expired: object, what: str) -> tuple[Credentials, float]:
    values = [document.get(name) for name in ("TmpSecretId", "TmpSecretKey", "Token")]
    missing = [
        name
        for name, value in zip(("TmpSecretId", "TmpSecretKey", "Token"), values, strict=True)
        if not isinstance(value, str) or not value
    ]
    if missing:
        raise CredentialsError(f"{what}: the answer lacks {', '.join(missing)}")
    if not isinstance(expired, int | float) or isinstance(expired, bool):
        raise CredentialsError(f"{what}: the answer has no numeric ExpiredTime")
    secret_id, secret_key, token = (str(v) for v in values)
    return Credentials(secret_id, secret_key, token), float(expired)


class CvmRoleProvider(_ExpiringProvider):
    """Temporary keys of the instance's CAM role, from `<metadata_url><role>`."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        metadata_url: str,
        role: str,
        discovered: bool,
        clock: Callable[[], float],
        timeout: float,
        retry_delay: float,
    ) -> None:
        super().__init__(f"CVM role {role} (metadata service)", f"cvm-role:{role}", clock, retry_delay)
        self._session = session
        self._url = metadata_url
        self._role = role
        self._discovered = discovered
        self.timeout = timeout

    async def _fetch(self) -> tuple[Credentials, float]:
        what = f"metadata service {self._url}{self._role}"
        status, body = await _http(self._session, "GET", self._url + self._role, self.timeout, what)
        if status == 404 and self._discovered:
            # The instance was given another role: follow it (the quota identity stays the first one's).
            role = await discover_role(self._session, self._url, self.timeout)
            if role != self._role:
                log.info("CVM role changed", extra={"fields": {"source": self._source, "new_role": role}})
                self._role = role
                what = f"metadata service {self._url}{role}"
                status, body = await _http(self._session, "GET", self._url + role, self.timeout, what)
        if status == 404:
            raise CredentialsError(f"{what}: no such role bound to this instance (HTTP 404)")
        if status != 200:
            raise CredentialsError(f"{what}: HTTP status {status}")
        document = _json_object(body, what)
        code = document.get("Code")
        if code != "Success":
            shown = _clip(code) if isinstance(code, str) else type(code).__name__
            raise CredentialsError(f"{what}: Code is {shown!r}, expected 'Success'")
        return _keys(document, document.get("ExpiredTime"), what)


class StsProvider(_ExpiringProvider):
    """Temporary keys of `role_arn` from STS AssumeRole, signed with the base provider's current keys."""

    def __init__(
        self,
        base: CredentialProvider,
        session: aiohttp.ClientSession,
        endpoint: str,
        role_arn: str,
        session_name: str,
        duration: int,
        clock: Callable[[], float],
        timeout: float,
        retry_delay: float,
    ) -> None:
        super().__init__(
            f"STS AssumeRole {role_arn} (base credentials: {base.source})",
            f"sts:{role_arn}",
            clock,
            retry_delay,
        )
        self._base = base
        self._session = session
        self._endpoint = endpoint.rstrip("/")
        self._role_arn = role_arn
        self._session_name = session_name
        self._duration = duration
        self.timeout = timeout
        self.on_close(base.close)

    async def _fetch(self) -> tuple[Credentials, float]:
        what = f"STS {self._endpoint} AssumeRole"
        try:
            base = await self._base.get()
        except CredentialsError as exc:
            raise CredentialsError(f"{what}: no base credentials: {exc}") from None
        payload = json.dumps(
            {
                "RoleArn": self._role_arn,
                "RoleSessionName": self._session_name,
                "DurationSeconds": self._duration,
            },
            separators=(",", ":"),
        ).encode("utf-8")
        headers = sign_headers(
            base,
            service=STS_SERVICE,
            host=urlsplit(self._endpoint).netloc,
            action=STS_ACTION,
            version=STS_VERSION,
            region=STS_REGION,
            timestamp=int(self._clock()),
            payload=payload,
        )
        status, body = await _http(
            self._session, "POST", self._endpoint + "/", self.timeout, what, data=payload, headers=headers
        )
        if status != 200:
            raise CredentialsError(f"{what}: HTTP status {status}")
        response = _json_object(body, what).get("Response")
        if not isinstance(response, dict):
            raise CredentialsError(f"{what}: the answer has no Response object")
        error = response.get("Error")
        if isinstance(error, dict):
            code, message = error.get("Code"), error.get("Message")
            code_text = _clip(code) if isinstance(code, str) else "no code"
            message_text = f": {_clip(message)}" if isinstance(message, str) and message else ""
            raise CredentialsError(f"{what}: {code_text}{message_text}")
        keys = response.get("Credentials")
        if not isinstance(keys, dict):
            raise CredentialsError(f"{what}: the answer has no Credentials object")
        return _keys(keys, response.get("ExpiredTime"), what)


# ------------------------------------------------------------------------------------------ the chain


class _Sessions:
    """HTTP sessions for the metadata service and STS, created on first use, closed with the provider.

    The metadata service is link-local and must never go through a proxy; STS may need one.
    """

    def __init__(self, given: aiohttp.ClientSession | None) -> None:
        self._given = given
        self._owned: dict[bool, aiohttp.ClientSession] = {}

    def get(self, trust_env: bool) -> aiohttp.ClientSession:
        if self._given is not None:
            return self._given
        if trust_env not in self._owned:
            self._owned[trust_env] = aiohttp.ClientSession(
                trust_env=trust_env, headers={"User-Agent": _USER_AGENT}
            )
        return self._owned[trust_env]

    async def close(self) -> None:
        owned, self._owned = self._owned, {}
        for session in owned.values():
            await session.close()


async def open_provider(
    config: Config,
    env: Mapping[str, str],
    *,
    home: Path | None = None,
    system_profile: Path | None = SYSTEM_PROFILE,
    metadata_url: str | None = None,
    session: aiohttp.ClientSession | None = None,
    clock: Callable[[], float] = time.time,
    probe_timeout: float = 1.0,
    refresh_timeout: float = 5.0,
    retry_delay: float = 10.0,
    profile_check_interval: float = 1.0,
) -> CredentialProvider:
    """The first source that yields keys (wrapped in STS AssumeRole when `role_arn` is set).

    Raises CredentialsError naming every source tried and why it gave nothing. `home` defaults to `$HOME`
    from `env` (no home profile without one); `session` (for tests) is used and left open; `clock` is Unix
    time. The metadata service gets `probe_timeout` at start, so a machine without one fails fast.
    """
    sessions = _Sessions(session)
    try:
        tried: list[str] = []
        base = await _first_source(
            config,
            env,
            tried,
            sessions,
            home=home,
            system_profile=system_profile,
            metadata_url=config.credentials.metadata_url if metadata_url is None else metadata_url,
            clock=clock,
            probe_timeout=probe_timeout,
            refresh_timeout=refresh_timeout,
            retry_delay=retry_delay,
            profile_check_interval=profile_check_interval,
        )
        c = config.credentials
        if base is None:
            after = " (credentials.role_arn needs base credentials from one of them)" if c.role_arn else ""
            raise CredentialsError(f"no Tencent Cloud credentials found; tried: {'; '.join(tried)}{after}")
        provider: CredentialProvider = base
        if c.role_arn:
            sts = StsProvider(
                base,
                sessions.get(trust_env=True),
                c.sts_endpoint,
                c.role_arn,
                c.role_session_name,
                c.role_duration,
                clock,
                refresh_timeout,
                retry_delay,
            )
            try:
                await sts.prime()
            except BaseException:
                await sts.close()
                raise
            provider = sts
        if isinstance(provider, _ExpiringProvider):
            provider.on_close(sessions.close)
        else:
            await sessions.close()
    except BaseException:
        await sessions.close()
        raise
    fields: dict[str, object] = {"source": provider.source}
    if tried:
        fields["skipped"] = "; ".join(tried)
    log.info("credentials source chosen", extra={"fields": fields})
    return provider


async def _first_source(
    config: Config,
    env: Mapping[str, str],
    tried: list[str],
    sessions: _Sessions,
    *,
    home: Path | None,
    system_profile: Path | None,
    metadata_url: str,
    clock: Callable[[], float],
    probe_timeout: float,
    refresh_timeout: float,
    retry_delay: float,
    profile_check_interval: float,
) -> CredentialProvider | None:
    c = config.credentials
    where = f"{config.source}: credentials"
    found = _pair(c.secret_id, c.secret_key, c.token, where)
    if found is not None:
        return StaticProvider(found, "config file")
    tried.append(f"{where}.secret_id/secret_key (empty or absent)")

    env_names = f"environment {ENV_SECRET_ID}/{ENV_SECRET_KEY}"
    found = _pair(env.get(ENV_SECRET_ID, ""), env.get(ENV_SECRET_KEY, ""), env.get(ENV_TOKEN, ""), env_names)
    if found is not None:
        return StaticProvider(found, "environment")
    tried.append(f"{env_names} (unset)")

    home_dir = home if home is not None else (Path(env["HOME"]) if env.get("HOME") else None)
    explicit: tuple[Path, str] | None = None
    if c.profile:
        explicit = (_expand_home(c.profile, home_dir), f"{where}.profile")
    elif env.get(ENV_CREDENTIALS_FILE):
        explicit = (_expand_home(env[ENV_CREDENTIALS_FILE], home_dir), ENV_CREDENTIALS_FILE)
    candidates: list[Path] = []
    if explicit is not None:
        candidates.append(explicit[0])
    else:
        if home_dir is not None:
            candidates.append(home_dir / HOME_PROFILE)
        else:
            tried.append(f"profile file ~/{HOME_PROFILE} (HOME unset)")
        if system_profile is not None:
            candidates.append(system_profile)
    for path in candidates:
        read = await asyncio.to_thread(_read_profile, path, c.profile_section, None)
        assert read is not None
        if read.signature is None:
            if explicit is not None:
                raise CredentialsError(f"profile file {path} (set by {explicit[1]}): file not found")
            tried.append(f"profile file {path} (not found)")
        elif read.credentials is None:
            tried.append(f"profile file {path} ({read.reason})")
        else:
            return ProfileProvider(path, c.profile_section, read, clock, profile_check_interval)

    if not c.cvm_role_enabled:
        tried.append("CVM role (metadata service disabled by credentials.cvm_role: false)")
        return None
    metadata = sessions.get(trust_env=False)
    try:
        role, discovered = c.cvm_role, False
        if not role:
            role, discovered = await discover_role(metadata, metadata_url, probe_timeout), True
        provider = CvmRoleProvider(
            metadata, metadata_url, role, discovered, clock, probe_timeout, retry_delay
        )
        await provider.prime()
    except CredentialsError as exc:
        tried.append(f"CVM role ({exc})")
        return None
    provider.timeout = refresh_timeout
    return provider


def _expand_home(text: str, home: Path | None) -> Path:
    if home is not None and (text == "~" or text.startswith("~/")):
        return home / text[2:]
    return Path(os.path.expanduser(text))
