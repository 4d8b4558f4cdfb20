"""The probe log both subjects write: how late each periodic wake-up was, whatever kind of loop runs it.

P <wall time> <period> <threshold>     once, first
S <wall time of the wake-up> <lateness>     for every wake-up later than the threshold
H <wall time> <max lateness in the last second> <wake-ups in the last second>    once a second
"""

from __future__ import annotations

import time
from typing import TextIO


class LatenessLog:
    def __init__(self, out: TextIO, period: float, threshold: float, now: float) -> None:
        self._out, self._threshold = out, threshold
        self._report_at = now + 1.0
        self._worst, self._wakeups = 0.0, 0
        out.write(f"P {time.time():.6f} {period} {threshold}\n")

    def record(self, lateness: float, now: float) -> None:
        """One wake-up `lateness` seconds late; `now` is the caller's monotonic clock."""
        self._wakeups += 1
        self._worst = max(self._worst, lateness)
        if lateness > self._threshold:
            self._out.write(f"S {time.time():.6f} {lateness:.6f}\n")
        if now >= self._report_at:
            self._out.write(f"H {time.time():.6f} {self._worst:.6f} {self._wakeups}\n")
            self._out.flush()
            self._worst, self._wakeups = 0.0, 0
            self._report_at = max(self._report_at + 1.0, now)
