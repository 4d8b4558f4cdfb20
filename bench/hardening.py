"""Hardening figures for the issue "No input takes the exporter down": `python -m bench --hardening`.

1. registration: POST /api/v1/tasks throughput and latency at two registry sizes, the fill between them, and
   the bytes the exporter wrote to its storage;
2. scrape storm: each API's quota utilisation without, then with `scrapers` clients scraping back to back;
3. kill -9 right after the last answer to a burst of registrations, restart, count what was lost;
4. a flood of malformed requests quoting the API token and a password: log bytes per 1,000, credentials in
   the log, each API's quota utilisation without and with it;
5. the caps: RSS and a full /metrics at the cap of discovered plus registered tasks (`hardening_caps.py`).

Each runs against its own simulator and exporter processes on 127.0.0.1, in a temporary folder; the storage
flag is --storage.path once `python -m exporter --help` lists it, else --tasks.state-file. bench/README.md
says what each figure means.

Parts 1 and 3 are in `hardening_registration.py`, part 2 in `hardening_scrapes.py`, part 4 in
`hardening_flood.py`, part 5 in `hardening_caps.py`, what they share (sizes, the stage, the HTTP client) in
`hardening_stage.py`; this module runs them and writes the table and the JSON.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
import traceback
from dataclasses import asdict
from pathlib import Path
from typing import Any

from bench.common import RESULTS, Settings, code_state, fmt, machine, smoke, stderr_log, work_directory
from bench.hardening_caps import caps, caps_rows
from bench.hardening_flood import bad_request_flood, flood_rows
from bench.hardening_pages import pages_rows, pages_storm
from bench.hardening_registration import kill9, kill9_rows, registration, registration_rows
from bench.hardening_scrapes import scrape_rows, scrape_storm
from bench.hardening_stage import QUICK, SMOKE, Row, Sizes, storage_flag

# --------------------------------------------------------------------------------------------- report

PARTS = {
    "registration": (registration, registration_rows),
    "scrapes": (scrape_storm, scrape_rows),
    "kill9": (kill9, kill9_rows),
    "flood": (bad_request_flood, flood_rows),
    "caps": (caps, caps_rows),
    "pages": (pages_storm, pages_rows),  # /tasks read by 8 clients at 20,000 tasks (bench/hardening_pages.py)
}


def table(results: dict[str, Any]) -> tuple[str, list[dict[str, Any]]]:
    rows: list[Row] = []
    for name, part in results.items():
        if "error" in part:
            rows.append((f"{name}: FAILED", part["error"].strip().splitlines()[-1][:60], "", False))
        else:
            rows += PARTS[name][1](part)
    cells = [["figure", "value", "target", "met"]]
    for label, value, target, met in rows:
        digits = 3 if isinstance(value, float) and abs(value) < 10 else 1
        text = value if isinstance(value, str) else fmt(value, "", digits)
        cells.append([label, text, target, "" if met is None else ("yes" if met else "NO")])
    widths = [max(len(c[i]) for c in cells) for i in range(4)]
    lines = [
        "  ".join(
            v.ljust(w) if i == 0 else v.rjust(w) for i, (v, w) in enumerate(zip(c, widths, strict=True))
        )
        for c in cells
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    keys = ("figure", "value", "target", "met")
    return "\n".join(line.rstrip() for line in lines), [dict(zip(keys, row, strict=True)) for row in rows]


def main(settings: Settings, args: argparse.Namespace) -> int:
    chosen = [name.strip() for name in args.parts.split(",")] if args.parts else list(PARTS)
    unknown = [name for name in chosen if name not in PARTS]
    if unknown:
        print(
            f"error: --parts: unknown {', '.join(unknown)}; the parts are {', '.join(PARTS)}", file=sys.stderr
        )
        return 2
    sizes = (SMOKE if smoke() else QUICK) if args.quick else Sizes()
    stamp = time.strftime("%Y%m%d-%H%M%S")
    output: Path = args.output or RESULTS / f"hardening-{stamp}.json"
    output.parent.mkdir(parents=True, exist_ok=True)
    began = time.monotonic()
    log = stderr_log(began)

    try:
        flag = storage_flag()
    except (RuntimeError, subprocess.SubprocessError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    log(f"hardening: storage flag {flag}, sizes {json.dumps(asdict(sizes))}")
    results: dict[str, Any] = {}
    with work_directory(args.keep) as workdir:
        for name in chosen:
            run_part = PARTS[name][0]
            try:
                results[name] = run_part(settings, sizes, workdir, flag, log)
            except Exception:  # the other parts still run; the error goes to the table and the JSON
                results[name] = {"error": traceback.format_exc()}
                log(f"{name} failed:\n{results[name]['error']}")
    text, rows = table(results)
    info = machine()
    document = {
        "hardening": results,
        "table": rows,
        "sizes": asdict(sizes),
        "settings": asdict(settings),
        "storage_flag": flag,
        "code": code_state(),
        "machine": info,
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "duration_s": time.monotonic() - began,
    }
    output.write_text(json.dumps(document, indent=2, default=str))
    machine_text = f"{info['nproc']} CPUs ({info['cpu_model']}), Python {info['python']}"
    quotas = f"{settings.quota_mariadb:g}/{settings.quota_cdb:g}"
    api = f"API latency {settings.latency * 1000:.0f} ms, quotas {quotas}"
    print(f"tencentcloud-task-exporter hardening: {machine_text}, {api} req/s, storage {flag}")
    print(text)
    slices = (results.get("registration") or {}).get("fill", {}).get("slices", [])
    if slices:
        shown = ", ".join(f"{c['registry_from']:,}: {fmt(c['per_s'], '', 0)}/s" for c in slices)
        print(f"fill rate by registry size: {shown}")
    print(f"results: {output} ({time.monotonic() - began:.0f} s)")
    return 1 if any("error" in r for r in results.values()) else 0
