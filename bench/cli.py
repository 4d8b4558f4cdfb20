"""The command line of `python -m bench` (and `python bench/run.py`): its flags, and which mode they run.

Without a mode flag it runs the main benchmark (`bench.benchmark`); `--hardening`, `--discovery` and
`--accounts` each run only their own mode (`bench.hardening`, `bench.discovery`, `bench.accounts`), which
reads the flags that apply to it from the same `Settings` and namespace.
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

from bench import accounts, benchmark, discovery, discovery_stalls, hardening
from bench.common import Settings, smoke
from bench.profiles import py_spy

QUICK = replace(
    Settings(), detect_tasks=300, large_tasks=1000, repeats=1, window=8.0, scrapes=10, scrape_every=3.0
)
# The test suite's smoke run (BENCH_SMOKE with --quick): every part runs, on a workload too small to measure.
SMOKE = replace(QUICK, detect_tasks=20, large_tasks=40, window=0.5, interval=0.5, scrapes=1, scrape_every=1.0)


def parse_args(argv: list[str] | None) -> tuple[Settings, argparse.Namespace]:
    defaults = Settings()
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Benchmark the exporter against the API quotas, side by side with a naive SDK loop.",
    )
    parser.add_argument("--quick", action="store_true", help="smoke run under a minute (small sizes)")
    parser.add_argument("--detect-tasks", type=int, help=f"tasks in detect runs ({defaults.detect_tasks})")
    parser.add_argument("--large-tasks", type=int, help=f"tasks in the large run ({defaults.large_tasks})")
    parser.add_argument("--repeats", type=int, help=f"detect runs per subject ({defaults.repeats})")
    parser.add_argument("--window", type=float, help=f"seconds during which tasks change ({defaults.window})")
    parser.add_argument("--latency", type=float, help=f"API latency, seconds ({defaults.latency})")
    parser.add_argument("--quota-mariadb", type=float, help=f"DescribeFlow req/s ({defaults.quota_mariadb})")
    parser.add_argument(
        "--quota-cdb", type=float, help=f"DescribeAsyncRequestInfo req/s ({defaults.quota_cdb})"
    )
    parser.add_argument("--interval", type=float, help=f"polling.interval, seconds ({defaults.interval})")
    parser.add_argument(
        "--scrapes", type=int, help=f"timed scrapes of each kind at full size ({defaults.scrapes})"
    )
    parser.add_argument(
        "--scrape-every", type=float, help=f"background scrape period, seconds ({defaults.scrape_every})"
    )
    parser.add_argument("--seed", type=int, help=f"workload seed ({defaults.seed})")
    parser.add_argument("--sequential", action="store_true", help="one process pair at a time (slower)")
    parser.add_argument("--no-baseline", action="store_true", help="skip the SDK baseline")
    parser.add_argument(
        "--no-large",
        action="store_true",
        help="skip the large (scrape, footprint) runs; with --discovery, the 50,000-operation part",
    )
    parser.add_argument("--no-detect", action="store_true", help="skip the detect runs")
    parser.add_argument("--profile", action="store_true", help="py-spy profiles of the large runs")
    parser.add_argument(
        "--what-if",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="experiment on the exporter: safety=0.97 (token bucket share; see bench/probe.py)",
    )
    parser.add_argument("--output", type=Path, help="JSON results file (default bench/results/<time>.json)")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (configs, probe logs)")
    parser.add_argument("--hardening", action="store_true", help="only bench/hardening.py (see README)")
    parser.add_argument(
        "--parts",
        help="with --hardening: only these parts, comma-separated (registration, scrapes, kill9, flood, "
        "caps, pages); with --discovery: sweep (the 5,000 operations), large (the 50,000); all by default",
    )
    parser.add_argument("--discovery", action="store_true", help="only bench/discovery.py (see README)")
    parser.add_argument("--accounts", action="store_true", help="only bench/accounts.py (see README)")
    parser.add_argument(
        "--stalls", action="store_true", help="only bench/discovery_stalls.py: SIGSTOP at full quota"
    )
    args = parser.parse_args(argv)
    settings = defaults
    if args.quick:
        settings = SMOKE if smoke() else QUICK
    overrides = {
        name: getattr(args, name)
        for name in (
            "detect_tasks",
            "large_tasks",
            "repeats",
            "window",
            "latency",
            "quota_mariadb",
            "quota_cdb",
            "interval",
            "scrapes",
            "scrape_every",
            "seed",
        )
        if getattr(args, name) is not None
    }
    settings = replace(
        settings,
        **overrides,
        sequential=args.sequential,
        baseline=not args.no_baseline,
        large=not args.no_large,
        detect=not args.no_detect,
        profile=args.profile,
        what_if=tuple(_what_if(parser, item) for item in args.what_if),
    )
    if (
        settings.detect_tasks < 10
        or settings.large_tasks < 10
        or settings.repeats < 1
        or settings.scrapes < 1
    ):
        parser.error("sizes need at least 10 tasks, 1 repeat and 1 scrape")
    if settings.profile and py_spy() is None:
        parser.error("--profile needs py-spy (pip install py-spy)")
    return settings, args


def _what_if(parser: argparse.ArgumentParser, item: str) -> tuple[str, str]:
    key, sep, value = item.partition("=")
    if not sep or key != "safety":
        parser.error(f"--what-if: expected safety=SHARE, got {item!r}")
    return key, value


def main(argv: list[str] | None = None) -> int:
    settings, args = parse_args(argv)
    if args.hardening:
        return hardening.main(settings, args)
    if args.stalls:
        return discovery_stalls.main(settings, args)
    if args.discovery:
        return discovery.main(settings, args)
    if args.accounts:
        return accounts.main(settings, args)
    return benchmark.main(settings, args)
