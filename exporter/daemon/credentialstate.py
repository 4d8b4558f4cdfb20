"""Each account's credentials on /metrics: whether its keys are at hand, and how often getting them failed.

Read from the account providers at scrape time, so a reload's new accounts show at once and a removed
account's series go.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from exporter.credentials.accounts import AccountProviders


class CredentialsCollector(Collector):
    def __init__(self, accounts: AccountProviders, names: Callable[[], Sequence[str]]) -> None:
        self._accounts = accounts
        self._names = names

    def collect(self) -> Iterator[Metric]:
        available = GaugeMetricFamily(
            "tencentcloud_exporter_credentials_available",
            "Whether the account's API keys are at hand (1) or not (0: its credential source failed and is "
            "retried with backoff, or its temporary keys expired without renewal; its polls fail with "
            "Exporter.CredentialsUnavailable while the other accounts are polled).",
            labels=("account",),
        )
        failures = CounterMetricFamily(
            "tencentcloud_exporter_credentials_failures",
            "Failed tries to get the account's API keys: opening its credential chain (at start, on reload "
            "and each retry) and renewing its temporary keys.",
            labels=("account",),
        )
        started = bool(self._accounts.current)
        for name in self._names():
            if started:
                available.add_metric([name], 1.0 if self._accounts.has_keys(name) else 0.0)
            failures.add_metric([name], float(self._accounts.failures.get(name, 0)))
        yield available
        yield failures
