"""An account whose credential source failed when it was opened: retried in the background with backoff.

A failing account is that account's problem: the daemon starts (or reloads) with the others, and this
provider stands in for the failing one until its chain gives keys. Until then `get()` raises
CredentialsError saying why, so each poll of the account ends as `Exporter.CredentialsUnavailable`
(counted and backed off like any error) and nothing else waits for it. Once the chain opens, this provider
hands out that chain's keys, as if it had opened at start.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable

from exporter.credentials.base import CredentialProvider, CredentialsError
from exporter.credentials.expiring import ExpiringProvider
from exporter.credentials.signing import Credentials

# Logged as the daemon, like the other lines about its accounts.
log = logging.getLogger("exporter.daemon")

RETRY_FIRST = 1.0  # seconds before the first retry; doubled after each failure
RETRY_MOST = 300.0  # the longest wait between two tries


class PendingProvider:
    """Opens an account's chain again with `opener` after `first` seconds, doubling the wait after each
    failure up to `most`, until it succeeds; `on_failure` is called for each failed try (and for the
    renewals of the chain's temporary keys, once it has opened)."""

    def __init__(
        self,
        account: str,
        where: str,
        opener: Callable[[], Awaitable[CredentialProvider]],
        error: CredentialsError,
        on_failure: Callable[[], None],
        *,
        first: float = RETRY_FIRST,
        most: float = RETRY_MOST,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._account = account
        self._where = where
        self._opener = opener
        self._on_failure = on_failure
        self._first, self._most = first, most
        self._clock = clock
        self._delay = first
        self._next_try = clock() + first
        self._provider: CredentialProvider | None = None
        self.error = str(error)
        self.failures = 1
        self._closed = False
        self._log_failure()
        self._task: asyncio.Task[None] | None = asyncio.create_task(
            self._retry(), name=f"credentials-retry-{account}"
        )

    @property
    def source(self) -> str:
        if self._provider is not None:
            return self._provider.source
        return f"{self._where} (no credentials yet, retrying)"

    @property
    def identity(self) -> str:
        # Unique until the chain opens: no quota is shared with an account that has no keys.
        return self._provider.identity if self._provider is not None else f"pending:{self._where}"

    @property
    def opened(self) -> bool:
        return self._provider is not None

    @property
    def has_keys(self) -> bool:
        provider = self._provider
        if provider is None:
            return False
        return provider.has_keys if isinstance(provider, ExpiringProvider) else True

    async def get(self) -> Credentials:
        if self._provider is not None:
            return await self._provider.get()
        wait = max(0.0, self._next_try - self._clock())
        raise CredentialsError(f"no credentials yet (next try in {wait:.0f}s): {self.error}")

    async def _retry(self) -> None:
        while self._provider is None:
            await asyncio.sleep(max(0.0, self._next_try - self._clock()))
            try:
                provider = await self._opener()
            except CredentialsError as exc:
                self.error, self.failures = str(exc), self.failures + 1
                self._delay = min(self._delay * 2, self._most)
                self._next_try = self._clock() + self._delay
                self._on_failure()
                self._log_failure()
                continue
            except Exception:  # a bug must not end the retries unseen
                log.exception("opening credentials crashed", extra={"fields": {"account": self._account}})
                self._delay = min(self._delay * 2, self._most)
                self._next_try = self._clock() + self._delay
                continue
            if self._closed:  # closed while the chain was opening
                await provider.close()
                return
            if isinstance(provider, ExpiringProvider):
                provider.on_failure(self._on_failure)
            self._provider, self.error = provider, ""
            fields = {"account": self._account, "credentials": provider.source, "failures": self.failures}
            log.info("credentials available after retrying", extra={"fields": fields})

    def _log_failure(self) -> None:
        fields = {
            "account": self._account,
            "for": self._where,
            "error": self.error,
            "retry_in": f"{self._delay:g}s",
            "failures": self.failures,
        }
        log.warning(
            "no credentials for this account; its tasks wait, the others are polled", extra={"fields": fields}
        )

    async def close(self) -> None:
        self._closed = True
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        provider, self._provider = self._provider, None
        if provider is not None:
            await provider.close()
