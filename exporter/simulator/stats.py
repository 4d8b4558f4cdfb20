"""What the simulator counts: each action's requests from every caller, and each account's own.

Tencent Cloud counts an API's quota per API, access region (the endpoint host) and sub-account (secret id).
One simulator process stands for one endpoint (`Simulator(region=...)`), so the per-account counters here,
keyed by secret id and `product:Action`, are the buckets Tencent would count: what a test reads to show each
bucket's use and that none went over its quota.

Times are the simulator's `clock` readings (monotonic seconds).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

WINDOW: Final = 1.0  # quotas are "requests per second"


def count(counter: dict[str, int], key: str) -> None:
    counter[key] = counter.get(key, 0) + 1


def slide(window: deque[float], now: float) -> None:
    """Drops from the left of `window` the times a sliding second ending at `now` no longer holds."""
    while window and window[0] <= now - WINDOW:
        window.popleft()


def held(window: deque[float], now: float, slack: float = 0.0) -> int:
    """How many of a slid `window`'s times the second ending at `now` holds, shortened at its start by
    `slack` (the simulator's own recent lateness: lateness.py)."""
    cutoff = now - WINDOW + slack
    early = 0
    for moment in window:
        if moment > cutoff:
            break
        early += 1
    return len(window) - early


@dataclass
class ActionStats:
    accepted: int = 0
    throttled: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    faults: dict[str, int] = field(default_factory=dict)
    max_in_window: int = 0
    first_accepted: float | None = None
    last_accepted: float | None = None
    # Accepted requests from every caller, to report the busiest second the server saw.
    window: deque[float] = field(default_factory=deque)

    def accept(self, now: float, slack: float = 0.0) -> None:
        """Counts one request the quota let through at `now`; the busiest second is judged as the quota is,
        `slack` shorter (lateness.py)."""
        self.accepted += 1
        self.first_accepted = now if self.first_accepted is None else self.first_accepted
        self.last_accepted = now
        slide(self.window, now)
        self.window.append(now)
        self.max_in_window = max(self.max_in_window, held(self.window, now, slack))

    def snapshot(self) -> dict[str, Any]:
        return {
            "accepted": self.accepted,
            "throttled": self.throttled,
            "errors": dict(self.errors),
            "faults": dict(self.faults),
            "max_in_window": self.max_in_window,
            "first_accepted": self.first_accepted,
            "last_accepted": self.last_accepted,
        }


@dataclass
class AccountStats(ActionStats):
    """One account's requests to one action at this endpoint: one quota bucket as Tencent counts it.

    `max_in_window` is the most requests of this account accepted within any sliding second, so it never
    exceeds `quota`; `foreign` counts status requests for another account's task (answered as unknown),
    `wrong_region` requests refused for their region and status requests for one of the account's tasks of
    another region (answered as unknown). `history` keeps the accept times of the last `history_seconds`.
    """

    quota: float = 0.0
    foreign: int = 0
    wrong_region: int = 0
    history_seconds: float = 120.0
    history: deque[float] = field(default_factory=deque)

    def accept(self, now: float, slack: float = 0.0) -> None:
        super().accept(now, slack)
        self.history.append(now)
        while self.history and self.history[0] < now - self.history_seconds:
            self.history.popleft()

    def accepted_in(self, start: float, end: float) -> int:
        """Requests accepted at `start <= t <= end`; only the last `history_seconds` are remembered."""
        return sum(1 for t in self.history if start <= t <= end)

    def snapshot(self) -> dict[str, Any]:
        return {
            "accepted": self.accepted,
            "throttled": self.throttled,
            "errors": dict(self.errors),
            "max_in_window": self.max_in_window,
            "first_accepted": self.first_accepted,
            "last_accepted": self.last_accepted,
            "foreign": self.foreign,
            "wrong_region": self.wrong_region,
            "quota": self.quota,
        }


class Accounts:
    """Every account's stats, by secret id, then `product:Action` (the bare action is never used here)."""

    def __init__(self, history_seconds: float = 120.0) -> None:
        if history_seconds <= 0:
            raise ValueError(f"history_seconds must be > 0, got {history_seconds}")
        self.history_seconds = history_seconds
        self._stats: dict[str, dict[str, AccountStats]] = {}

    def entry(self, secret_id: str, product: str, action: str, quota: float) -> AccountStats:
        by_action = self._stats.setdefault(secret_id, {})
        key = f"{product}:{action}"
        found = by_action.get(key)
        if found is None:
            found = by_action[key] = AccountStats(quota=quota, history_seconds=self.history_seconds)
        return found

    def accepted_in(self, secret_id: str, product: str, action: str, start: float, end: float) -> int:
        """Requests of `secret_id` to `product`'s `action` accepted at `start <= t <= end` (clock time)."""
        found = self._stats.get(secret_id, {}).get(f"{product}:{action}")
        return 0 if found is None else found.accepted_in(start, end)

    def clear(self) -> None:
        self._stats.clear()

    def snapshot(self) -> dict[str, dict[str, dict[str, Any]]]:
        return {
            secret_id: {key: stats.snapshot() for key, stats in sorted(by_action.items())}
            for secret_id, by_action in sorted(self._stats.items())
        }


def accepted_report(accounts: Accounts, query: Mapping[str, str], now: float) -> dict[str, Any]:
    """`GET /_sim/stats/accepted`: `secret_id`, `product`, `action`, and either `start` and `end` (`clock`
    readings) or `last` (seconds up to `now`). KeyError names a missing parameter; ValueError a bad number."""
    secret_id, product, action = (query[name] for name in ("secret_id", "product", "action"))
    if "last" in query:
        end = now
        start = end - float(query["last"])
    else:
        start, end = float(query["start"]), float(query["end"])
    accepted = accounts.accepted_in(secret_id, product, action, start, end)
    seconds = end - start
    return {
        "secret_id": secret_id,
        "product": product,
        "action": action,
        "start": start,
        "end": end,
        "accepted": accepted,
        "rate": accepted / seconds if seconds > 0 else None,
    }
