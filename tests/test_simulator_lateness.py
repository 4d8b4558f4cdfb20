"""The simulator's allowance for its own lateness (exporter/simulator/lateness.py): a hold of its loop is
measured, shortens the second its quotas judge, and is forgotten; a burst is refused all the same."""

from __future__ import annotations

import asyncio

import pytest

from exporter.catalogue.products import CDB
from exporter.simulator.errors import ApiError
from exporter.simulator.gateway import Quotas
from exporter.simulator.lateness import CAP, MEMORY, PERIOD, Lateness
from exporter.simulator.stats import ActionStats
from tests.helpers import FakeClock


def hold(lateness: Lateness, clock: FakeClock, seconds: float) -> None:
    """Runs the lateness ticker in a loop held for `seconds` (by its clock) before the ticker wakes."""

    async def held_loop() -> None:
        ticker = asyncio.ensure_future(lateness.run())
        await asyncio.sleep(0)  # the ticker asks to wake PERIOD from now
        clock.advance(seconds)
        await asyncio.sleep(PERIOD * 3)
        ticker.cancel()
        await asyncio.gather(ticker, return_exceptions=True)

    asyncio.run(held_loop())


def test_lateness_measures_a_hold_of_its_loop_and_forgets_it() -> None:
    """The ticker sees its loop held as slack, capped at CAP, and forgets it after MEMORY."""
    clock = FakeClock()
    lateness = Lateness(clock)
    hold(lateness, clock, 0.3)
    assert lateness.slack() == pytest.approx(0.3 - PERIOD)
    hold(lateness, clock, 2 * CAP)
    assert lateness.slack() == CAP
    clock.advance(MEMORY + 0.1)
    assert lateness.slack() == 0.0


def test_quota_allows_for_the_simulators_own_lateness_but_not_a_burst() -> None:
    """A request read after a hold is not held against the client; a burst inside the shortened second is
    still refused, and what the slack let through is counted."""
    quotas = Quotas({CDB.name: 2})
    clock = FakeClock()
    lateness = Lateness(clock)
    stats = ActionStats()
    quotas.admit(CDB, "key", 10.0, stats, lateness=lateness)
    quotas.admit(CDB, "key", 10.5, stats, lateness=lateness)
    with pytest.raises(ApiError):  # no hold: the first is still within the second ending at 10.9
        quotas.admit(CDB, "key", 10.9, stats, lateness=lateness)
    hold(lateness, clock, 0.2 + PERIOD)  # the loop was held 0.2 s: the first may have been read that late
    quotas.admit(CDB, "key", 10.9, stats, lateness=lateness)
    assert lateness.lenient == 1
    assert lateness.max_slack == pytest.approx(0.2)
    with pytest.raises(ApiError):  # two within the shortened second already
        quotas.admit(CDB, "key", 10.95, stats, lateness=lateness)
    assert stats.throttled == 2
