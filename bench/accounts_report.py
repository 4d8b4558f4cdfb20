"""The accounts benchmark's summary over repeats and its tables (`bench.accounts` runs and prints them)."""

from __future__ import annotations

from collections import Counter
from typing import Any

from bench.accounts_stage import ACCOUNTS, GOAL, REGIONS, Sizes
from bench.common import fmt
from bench.discovery_report import Row, table
from bench.measure import median


def _stage_summary(stages: list[dict[str, Any]]) -> dict[str, Any]:
    """One stage (accounts or control) over the repeats: medians of rates, worst or total of counts."""
    names = list(stages[0]["buckets"]) if stages else []
    buckets: dict[str, dict[str, Any]] = {}
    for name in names:
        runs = [s["buckets"][name] for s in stages]
        errors: Counter[str] = Counter()
        for run in runs:
            errors.update(run["errors"])
        last = runs[-1]
        buckets[name] = {
            "account": last["account"],
            "region": last["region"],
            "quota": last["quota"],
            "rate": median(r["rate"] for r in runs),
            "utilisation": median(r["utilisation"] for r in runs),
            "utilisation_runs": [r["utilisation"] for r in runs],
            "fewest_in_a_second": min((min(r["per_second"], default=0) for r in runs), default=None),
            "most_in_a_second": max((max(r["per_second"], default=0) for r in runs), default=None),
            "max_in_window": max(r["max_in_window"] for r in runs),
            "violations": max(r["violations"] for r in runs),
            "throttled": sum(r["throttled"] for r in runs),
            "throttled_window": sum(r["throttled_window"] for r in runs),
            "foreign": sum(r["foreign"] for r in runs),
            "wrong_region": sum(r["wrong_region"] for r in runs),
            "errors": dict(errors),
            "exporter_requests_per_s": median(r["exporter"]["requests_per_s"] for r in runs),
            "exporter_throttled": sum(r["exporter"]["throttled_total"] or 0.0 for r in runs),
            "exporter_errors": sum(r["exporter"]["errors_total"] or 0.0 for r in runs),
            # The exporter's own gauges at the end of the last repeat's window.
            "rate_limit": last["exporter"]["rate_limit"],
            "current_rate_limit": last["exporter"]["current_rate_limit"],
        }
    lags = [s["lag"] for s in stages]
    return {
        "buckets": buckets,
        "aggregate_rate": median(s["aggregate_rate"] for s in stages),
        "aggregate_rate_runs": [s["aggregate_rate"] for s in stages],
        "sum_quotas": stages[0]["sum_quotas"] if stages else None,
        "aggregate_utilisation": median(s["aggregate_utilisation"] for s in stages),
        "min_utilisation": median(s["min_utilisation"] for s in stages),
        "min_utilisation_runs": [s["min_utilisation"] for s in stages],
        "all_at_goal_runs": sum(1 for s in stages if s["all_at_goal"]),
        "runs": len(stages),
        "violations": max((sum(b["violations"] for b in s["buckets"].values()) for s in stages), default=0),
        "throttled": sum(b["throttled"] for b in buckets.values()),
        "exporter_throttled": sum(b["exporter_throttled"] for b in buckets.values()),
        "foreign": sum(b["foreign"] for b in buckets.values()),
        "wrong_region": sum(b["wrong_region"] for b in buckets.values()),
        "errors": sum(sum(b["errors"].values()) for b in buckets.values()),
        "exporter_errors": sum(b["exporter_errors"] for b in buckets.values()),
        "current_rate_limit": sum(b["current_rate_limit"] or 0.0 for b in buckets.values()),
        "rate_limit": sum(b["rate_limit"] or 0.0 for b in buckets.values()),
        "lag_over_50ms": max((lag["over_50ms"] for lag in lags), default=None),
        "lag_over_100ms": max((lag["over_100ms"] for lag in lags), default=None),
        "lag_observations": sum(lag["observations"] for lag in lags),
        "exporter_cpu_per_s": median(s["cpu_per_s"].get("exporter") for s in stages),
        "simulators_cpu_per_s": median(
            sum(v or 0.0 for k, v in s["cpu_per_s"].items() if k.startswith("simulator")) for s in stages
        ),
        "machine_busy_cpus": median(s["machine_busy_cpus"] for s in stages),
        "clock_shared": all(s["clock_shared"] for s in stages),
        "exporters_alive": all(s["exporter_alive"] for s in stages),
        "watched": min((s["watched"] or 0 for s in stages), default=None),
    }


def summarize(runs: list[dict[str, Any]], sizes: Sizes) -> dict[str, Any]:
    ok = [r for r in runs if "error" not in r]
    accounts = _stage_summary([r["accounts"] for r in ok])
    control = _stage_summary([r["control"] for r in ok])
    gain = (
        accounts["aggregate_rate"] / control["aggregate_rate"]
        if accounts["aggregate_rate"] and control["aggregate_rate"]
        else None
    )
    return {
        "runs": len(ok),
        "failed_runs": len(runs) - len(ok),
        "quota": sizes.quota,
        "goal": GOAL,
        "accounts": accounts,
        "control": control,
        "gain": gain,
        "gain_runs": [
            r["accounts"]["aggregate_rate"] / r["control"]["aggregate_rate"]
            for r in ok
            if r["control"]["aggregate_rate"]
        ],
    }


def bucket_table(s: dict[str, Any], sizes: Sizes) -> str:
    """Per bucket: the simulator's counts over the window, the exporter's own rate and gauges."""
    head = [
        "bucket (account @ endpoint)",
        "quota/s",
        "accepted/s",
        "utilisation",
        "fewest/most in a 1 s slice",
        "busiest sliding 1 s",
        "violations",
        "throttled",
        "foreign",
        "wrong_region",
        "exporter sent/s",
        "current limit/s",
    ]
    cells = [head]

    def add(label: str, b: dict[str, Any]) -> None:
        cells.append(
            [
                label,
                fmt(b["quota"], "", 0),
                fmt(b["rate"], "", 2),
                fmt(b["utilisation"], "", 3),
                f"{b['fewest_in_a_second']} / {b['most_in_a_second']}",
                f"{b['max_in_window']}",
                f"{b['violations']}",
                f"{b['throttled']}",
                f"{b['foreign']}",
                f"{b['wrong_region']}",
                fmt(b["exporter_requests_per_s"], "", 2),
                fmt(b["current_rate_limit"], "", 1),
            ]
        )

    a, c = s["accounts"], s["control"]
    for bucket in a["buckets"].values():
        add(f"{bucket['account']} @ {bucket['region']}", bucket)
    cells.append(
        [
            f"all {len(a['buckets'])} buckets",
            fmt(a["sum_quotas"], "", 0),
            fmt(a["aggregate_rate"], "", 2),
            fmt(a["aggregate_utilisation"], "", 3),
            "",
            "",
            f"{a['violations']}",
            f"{a['throttled']}",
            f"{a['foreign']}",
            f"{a['wrong_region']}",
            fmt(sum(b["exporter_requests_per_s"] or 0.0 for b in a["buckets"].values()), "", 2),
            fmt(a["current_rate_limit"], "", 1),
        ]
    )
    for bucket in c["buckets"].values():
        add(f"control: {bucket['account']} @ one endpoint", bucket)
    widths = [max(len(row[i]) for row in cells) for i in range(len(head))]
    lines = [
        "  ".join(
            v.ljust(w) if i == 0 else v.rjust(w) for i, (v, w) in enumerate(zip(row, widths, strict=True))
        )
        for row in cells
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    of = f"median of {s['runs']} runs" if s["runs"] > 1 else "1 run"
    note = (
        f"rates over the window ({sizes.window_s:g} s; control {sizes.control_window_s:g} s), {of}; "
        "busiest sliding 1 s, violations, throttled, foreign and wrong_region over whole runs (warm-up "
        "included): the worst run, or the sum of the runs for counts"
    )
    return "\n".join(line.rstrip() for line in lines) + "\n" + note


def rows(s: dict[str, Any], sizes: Sizes) -> list[Row]:
    """The figures: (figure, value, target, met)."""
    out: list[Row] = []
    a, c = s["accounts"], s["control"]
    n = len(a["buckets"])

    def add(label: str, value: Any, target: str = "", met: bool | None = None) -> None:
        out.append((label, value, target, met))

    def zero(label: str, value: float) -> None:
        add(label, int(value), "0", value == 0)

    of = f" (median of {s['runs']})" if s["runs"] > 1 else ""
    runs_min = ", ".join(f"{u:.3f}" for u in a["min_utilisation_runs"])
    add(
        f"least utilisation of the {n} buckets in one window{of}",
        a["min_utilisation"],
        f">= {GOAL:g}",
        None if a["min_utilisation"] is None else a["min_utilisation"] >= GOAL,
    )
    add(f"  each run: {runs_min}", "")
    add(
        f"all {n} buckets >= {GOAL:g} in the same window",
        f"{a['all_at_goal_runs']} of {a['runs']} runs",
        "every run",
        a["runs"] > 0 and a["all_at_goal_runs"] == a["runs"],
    )
    add(
        f"aggregate accepted/s vs sum of the {n} quotas",
        f"{fmt(a['aggregate_rate'], '', 2)} / {fmt(a['sum_quotas'], '', 0)}",
    )
    add(
        "  aggregate utilisation",
        a["aggregate_utilisation"],
        f">= {GOAL:g}",
        None if a["aggregate_utilisation"] is None else a["aggregate_utilisation"] >= GOAL,
    )
    add(
        "control (1 account, 1 endpoint): accepted/s vs 1 quota",
        f"{fmt(c['aggregate_rate'], '', 2)} / {fmt(c['sum_quotas'], '', 0)}",
    )
    add("  control utilisation", c["aggregate_utilisation"])
    gain = s["gain"]
    add(
        f"gain: {len(ACCOUNTS)} accounts x {len(REGIONS)} endpoints over the control",
        "n/a" if gain is None else f"{gain:.2f}x",
        f"~{n}x",
    )
    zero(
        "violations: accepted beyond the quota in a sliding second (worst run)",
        a["violations"] + c["violations"],
    )
    zero("RequestLimitExceeded (simulators, every run, warm-up included)", a["throttled"] + c["throttled"])
    zero("  throttled by the exporter's counters", a["exporter_throttled"] + c["exporter_throttled"])
    zero("foreign: status requests for another account's flow", a["foreign"] + c["foreign"])
    zero("wrong_region: requests to another region's endpoint", a["wrong_region"] + c["wrong_region"])
    zero("any other API error (simulators)", a["errors"] + c["errors"])
    add(
        "exporter current_rate_limit at the end, sum of the buckets",
        f"{fmt(a['current_rate_limit'], '', 1)} (control {fmt(c['current_rate_limit'], '', 1)})",
        f"{fmt(a['rate_limit'], '', 1)} ({fmt(c['rate_limit'], '', 1)})",
        a["current_rate_limit"] == a["rate_limit"] and c["current_rate_limit"] == c["rate_limit"],
    )
    add(
        "loop lag observations over 50 / 100 ms in a window (worst run)",
        f"{a['lag_over_50ms']} / {a['lag_over_100ms']} "
        f"(control {c['lag_over_50ms']} / {c['lag_over_100ms']})",
    )
    add(
        "CPU/s in the window: exporter, simulators, whole machine",
        f"{fmt(a['exporter_cpu_per_s'], '', 2)}, {fmt(a['simulators_cpu_per_s'], '', 2)}, "
        f"{fmt(a['machine_busy_cpus'], '', 2)}",
    )
    add(
        "  control",
        f"{fmt(c['exporter_cpu_per_s'], '', 2)}, {fmt(c['simulators_cpu_per_s'], '', 2)}, "
        f"{fmt(c['machine_busy_cpus'], '', 2)}",
    )
    add(
        "flows watched (accounts stage, control)",
        f"{fmt(a['watched'], '', 0)}, {fmt(c['watched'], '', 0)}",
        f"{n * sizes.tasks_per_bucket:,}",
        a["watched"] == c["watched"] == n * sizes.tasks_per_bucket,
    )
    add(
        "one clock for bench and simulators (windows aligned)",
        "yes" if a["clock_shared"] and c["clock_shared"] else "NO",
    )
    return out


def tables(s: dict[str, Any], sizes: Sizes) -> tuple[str, list[dict[str, Any]]]:
    text, figures = table(rows(s, sizes))
    return bucket_table(s, sizes) + "\n\n" + text, figures
