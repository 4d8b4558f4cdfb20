"""Temporary keys that expire, and their renewal ahead of expiry; HTTP and JSON helpers their sources share.

A provider hands out the current key pair on every call, so sources whose keys expire refresh them without
the scheduler knowing: ahead of expiry in the background (a poll never waits for it while the old keys are
still valid), one refresh at a time however many polls ask, and on failure the old keys stay in use until
they really expire.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp

from exporter.credentials.base import CredentialsError, clip
from exporter.credentials.bodies import ACCEPT_ENCODING, AnswerTooLarge, AnswerUnreadable, read_limited
from exporter.credentials.signing import Credentials

log = logging.getLogger("exporter.credentials")  # one logger for the whole chain, as before the split

# Temporary keys are replaced this long before they expire (at least; 10% of a long lifetime, at most half
# of a short one). The API rejects requests whose timestamp is more than 300 s off, so 5 minutes also covers
# a request signed just before the switch.
REFRESH_MARGIN = 300.0
# The most an answer of the metadata service or STS may weigh, as sent and inflated: a role name or a set of
# temporary keys is well under 4 KiB.
ANSWER_BYTES = 64 * 1024


@dataclass(frozen=True)
class _Lease:
    credentials: Credentials
    expires_at: float  # Unix time
    refresh_at: float


def refresh_time(fetched_at: float, expires_at: float) -> float:
    """When keys valid from `fetched_at` to `expires_at` are replaced."""
    lifetime = max(0.0, expires_at - fetched_at)
    return expires_at - min(max(REFRESH_MARGIN, lifetime * 0.1), lifetime / 2)


class ExpiringProvider:
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
        self._on_failure: list[Callable[[], None]] = []
        self._closed = False

    @property
    def source(self) -> str:
        return self._source

    @property
    def identity(self) -> str:
        return self._identity

    @property
    def has_keys(self) -> bool:
        """Whether keys that have not expired are at hand now."""
        return self._lease is not None and self._clock() < self._lease.expires_at

    def on_failure(self, callback: Callable[[], None]) -> None:
        """`callback` is called after each failed renewal (the account's failure counter)."""
        self._on_failure.append(callback)

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
            log.exception("credentials refresh crashed", extra={"fields": {"credentials": self._source}})

    async def _attempt(self) -> None:
        """One fetch, with the lock held; failures are recorded, not raised."""
        fetched_at = self._clock()
        try:
            credentials, expires_at = await self._fetch()
            self._store(credentials, fetched_at, expires_at)
        except CredentialsError as exc:
            self._failed_at = self._clock()
            self._last_error = str(exc)
            for callback in self._on_failure:
                callback()
            lease = self._lease
            left = max(0.0, lease.expires_at - self._failed_at) if lease is not None else 0.0
            log.warning(
                "credentials refresh failed",
                extra={
                    "fields": {
                        "credentials": self._source,
                        "error": self._last_error,
                        "current_keys_valid_for": f"{left:.0f}s",
                        "retry_in": f"{self._retry_delay:g}s",
                    }
                },
            )
            return
        log.info(
            "credentials refreshed",
            extra={
                "fields": {"credentials": self._source, "expires_in": f"{expires_at - self._clock():.0f}s"}
            },
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


async def http(
    session: aiohttp.ClientSession,
    method: str,
    url: str,
    seconds: float,
    what: str,
    **kwargs: Any,
) -> tuple[int, bytes]:
    """The status and body of one request to a credential source; its answer is at most ANSWER_BYTES."""
    headers = {**kwargs.pop("headers", {}), "Accept-Encoding": ACCEPT_ENCODING}
    try:
        async with session.request(
            method,
            url,
            timeout=aiohttp.ClientTimeout(total=seconds),
            allow_redirects=False,
            auto_decompress=False,  # inflated by read_limited, within the limit
            headers=headers,
            **kwargs,
        ) as response:
            return response.status, await read_limited(response, ANSWER_BYTES)
    except (AnswerTooLarge, AnswerUnreadable) as exc:
        raise CredentialsError(clip(f"{what}: {exc}")) from None
    except TimeoutError:
        raise CredentialsError(f"{what}: no answer within {seconds:g}s") from None
    except (aiohttp.ClientError, OSError) as exc:
        raise CredentialsError(clip(f"{what}: {type(exc).__name__}: {exc}")) from None


def json_object(body: bytes, what: str) -> dict[str, Any]:
    try:
        document = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise CredentialsError(f"{what}: the answer is not JSON") from None
    if not isinstance(document, dict):
        raise CredentialsError(f"{what}: the answer is not a JSON object")
    return document


def temporary_keys(document: Mapping[str, Any], expired: object, what: str) -> tuple[Credentials, float]:
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
