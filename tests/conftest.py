"""Fixtures shared by the test modules (plain helpers are in tests/helpers.py)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator

import pytest

from exporter.simulator import Simulator, SimulatorThread
from tests.helpers import CREDS


async def eventually(condition: Callable[[], object], within: float = 10.0, what: str = "") -> None:
    """Waits on the event loop until `condition()` is truthy; fails naming what never happened."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if condition():
            return
        await asyncio.sleep(0.01)  # a poll of the condition, not a guess at how long something takes
    raise AssertionError(f"timed out after {within}s waiting for: {what or condition}")


@pytest.fixture
def wall() -> float:
    """The wall-clock time a test's simulators start from: a whole second taken when the test itself starts.

    Whole, so the StartTime and EndTime the answers show are exact; taken per test (never at import or for
    the session), so it stays within the simulator's 300 s of allowed skew of the real clock the official
    SDKs sign with, however long the run has lasted (tests/test_wall_clock.py proves it).
    """
    return float(int(time.time()))


@pytest.fixture
def simulator() -> Iterator[SimulatorThread]:
    """The simulator in a thread of its own on a free loopback port, accepting CREDS; stopped afterwards.

    For tests that inject faults, change quotas, read the simulator's statistics or list its tasks
    (discovery): what they see must be theirs alone. The others can use `shared_simulator`."""
    with SimulatorThread(Simulator([CREDS])) as sim:
        yield sim


@pytest.fixture(scope="session")
def shared_simulator() -> Iterator[SimulatorThread]:
    """One simulator for the session (one per xdist worker), accepting CREDS, for tests that only add tasks
    and read their statuses back. Tests run one at a time per worker, but one test's tasks stay for the next:
    each module adds tasks with IDs no other module uses (test_operations: flows 1 to 9, cdb-x and cdb-info;
    test_hardening: flows 5105 and 5107), and an ID a test expects to be unknown stays unused by all."""
    with SimulatorThread(Simulator([CREDS])) as sim:
        yield sim
