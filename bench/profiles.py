"""py-spy profiles of a bench subject (`python -m bench --profile`): `py-spy record` attached to a running
process, and the summary of its collapsed stacks (the share of busy samples per function).
"""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any


def py_spy() -> str | None:
    found = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    return found if Path(found).exists() else None


class Profile:
    """`py-spy record` attached to a running process for a while, in raw (collapsed stack) format."""

    def __init__(self, pid: int, seconds: float, out: Path, rate: int = 250) -> None:
        self.out = out
        binary = py_spy()
        self.proc: subprocess.Popen[bytes] | None = None
        if binary is not None:
            self.proc = subprocess.Popen(
                [
                    binary,
                    "record",
                    "--pid",
                    str(pid),
                    "--duration",
                    str(max(1, round(seconds))),
                    "--rate",
                    str(rate),
                    "--format",
                    "raw",
                    "--nonblocking",
                    "--output",
                    str(out),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )

    def finish(self, timeout: float = 60.0) -> dict[str, Any] | None:
        if self.proc is None:
            return None
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if not self.out.exists():
            return None
        return summarize_collapsed(self.out.read_text(encoding="utf-8", errors="replace"))


def _frame_name(frame: str) -> str:
    # py-spy raw frames look like "function (path/to/file.py:123)"; keep the function and file name.
    match = re.match(r"(.*) \((.*?):\d+\)$", frame)
    if not match:
        return frame
    function, path = match.groups()
    return f"{function} ({Path(path).name})"


# Leaf frames where a thread waits rather than computes (py-spy cannot always tell from the outside).
_WAITING = ("EpollSelector.select (", "_worker (thread.py)", "Condition.wait (", "Event.wait (", "sleep (")
# Frames every stack passes through (interpreter start-up, the event loop, threads), left out of `inclusive`.
_PLUMBING = tuple(
    f"({name})"
    for name in (
        "<frozen runpy>",
        "runners.py",
        "base_events.py",
        "events.py",
        "cli.py",
        "probe.py",
        "threading.py",
        "thread.py",
    )
)


def summarize_collapsed(text: str, top: int = 12) -> dict[str, Any]:
    """Share of busy samples per function: on top of the stack (self) and anywhere in it (inclusive).

    Samples whose leaf is a known wait (the event loop's epoll, idle executor threads) are counted apart as
    `waiting`; inclusive shares leave out the plumbing every stack passes through (runpy, the loop, threads).
    """
    self_counts: dict[str, int] = {}
    inclusive: dict[str, int] = {}
    total = busy = 0
    for line in text.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        frames = [_frame_name(f) for f in stack.split(";") if f]
        frames = [f for f in frames if not f.startswith(("process ", "thread "))]
        if not frames or frames[-1].startswith(_WAITING):
            continue
        busy += count
        self_counts[frames[-1]] = self_counts.get(frames[-1], 0) + count
        for name in set(frames):
            inclusive[name] = inclusive.get(name, 0) + count

    def ranked(counts: dict[str, int], skip_plumbing: bool) -> list[tuple[str, float]]:
        chosen = [(n, c) for n, c in counts.items() if not (skip_plumbing and n.endswith(_PLUMBING))]
        best = sorted(chosen, key=lambda kv: -kv[1])[:top]
        return [(name, round(count / busy, 3)) for name, count in best] if busy else []

    return {
        "samples": total,
        "busy_samples": busy,
        "waiting_share": round(1 - busy / total, 3) if total else None,
        "self": ranked(self_counts, False),
        "inclusive": ranked(inclusive, True),
    }
