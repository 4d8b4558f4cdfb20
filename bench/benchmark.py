"""The benchmark: the exporter against the API quotas, side by side with a naive SDK loop.

    python -m bench [--quick] [--output results.json] [flags]       (or: python bench/run.py ...)

`bench.cli` reads the flags and calls `main` here.

Every run starts a fresh simulator process (bench.simserver: the project's simulator with quotas and latency)
and one subject process, either the exporter (bench.probe: `python -m exporter` plus an event-loop lag probe)
or the baseline (bench.baseline: the official synchronous SDK in a loop, prometheus_client Gauges).

- detect runs (`--detect-tasks`, `--repeats` times, exporter and baseline each against their own simulator):
  quota utilisation, throttling, and the latency from each status change in the simulator to the new status
  on /metrics, against the lower bound `in progress / quota`.
- large run (`--large-tasks`, exporter): utilisation and footprint while the first sweep spends the whole
  quota, then /metrics cost (plain and gzip) and the event-loop stalls scrapes cause, at full size.
- large baseline run: the baseline fills its Gauges for every task against a simulator without latency or
  quota (a synchronous loop at 100 ms would need half an hour), then latency is restored and it is scraped
  the same way.

The processes of one run are in `benchmark_stage.py`, the detect runs in `benchmark_detect.py`, the large
runs in `benchmark_large.py`, the summary and the table in `benchmark_report.py`; this module plans the runs
(which overlap which), then prints the table and writes the JSON. See bench/README.md for what each figure
means exactly.
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from bench import workload as wl
from bench.benchmark_detect import run_detect
from bench.benchmark_large import run_large_baseline, run_large_exporter
from bench.benchmark_report import DEFINITIONS, summarize, table
from bench.benchmark_stage import SAFETY_GUESS, SMOKE_PACE, Pace
from bench.common import RESULTS, Settings, machine, smoke, stderr_log, work_directory

# --------------------------------------------------------------------------------------------- plan


def run_all(
    settings: Settings, workdir: Path, outdir: Path | None, log: Callable[[str], None], pace: Pace
) -> dict[str, Any]:
    results: dict[str, Any] = {"detect": [], "large": {}}
    errors: list[BaseException] = []
    quiet = threading.Event()

    def guarded(fn: Callable[[], None]) -> Callable[[], None]:
        def call() -> None:
            try:
                fn()
            except BaseException as exc:
                errors.append(exc)
                quiet.set()

        return call

    def large_exporter() -> None:
        log(f"large run: exporter, {settings.large_tasks} tasks (first sweep ~{_sweep(settings):.0f} s)")
        results["large"]["exporter"] = run_large_exporter(settings, workdir, quiet, outdir, pace)
        log("large run: exporter done")

    def detect_all() -> None:
        for rep in range(settings.repeats if settings.detect else 0):
            subjects = ["exporter", "baseline"] if settings.baseline else ["exporter"]
            log(
                f"detect run {rep + 1}/{settings.repeats}: {', '.join(subjects)}, "
                f"{settings.detect_tasks} tasks"
            )
            found: dict[str, dict[str, Any]] = {}

            def one(subject: str, rep: int = rep, found: dict[str, dict[str, Any]] = found) -> None:
                found[subject] = run_detect(subject, settings, rep, workdir, pace)

            if settings.sequential:
                for subject in subjects:
                    one(subject)
            else:
                threads = [threading.Thread(target=guarded(lambda s=s: one(s))) for s in subjects]
                for thread in threads:
                    thread.start()
                for thread in threads:
                    thread.join()
                if errors:
                    raise errors[0]
            results["detect"].extend(found[s] for s in subjects)

    large_thread = None
    if settings.large and not settings.sequential:
        large_thread = threading.Thread(target=guarded(large_exporter))
        large_thread.start()
    try:
        detect_all()
    finally:
        quiet.set()
        if large_thread is not None:
            large_thread.join()
    if errors:
        raise errors[0]
    if settings.large and settings.sequential:
        large_exporter()
    if settings.large and settings.baseline:
        log(f"large run: baseline, {settings.large_tasks} tasks (fill without quota or latency)")
        results["large"]["baseline"] = run_large_baseline(settings, workdir, outdir, pace)
    return results


def _sweep(settings: Settings) -> float:
    work = wl.build(settings.large_tasks, (0.0, 1.0), quotas=settings.quotas)
    return work.sweep_seconds(SAFETY_GUESS)


# --------------------------------------------------------------------------------------------- main


def main(settings: Settings, args: argparse.Namespace) -> int:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    output: Path = args.output or RESULTS / f"{stamp}.json"
    output.parent.mkdir(parents=True, exist_ok=True)
    outdir = output.parent / f"{output.stem}-profiles" if settings.profile else None
    if outdir is not None:
        outdir.mkdir(parents=True, exist_ok=True)
    began = time.monotonic()
    log = stderr_log(began)

    log(f"settings: {json.dumps(asdict(settings))}")
    with work_directory(args.keep) as workdir:
        results = run_all(settings, workdir, outdir, log, SMOKE_PACE if args.quick and smoke() else Pace())
    summary = summarize(results, settings)
    text, rows = table(summary, settings)
    info = machine()
    document = {
        "settings": asdict(settings),
        "machine": info,
        "duration_s": time.monotonic() - began,
        "summary": summary,
        "table": rows,
        "runs": results,
        "definitions": DEFINITIONS,
    }
    output.write_text(json.dumps(document, indent=2, default=str))
    print(
        f"tencentcloud-task-exporter benchmark: {info['nproc']} CPUs ({info['cpu_model']}), "
        f"Python {info['python']}, API latency {settings.latency * 1000:.0f} ms, quotas "
        f"{settings.quota_mariadb:g}/{settings.quota_cdb:g} req/s, {settings.repeats} repeat(s), medians"
    )
    print(text)
    for subject in ("exporter", "baseline"):
        for name, profile in results["large"].get(subject, {}).get("profiles", {}).items():
            if profile:
                top = ", ".join(f"{fn} {share:.0%}" for fn, share in profile["self"][:6])
                print(f"profile {subject}/{name} ({profile['samples']} samples), top self: {top}")
    print(f"results: {output} ({time.monotonic() - began:.0f} s)")
    return 0
