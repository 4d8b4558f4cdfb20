"""A token bucket per (credentials, API) that keeps every sliding second within the API's quota.

The bucket holds a single token (no bursts): requests leave evenly spaced, slightly under the quota. A burst
allowance would let `quota + burst` requests into one second; even spacing with a small margin keeps the API's
sliding-window count at or under the quota even when requests arrive with a few tens of
milliseconds of jitter.

On throttling (`RequestLimitExceeded*`, another client spending the same quota) the rate drops
multiplicatively and climbs back additively, so the exporter yields to other users and returns to full speed
when they stop.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

# Requests leave at this share of the quota. N+1 consecutive requests then span 1/0.96 s, so arrivals may
# bunch up by ~40 ms (network and scheduling jitter) before the API's sliding second sees more than N.
# Measured on loopback at 250 ms latency: 0.97 drew an occasional RequestLimitExceeded in one run of three
# setups, 0.95 and 0.96 none; 0.96 keeps utilisation clear of the 0.95 target.
SAFETY = 0.96
# Gentler than halving: a lone throttled request is more often jitter than a competing client.
DECREASE_FACTOR = 0.7
# Full recovery from zero takes RECOVERY_SECONDS without further throttling.
RECOVERY_SECONDS = 10.0
# Several in-flight requests are usually throttled together; they count as one signal.
DECREASE_COOLDOWN = 1.0


class TokenBucket:
    def __init__(self, rate: float, clock: Callable[[], float] = time.monotonic) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.max_rate = rate
        self._clock = clock
        self._next_slot = clock()
        self._floor = rate  # the rate just after the last decrease
        self._decreased_at = float("-inf")

    def set_rate(self, rate: float) -> None:
        """A new quota (config reload): applies from the next reservation, forgetting past throttling."""
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.max_rate = self._floor = rate

    def current_rate(self) -> float:
        if self._floor >= self.max_rate:
            return self.max_rate
        recovered = self._floor + self.max_rate / RECOVERY_SECONDS * (self._clock() - self._decreased_at)
        return min(self.max_rate, recovered)

    def reserve(self) -> float:
        """Reserves the next free slot and returns how long the caller must wait for it."""
        now = self._clock()
        slot = max(now, self._next_slot)
        self._next_slot = slot + 1.0 / (self.current_rate() * SAFETY)
        return slot - now

    async def acquire(self) -> None:
        delay = self.reserve()
        if delay > 0:
            await asyncio.sleep(delay)

    def throttled(self) -> None:
        now = self._clock()
        if now - self._decreased_at < DECREASE_COOLDOWN:
            return
        self._floor = max(self.max_rate * 0.05, self.current_rate() * DECREASE_FACTOR)
        self._decreased_at = now
