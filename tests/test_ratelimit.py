from __future__ import annotations

import pytest

from exporter.ratelimit import DECREASE_FACTOR, SAFETY, TokenBucket


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def send_times(bucket: TokenBucket, clock: FakeClock, count: int) -> list[float]:
    """Times at which `count` back-to-back callers get their slot."""
    times = []
    for _ in range(count):
        wait = bucket.reserve()
        times.append(clock.now + wait)
    return times


def max_in_sliding_second(times: list[float]) -> int:
    return max(sum(1 for u in times if t <= u < t + 1.0) for t in times)


def test_never_more_than_the_quota_in_any_sliding_second_even_after_idle() -> None:
    clock = FakeClock()
    bucket = TokenBucket(20, clock)
    times = send_times(bucket, clock, 100)
    clock.now = times[-1] + 30  # idle: no burst credit piles up
    times += send_times(bucket, clock, 100)
    assert max_in_sliding_second(times) <= 20


def test_uses_nearly_all_of_the_quota_when_busy() -> None:
    clock = FakeClock()
    bucket = TokenBucket(40, clock)
    times = send_times(bucket, clock, 401)
    achieved = 400 / (times[-1] - times[0])
    assert achieved == pytest.approx(40 * SAFETY)


def test_throttling_cuts_the_rate_then_recovers_additively() -> None:
    clock = FakeClock()
    bucket = TokenBucket(20, clock)
    bucket.throttled()
    assert bucket.current_rate() == pytest.approx(20 * DECREASE_FACTOR)
    bucket.throttled()  # within the cooldown: the same burst of throttled answers
    assert bucket.current_rate() == pytest.approx(20 * DECREASE_FACTOR)
    clock.now += 2
    assert 20 * DECREASE_FACTOR < bucket.current_rate() < 20
    clock.now += 100
    assert bucket.current_rate() == 20


def test_repeated_throttling_keeps_a_floor() -> None:
    clock = FakeClock()
    bucket = TokenBucket(20, clock)
    for _ in range(20):
        bucket.throttled()
        clock.now += 1.0
    assert bucket.current_rate() >= 1.0
