"""A pytest plugin for tests/test_wall_clock.py: while the test modules are collected (imported), time.time()
reads ten minutes behind the real clock; from the first test on it reads the real clock again.

A time a test module takes at import is then ten minutes old when its tests run, as it would be in a long
run, and the simulator (300 s of allowed skew) refuses the signatures the SDKs make with the real clock.
"""

from __future__ import annotations

import time

import pytest

SHIFT = 600.0
_real_time = time.time


def _behind() -> float:
    return _real_time() - SHIFT


def pytest_configure(config: pytest.Config) -> None:
    time.time = _behind


def pytest_collection_finish(session: pytest.Session) -> None:
    time.time = _real_time


def pytest_unconfigure(config: pytest.Config) -> None:
    time.time = _real_time
