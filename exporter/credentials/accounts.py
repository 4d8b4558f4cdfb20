"""Each account's credential provider: opened from the config, replaced on reload where the account's
`credentials:` section changed, and closed once, by the one owner of them all.

An account whose section cannot give keys whatever happens (check_chain: half a key pair, no source at all)
stops the start or the reload; one whose chain fails to open (STS or the metadata service unreachable, a
token file missing) is that account's problem: a PendingProvider stands in for it and retries with backoff,
while the other accounts are polled. Failed tries (and failed renewals of temporary keys) are counted per
account for /metrics, and which accounts have no keys now is asked by /-/ready.

A provider given from outside (demo mode, tests) serves every account and is closed with the rest.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Iterable, Mapping

from exporter.config.parser import AccountConfig, Config
from exporter.credentials.chain import CredentialProvider, CredentialsError, check_chain, open_provider
from exporter.credentials.expiring import ExpiringProvider
from exporter.credentials.pending import RETRY_FIRST, RETRY_MOST, PendingProvider

# Logged as the daemon: these lines are about its accounts.
log = logging.getLogger("exporter.daemon")


class AccountProviders:
    def __init__(
        self,
        adopted: CredentialProvider | None,
        env: Mapping[str, str],
        retry: tuple[float, float] = (RETRY_FIRST, RETRY_MOST),
    ) -> None:
        """`retry`: the first and the longest wait between tries of an account whose chain failed."""
        self._adopted = adopted
        self._env = env
        self.retry = retry
        self.current: dict[str, CredentialProvider] = {}
        self._config: Config | None = None
        # Failed tries to get each account's keys (opening its chain, renewing temporary keys): only grows.
        self.failures: dict[str, int] = {}

    def has_keys(self, account: str) -> bool:
        """Whether the account's keys are at hand now (False while its chain is retried or its temporary
        keys have expired without renewal)."""
        provider = self.current.get(account)
        if provider is None:
            return False
        if isinstance(provider, PendingProvider | ExpiringProvider):
            return provider.has_keys
        return True

    def unavailable(self) -> dict[str, str]:
        """Each account without keys now, with why (its last error, secret-free)."""
        found = {}
        for account, provider in self.current.items():
            if not self.has_keys(account):
                error = provider.error if isinstance(provider, PendingProvider) else ""
                found[account] = error or "temporary keys expired and not renewed"
        return found

    def check(self, config: Config) -> None:
        """check_chain() of every account, without the network: raises CredentialsError for the first
        account whose section no retry can mend (open() checks again)."""
        if self._adopted is None:
            for account in config.accounts:
                where = config.where(account)
                check_chain(account.credentials, self._env, where=where, use_env=account.use_env)

    async def open(self, config: Config) -> None:
        """A provider per account of `config`; raises CredentialsError naming the account's section."""
        self.current, self._config = await self._open(config, {}), config

    async def prepare(self, config: Config) -> dict[str, CredentialProvider]:
        """Providers for a reloaded `config`, those of unchanged accounts kept (with their cached keys);
        nothing changes until commit(). Raises CredentialsError, having closed what it opened."""
        before = {a.name: a for a in self._config.accounts} if self._config else {}
        kept = {
            a.name: self.current[a.name]
            for a in config.accounts
            if _same(before.get(a.name), a) and a.name in self.current
        }
        return await self._open(config, kept)

    def commit(self, config: Config, providers: dict[str, CredentialProvider]) -> list[CredentialProvider]:
        """Makes the prepared providers current; returns those no longer used, for retire() once nothing
        uses them any more."""
        in_use = {id(p) for p in providers.values()}
        retired = [p for p in self.current.values() if id(p) not in in_use]
        self.current, self._config = providers, config
        return retired

    async def retire(self, providers: list[CredentialProvider]) -> None:
        await _close_all(providers)

    async def close(self) -> None:
        providers, self.current = self.current, {}
        await _close_all([*providers.values(), *([self._adopted] if self._adopted else [])])

    async def _open(
        self, config: Config, keep: Mapping[str, CredentialProvider]
    ) -> dict[str, CredentialProvider]:
        providers = dict(keep)
        opened: list[CredentialProvider] = []
        try:
            for account in config.accounts:
                if account.name in providers:
                    continue
                if self._adopted is not None:
                    providers[account.name] = self._adopted
                    continue
                provider = await self._open_account(config, account)
                opened.append(provider)
                providers[account.name] = provider
        except BaseException:
            await _close_all(opened)
            raise
        self._warn_shared_identities(providers)
        return providers

    async def _open_account(self, config: Config, account: AccountConfig) -> CredentialProvider:
        """The account's chain; raises CredentialsError only for what no retry can mend (check_chain)."""
        where, name = config.where(account), account.name
        check_chain(account.credentials, self._env, where=where, use_env=account.use_env)
        self.failures.setdefault(name, 0)

        def failed() -> None:
            self.failures[name] = self.failures.get(name, 0) + 1

        def opener() -> Awaitable[CredentialProvider]:
            return open_provider(account.credentials, self._env, where=where, use_env=account.use_env)

        try:
            provider = await opener()
        except CredentialsError as exc:
            failed()
            first, most = self.retry
            return PendingProvider(name, where, opener, exc, failed, first=first, most=most)
        if isinstance(provider, ExpiringProvider):
            provider.on_failure(failed)
        return provider

    def _warn_shared_identities(self, providers: Mapping[str, CredentialProvider]) -> None:
        """Two accounts whose chains end at one identity (the same CVM role, profile section or role) are one
        sub-account to Tencent: each of their buckets would spend the whole of one quota."""
        first: dict[str, str] = {}
        for name, provider in providers.items():
            if provider is self._adopted:
                continue
            other = first.setdefault(provider.identity, name)
            if other != name:
                log.warning(
                    "two accounts use the same credentials; Tencent counts one quota for them",
                    extra={"fields": {"accounts": f"{other}, {name}", "credentials": provider.source}},
                )


def _same(old: AccountConfig | None, new: AccountConfig) -> bool:
    return old is not None and (old.credentials, old.use_env) == (new.credentials, new.use_env)


async def _close_all(providers: Iterable[CredentialProvider]) -> None:
    """Closes each provider once (accounts may share one)."""
    closed: set[int] = set()
    for provider in providers:
        if id(provider) not in closed:
            closed.add(id(provider))
            await provider.close()
