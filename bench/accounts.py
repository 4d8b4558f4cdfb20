"""Multi-account, multi-region figures: `python -m bench --accounts`.

Tencent Cloud counts each API's quota per (sub-account, API, endpoint host), and the exporter keeps one token
bucket per (account, product, action, endpoint). With two accounts and two regional endpoints, four MariaDB
`DescribeFlow` buckets should each fill their quota at the same time: four quotas' worth of polling from one
process.

Each repeat runs two stages, one after the other, each in a folder of its own on 127.0.0.1:

- accounts: two simulators (`bench.simserver --region ap-guangzhou` and `--region ap-shanghai`, each
  accepting both accounts' keys, with the API latency and the MariaDB quota), and one `python -m exporter`
  with the accounts `prod` and `staging` and `apis.mariadb.endpoints` sending each region to its simulator.
  Per (account, region), `tasks_per_bucket` MariaDB flows in progress, owned by that account (the simulator
  answers another account's as unknown) in that region, polled every `interval_s`: more than the quota.
- control: the same flows (same IDs and regions), all owned by one account, polled through one endpoint
  (one simulator without `--region`, serving both regions): one bucket, one quota.

After `warmup_s`, a window of `window_s` (control: `control_window_s`) is measured from the simulators' own
per-account counters (`/_sim/stats` before and after, `/_sim/stats/accepted` for the window and each second
of it). The bench reads the window's ends from its own `time.monotonic()`, the clock the simulators count
with (CLOCK_MONOTONIC is one clock for every process of the machine; each window checks it against the
simulators' `now`), so the four buckets are measured over exactly the same window. /metrics is scraped just
before and just after the window, never inside it. The stage (accounts, sizes, processes, the measure of a
window) is in `accounts_stage.py`, the summary over repeats and the table in `accounts_report.py`;
bench/README.md says what each figure means.
"""

from __future__ import annotations

import argparse
import json
import time
import traceback
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from bench.accounts_report import summarize, tables
from bench.accounts_stage import (
    ACCOUNTS,
    ACTION,
    MAX_WINDOW_S,
    PRODUCT,
    QUICK,
    REGIONS,
    SMOKE,
    Bucket,
    Log,
    Sizes,
    Stage,
    flows,
    measure_window,
)
from bench.common import RESULTS, Settings, code_state, machine, smoke, stderr_log, work_directory

# --------------------------------------------------------------------------------------------- stages


def run_accounts(sizes: Sizes, workdir: Path, index: int, log: Log) -> dict[str, Any]:
    """Two accounts, two regional endpoints: four buckets."""
    tasks = flows(sizes)
    with Stage(f"run{index}-accounts", workdir, sizes) as stage:
        urls = {
            region: stage.simulator(
                region, [t for t in tasks if t["region"] == region], list(ACCOUNTS), region
            )
            for region in REGIONS
        }
        exporter = stage.exporter(list(ACCOUNTS), urls, tasks)
        log(
            f"run {index}, accounts: exporter ready; {sizes.warmup_s:g} s warm-up, "
            f"{sizes.window_s:g} s window"
        )
        time.sleep(sizes.warmup_s)
        buckets = [Bucket(a, r, urls[r]) for a in ACCOUNTS for r in REGIONS]
        out = measure_window(stage, buckets, sizes.window_s, sizes.quota)
        out["exporter_alive"] = exporter.proc.poll() is None
        out["tasks"] = len(tasks)
        return out


def run_control(sizes: Sizes, workdir: Path, index: int, log: Log) -> dict[str, Any]:
    """The same flows, all of one account, through one endpoint serving every region: one bucket."""
    one = ACCOUNTS[0]
    tasks = [{**t, "owner": one.secret_id, "account": one.name} for t in flows(sizes)]
    with Stage(f"run{index}-control", workdir, sizes) as stage:
        url = stage.simulator("any", tasks, [one], None)
        exporter = stage.exporter([one], dict.fromkeys(REGIONS, url), tasks)
        log(
            f"run {index}, control: exporter ready; {sizes.warmup_s:g} s warm-up, "
            f"{sizes.control_window_s:g} s window"
        )
        time.sleep(sizes.warmup_s)
        out = measure_window(stage, [Bucket(one, "*", url)], sizes.control_window_s, sizes.quota)
        out["exporter_alive"] = exporter.proc.poll() is None
        out["tasks"] = len(tasks)
        return out


def run_once(sizes: Sizes, workdir: Path, index: int, log: Log) -> dict[str, Any]:
    accounts = run_accounts(sizes, workdir, index, log)
    b = accounts["buckets"]
    log(
        f"run {index}, accounts: utilisation "
        + ", ".join(f"{name} {v['utilisation']:.3f}" for name, v in b.items())
        + f"; aggregate {accounts['aggregate_rate']:.1f}/s of {accounts['sum_quotas']:g}/s"
    )
    control = run_control(sizes, workdir, index, log)
    log(f"run {index}, control: {control['aggregate_rate']:.1f}/s of {control['sum_quotas']:g}/s")
    return {"accounts": accounts, "control": control}


# --------------------------------------------------------------------------------------------- main


def sizes_from(settings: Settings, args: argparse.Namespace) -> Sizes:
    del settings  # its defaults are the other runs'; only the flags given apply here
    sizes = (SMOKE if smoke() else QUICK) if args.quick else Sizes()
    given = {
        "repeats": args.repeats,
        "latency": args.latency,
        "quota": args.quota_mariadb,
        "interval_s": args.interval,
        "window_s": args.window,
        "seed": args.seed,
    }
    sizes = replace(sizes, **{k: v for k, v in given.items() if v is not None})
    if sizes.repeats < 1 or sizes.quota <= 0 or sizes.interval_s <= 0:
        raise SystemExit("--accounts: need at least 1 repeat, a positive quota and interval")
    if not 1.0 <= max(sizes.window_s, sizes.control_window_s) <= MAX_WINDOW_S:
        raise SystemExit(f"--accounts: the window must be from 1 to {MAX_WINDOW_S:g} s")
    return sizes


def main(settings: Settings, args: argparse.Namespace) -> int:
    sizes = sizes_from(settings, args)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    output: Path = args.output or RESULTS / f"accounts-{stamp}.json"
    output.parent.mkdir(parents=True, exist_ok=True)
    began = time.monotonic()
    log = stderr_log(began)

    log(f"accounts: sizes {json.dumps(asdict(sizes))}")
    runs: list[dict[str, Any]] = []
    with work_directory(args.keep) as workdir:
        for index in range(sizes.repeats):
            try:
                runs.append(run_once(sizes, workdir, index, log))
            except Exception:  # the other repeats still run; the error goes to the JSON
                runs.append({"error": traceback.format_exc()})
                log(f"run {index} failed:\n{runs[-1]['error']}")
    summary = summarize(runs, sizes)
    text, table_rows = tables(summary, sizes)
    info = machine()
    document = {
        "accounts": {"summary": summary, "runs": runs},
        "table": table_rows,
        "sizes": asdict(sizes),
        "accounts_used": [a.name for a in ACCOUNTS],
        "regions": list(REGIONS),
        "code": code_state(),
        "machine": info,
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "duration_s": time.monotonic() - began,
    }
    output.write_text(json.dumps(document, indent=2, default=str))
    print(
        f"tencentcloud-task-exporter accounts: {info['nproc']} CPUs ({info['cpu_model']}), Python "
        f"{info['python']}, API latency {sizes.latency * 1000:.0f} ms; {PRODUCT} {ACTION} quota "
        f"{sizes.quota:g}/s per (account, endpoint); {len(ACCOUNTS)} accounts x {len(REGIONS)} regional "
        f"endpoints, {sizes.tasks_per_bucket:,} flows each, polling.interval {sizes.interval_s:g}s "
        f"({sizes.wanted_per_bucket:g} polls/s wanted per bucket); windows {sizes.window_s:g} s "
        f"(control {sizes.control_window_s:g} s) after {sizes.warmup_s:g} s; {summary['runs']} run(s)"
    )
    print(text)
    print(f"results: {output} ({time.monotonic() - began:.0f} s)")
    return 1 if summary["failed_runs"] or not summary["runs"] else 0
