"""The exporter a user would write without this project: the official SDK in a plain loop, prometheus_client.

One thread polls every watched task in turn with the synchronous Tencent Cloud SDK (one client per API, each
keeping its HTTP connection alive), sets prometheus_client Gauges, then sleeps `--interval` and starts over.
`start_http_server` serves the default registry from its own thread. There is no rate limiting: a synchronous
loop is held back by the API's latency long before it reaches a quota.

It exposes the same per-task series as the exporter (status state set, status-change and last-success
timestamps, info, errors), so the benchmark reads both the same way and scrape sizes compare like for like.

Tasks come from a JSON file: [["mariadb", "100000"], ["cdb", "5f1c..."], ...]. Credentials come from
TENCENTCLOUD_SECRET_ID / TENCENTCLOUD_SECRET_KEY. Stops on SIGTERM/SIGINT or after `--max-runtime` seconds.
With BENCH_LOOP_PROBE_FILE set, a thread measures its own wake-up lateness the way bench.probe does inside
the exporter's event loop (here the lateness comes from the GIL: the scrape thread and the poller share it).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time
from pathlib import Path
from types import FrameType
from typing import Any

from prometheus_client import Counter, Gauge, start_http_server
from tencentcloud.cdb.v20170320 import cdb_client
from tencentcloud.cdb.v20170320 import models as cdb_models
from tencentcloud.common import credential
from tencentcloud.common.exception.tencent_cloud_sdk_exception import TencentCloudSDKException
from tencentcloud.common.profile.client_profile import ClientProfile
from tencentcloud.common.profile.http_profile import HttpProfile
from tencentcloud.mariadb.v20170312 import mariadb_client
from tencentcloud.mariadb.v20170312 import models as mariadb_models

from bench.lateness import LatenessLog

LABELS = ["product", "cloud_region", "task_id"]
MARIADB_STATUSES = {0: "success", 1: "failed", 2: "running"}
KNOWN = {
    "mariadb": ("success", "failed", "running"),
    "cdb": ("initial", "running", "success", "failed", "killed", "removed", "paused", "undefined", "unknown"),
}

STATUS = Gauge("tencentcloud_task_status", "Current status (1) of the task.", [*LABELS, "status"])
CHANGED = Gauge(
    "tencentcloud_task_status_change_timestamp_seconds", "When the current status was first seen.", LABELS
)
LAST_OK = Gauge("tencentcloud_task_last_poll_success_timestamp_seconds", "Last successful poll.", LABELS)
INFO = Gauge("tencentcloud_task_info", "Task info text.", [*LABELS, "info"])
ERRORS = Counter("tencentcloud_task_errors", "Failed polls by code.", [*LABELS, "code"])
REQUESTS = Counter("tencentcloud_api_requests", "Requests sent.", ["product"])

_stop = threading.Event()


def _on_signal(signum: int, frame: FrameType | None) -> None:
    _stop.set()


def _log(msg: str, **fields: Any) -> None:
    print(json.dumps({"msg": msg, "ts": time.time(), **fields}), file=sys.stderr, flush=True)


def _probe(path: str, period: float = 0.005, threshold: float = 0.002) -> None:
    with open(path, "w", encoding="ascii") as out:
        record = LatenessLog(out, period, threshold, time.monotonic()).record
        while not _stop.is_set():
            asleep = time.monotonic()
            time.sleep(period)
            now = time.monotonic()
            record(now - asleep - period, now)


def poll(
    product: str,
    task_id: str,
    region: str,
    clients: dict[str, Any],
    last: dict[tuple[str, str], tuple[str, str]],
) -> None:
    labels = (product, region, task_id)
    REQUESTS.labels(product).inc()
    try:
        if product == "mariadb":
            flow = mariadb_models.DescribeFlowRequest()
            flow.FlowId = int(task_id)
            response = clients[product].DescribeFlow(flow)
            raw = response.Status
            status = "unknown" if raw is None else MARIADB_STATUSES.get(raw, f"status_{raw}")
            info = ""
        else:
            async_request = cdb_models.DescribeAsyncRequestInfoRequest()
            async_request.AsyncRequestId = task_id
            response = clients[product].DescribeAsyncRequestInfo(async_request)
            status = (response.Status or "unknown").lower()
            info = response.Info or ""
    except TencentCloudSDKException as exc:
        ERRORS.labels(*labels, str(exc.code)).inc()
        return
    now = time.time()
    previous = last.get((product, task_id))
    if previous is None or previous[0] != status:
        CHANGED.labels(*labels).set(now)
        for known in KNOWN[product] if status in KNOWN[product] else (*KNOWN[product], status):
            STATUS.labels(*labels, known).set(1 if known == status else 0)
    if previous is not None and previous[1] != info:
        INFO.remove(*labels, previous[1])
    INFO.labels(*labels, info).set(1)
    LAST_OK.labels(*labels).set(now)
    last[(product, task_id)] = (status, info)


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.baseline")
    parser.add_argument("--endpoint", required=True, help="HOST:PORT of the API (the simulator)")
    parser.add_argument("--tasks", required=True, help='JSON file: [["mariadb", "3340"], ["cdb", "..."]]')
    parser.add_argument("--region", default="ap-guangzhou")
    parser.add_argument("--interval", type=float, default=1.0, help="sleep between rounds")
    parser.add_argument("--max-runtime", type=float, default=3600.0)
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)

    tasks = [(str(s), str(t)) for s, t in json.loads(Path(args.tasks).read_text())]
    cred = credential.Credential(os.environ["TENCENTCLOUD_SECRET_ID"], os.environ["TENCENTCLOUD_SECRET_KEY"])
    http = HttpProfile(protocol="http", endpoint=args.endpoint, reqTimeout=10)
    clients: dict[str, Any] = {
        "mariadb": mariadb_client.MariadbClient(cred, args.region, ClientProfile(httpProfile=http)),
        "cdb": cdb_client.CdbClient(cred, args.region, ClientProfile(httpProfile=http)),
    }
    probe_file = os.environ.get("BENCH_LOOP_PROBE_FILE")
    if probe_file:
        threading.Thread(target=_probe, args=(probe_file,), name="probe", daemon=True).start()
    server, _ = start_http_server(0, addr="127.0.0.1")
    _log("listening", address=f"127.0.0.1:{server.server_port}")

    last: dict[tuple[str, str], tuple[str, str]] = {}
    deadline = time.monotonic() + args.max_runtime
    rounds = 0
    while not _stop.is_set() and time.monotonic() < deadline:
        for product, task_id in tasks:
            if _stop.is_set():
                break
            poll(product, task_id, args.region, clients, last)
        else:
            rounds += 1
            _log("round complete", round=rounds)
        _stop.wait(args.interval)
    server.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
