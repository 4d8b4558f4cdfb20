"""The discovery benchmark's summary over repeats and its table (`bench.discovery` runs and prints them)."""

from __future__ import annotations

import math
from typing import Any

from bench.common import Settings, fmt
from bench.discovery_detect import rows as detection_rows
from bench.discovery_stage import LIST_ACTION, LIST_QUOTA, STATUS_ACTION, Sizes, pages
from bench.measure import median

TARGETS = {"utilisation": 0.95, "sweep_ratio": 1.2}
Row = tuple[str, Any, str, bool | None]  # figure, value, target, met (None: no target)


def summarize(runs: list[dict[str, Any]], sizes: Sizes) -> dict[str, Any]:
    ok = [r for r in runs if "error" not in r]

    def med(*path: str) -> float | None:
        values = []
        for run in ok:
            value: Any = run
            for key in path:
                value = value.get(key) if isinstance(value, dict) else None
            values.append(value)
        return median(values)

    detected = [r["detection"] for r in ok if "detection" in r]
    both = (STATUS_ACTION, LIST_ACTION)
    lags = [r["lag_window"] for r in ok]
    rss = [r["rss_mb"] for r in ok if r["rss_mb"]["before"] and r["rss_mb"]["with_discovered"]]
    return {
        "runs": len(ok),
        "failed_runs": len(runs) - len(ok),
        "pages": pages(sizes.tasks),
        "sweep_s": med("discovering_sweep", "seconds"),
        "sweep_bound_s": med("discovering_sweep", "bound_s"),
        "sweep_ratio": med("discovering_sweep", "ratio"),
        "sweep_requests_s": med("discovering_sweep", "requests_seconds"),
        "sweep_busiest_second": max((r["discovering_sweep"]["busiest_second"] for r in ok), default=None),
        "gauge_sweep_s": med("exporter", "last_sweep_duration_s"),
        "utilisation_before": med("before", "utilisation"),
        "utilisation_short": med("short", "utilisation"),
        "short_s": med("short", "seconds"),
        "utilisation_window": med("window", "utilisation"),
        "discovered_min": min((r["exporter"]["discovery_tasks"] or 0 for r in ok), default=None),
        "watched_min": min((r["exporter"]["watched_cdb"] or 0 for r in ok), default=None),
        "detection": detected[-1] if detected else None,
        "throttled_simulator": sum(
            int(r["simulator"].get(a, {}).get("throttled", 0)) for r in ok for a in both
        ),
        "throttled_exporter": sum(int(v) for r in ok for v in r["throttled_exporter"].values()),
        "simulator_lenient": sum(int(r.get("simulator_lateness", {}).get("lenient", 0)) for r in ok),
        "simulator_max_slack_s": max(
            (float(r.get("simulator_lateness", {}).get("max_slack_s", 0.0)) for r in ok), default=0.0
        ),
        "list_busiest_second": max((r["list_busiest_second"] for r in ok), default=None),
        "status_busiest_second": max((r["status_busiest_second"] for r in ok), default=None),
        "status_sent_busiest_second": max((r["status_sent_busiest_second"] for r in ok), default=None),
        "sweep_errors": sum(int(r["exporter"]["sweep_errors"]) for r in ok),
        "rss_before_mb": median(r["before"] for r in rss),
        "rss_discovered_mb": median(r["with_discovered"] for r in rss),
        "rss_kb_per_task": median((r["with_discovered"] - r["before"]) * 1024 / sizes.tasks for r in rss),
        "lag_over_50ms": max((lag["over_50ms"] for lag in lags), default=None),
        "lag_over_100ms": max((lag["over_100ms"] for lag in lags), default=None),
        "lag_window_max_bound_s": _worst_bound(lags),
        "lag_before_max_bound_s": _worst_bound(r["lag_before"] for r in ok),
        "exporters_alive": all(r["exporter_alive"] for r in ok),
    }


def _worst_bound(lags: Any) -> float | None:
    """The largest bucket bound reached in any run (math.inf: past the last finite bound)."""
    bounds = [math.inf if lag["max_bound_s"] is None else lag["max_bound_s"] for lag in lags]
    return max(bounds) if bounds else None


def rows(s: dict[str, Any], sizes: Sizes, settings: Settings) -> list[Row]:
    """The table: (figure, value, target, met)."""
    out: list[Row] = []
    goal, ratio_goal, quota = TARGETS["utilisation"], TARGETS["sweep_ratio"], settings.quota_cdb

    def add(label: str, value: Any, target: str = "", met: bool | None = None) -> None:
        out.append((label, value, target, met))

    def least(label: str, value: float | None) -> None:
        add(label, value, f">= {goal:g}", None if value is None else value >= goal)

    def most(label: str, value: float | None, bound: float) -> None:
        add(label, value, f"<= {bound:g}", None if value is None else value <= bound)

    def zero(label: str, value: int) -> None:
        add(label, value, "0", value == 0)

    of = f" (median of {s['runs']})" if s["runs"] > 1 else ""
    add(f"discovering sweep, {s['pages']} pages, s{of}", s["sweep_s"])
    add(f"  bound: pages / (0.96 x {LIST_QUOTA:g}/s), s", s["sweep_bound_s"])
    most("  sweep / bound", s["sweep_ratio"], ratio_goal)
    add("  first to last page request, s", s["sweep_requests_s"])
    add("  exporter's last_sweep_duration gauge, s", s["gauge_sweep_s"])
    most("  list requests in the busiest second", s["list_busiest_second"], LIST_QUOTA)
    least("status utilisation, before (polling alone)", s["utilisation_before"])
    short = f"({fmt(s['short_s'], '', 1)} s)"
    least(f"status utilisation, discovering sweep + {sizes.settle_s:g} s {short}", s["utilisation_short"])
    least(f"status utilisation, {sizes.window_s:g} s from the discovering sweep", s["utilisation_window"])
    most("  status requests in the busiest second", s["status_busiest_second"], quota)
    found, watched, total = s["discovered_min"], s["watched_min"], sizes.tasks + sizes.watched
    add(
        "tencentcloud_discovery_tasks (fewest in a run)",
        _int(found),
        f"{sizes.tasks:,}",
        found == sizes.tasks,
    )
    add("  tencentcloud_exporter_watched_tasks{cdb}", _int(watched), f"{total:,}", watched == total)
    for row in detection_rows(s["detection"], sizes.poll_every_s):
        add(*row)
    add(
        "most status requests sent in a second, exporter's clock / simulator's",
        f"{s['status_sent_busiest_second']} / {s['status_busiest_second']}",
        f"{quota:g}",
        s["status_sent_busiest_second"] is not None and s["status_sent_busiest_second"] <= quota,
    )
    zero("RequestLimitExceeded, both actions (simulator)", s["throttled_simulator"])
    zero("  throttled, both actions (exporter's counters)", s["throttled_exporter"])
    add(
        "  admitted only by the simulator's allowance for its own holds / largest allowance, s",
        f"{s['simulator_lenient']} / {s['simulator_max_slack_s']:.3f}",
    )
    zero("  failed sweeps", s["sweep_errors"])
    add("exporter RSS before / with the discovered, MB", _pair(s["rss_before_mb"], s["rss_discovered_mb"]))
    add("  RSS per discovered task, KB", s["rss_kb_per_task"])
    add("loop lag, largest bucket reached before / in the window, s", _lag_pair(s))
    add("  lag observations over 50 / 100 ms (worst run)", _pair(s["lag_over_50ms"], s["lag_over_100ms"], 0))
    return out


def _int(value: float | None) -> int | None:
    return None if value is None else int(value)


def _pair(a: float | None, b: float | None, digits: int = 1) -> str:
    return f"{fmt(a, '', digits)} / {fmt(b, '', digits)}"


def _lag_pair(s: dict[str, Any]) -> str:
    def bound(value: float | None) -> str:
        return "n/a" if value is None else ("> 1" if math.isinf(value) else f"<= {value:g}")

    return f"{bound(s['lag_before_max_bound_s'])} / {bound(s['lag_window_max_bound_s'])}"


def table(figures: list[Row]) -> tuple[str, list[dict[str, Any]]]:
    cells = [["figure", "value", "target", "met"]]
    for label, value, target, met in figures:
        digits = 3 if isinstance(value, float) and abs(value) < 10 else 1
        text = value if isinstance(value, str) else fmt(value, "", digits)
        cells.append([label, text, target, "" if met is None else ("yes" if met else "NO")])
    widths = [max(len(c[i]) for c in cells) for i in range(4)]
    lines = ["  ".join(_cell(v, w, i) for i, (v, w) in enumerate(zip(c, widths, strict=True))) for c in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    keys = ("figure", "value", "target", "met")
    return "\n".join(line.rstrip() for line in lines), [dict(zip(keys, row, strict=True)) for row in figures]


def _cell(value: str, width: int, column: int) -> str:
    return value.ljust(width) if column == 0 else value.rjust(width)
