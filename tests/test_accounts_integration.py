"""Two accounts, two regional endpoints: the real exporter against the simulator run as two processes.

Each simulator stands for one regional endpoint (it refuses any other region) and knows both accounts' keys;
each account owns tasks in both regions, more than the quota lets the exporter poll. Tencent counts a quota
per (sub-account, API, endpoint), so the exporter should spend all four quotas at once, without one request
over any of them, and every request signed by the task's own account and sent to the task's own region's
endpoint: all checked from the simulators' own counters. How much of each quota it spends (0.95 and more) is
measured by `python -m bench --accounts`; this test checks a floor that a loaded or single-core machine
still reaches.
"""

from __future__ import annotations

import contextlib
import json
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from exporter.catalogue.products import MARIADB
from exporter.simulator.scenario import Phase, SimTask, task_to_dict
from tests.helpers import DaemonProcess, wait_for
from tests.simulator_sdk import SimulatorProcess

QUOTA = 20.0  # DescribeFlow per (account, endpoint), low so four buckets stay light on two cores
TASKS_PER_BUCKET = 40  # polled every second: twice what the quota allows
WINDOW = 3.0  # seconds measured, all four buckets in the same seconds
# Each bucket's least share of its quota in the window. The exporter spends 0.96 of it (the bench measures
# that); four buckets busy at once on a loaded or single-core machine stay well above this floor.
FLOOR = 0.5
ACCOUNTS = {"prod": ("AKIDprod0000", "prod-secret-key"), "staging": ("AKIDstaging0", "staging-secret-key")}
REGIONS = ("ap-guangzhou", "ap-shanghai")
ACTION = "DescribeFlow"


def _post(url: str, document: object) -> Any:
    request = urllib.request.Request(
        url, data=json.dumps(document).encode(), headers={"Content-Type": "application/json"}, method="POST"
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        return json.loads(response.read())


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.loads(response.read())


def _task_ids(account: str, region: str) -> list[int]:
    """Flow IDs of one account in one region; distinct everywhere, as a task's key has no account."""
    base = 1000 * (1 + list(ACCOUNTS).index(account)) + 100 * (1 + REGIONS.index(region))
    return [base + n for n in range(TASKS_PER_BUCKET)]


@pytest.fixture
def simulators() -> Iterator[dict[str, SimulatorProcess]]:
    keys = [f"--credentials={secret_id}:{secret_key}" for secret_id, secret_key in ACCOUNTS.values()]
    with contextlib.ExitStack() as stack:
        started = {}
        for region in REGIONS:
            args = ["--region", region, "--quota", f"mariadb={QUOTA:g}", *keys]
            started[region] = stack.enter_context(SimulatorProcess(args))
        for region, simulator in started.items():
            tasks = [
                task_to_dict(SimTask(MARIADB.name, str(flow), (Phase(0, 2),), region=region, owner=secret_id))
                for account, (secret_id, _) in ACCOUNTS.items()
                for flow in _task_ids(account, region)
            ]
            assert _post(simulator.url + "/_sim/tasks", {"tasks": tasks}) == {"added": len(tasks)}
        yield started


def _config(simulators: dict[str, SimulatorProcess]) -> dict[str, Any]:
    first, second = REGIONS
    return {
        "accounts": [
            {"name": name, "credentials": {"secret_id": secret_id, "secret_key": secret_key}}
            for name, (secret_id, secret_key) in ACCOUNTS.items()
        ],
        "apis": {
            MARIADB.name: {
                "endpoint": simulators[first].url,  # every region but the override
                "endpoints": {second: simulators[second].url},
                "rate_limit": QUOTA,
            }
        },
        "polling": {"interval": "1s", "finished_interval": "1s", "max_backoff": "2s"},
        "watch": {
            "mariadb_flows": [
                {"id": flow, "region": region, "account": account}
                for account in ACCOUNTS
                for region in REGIONS
                for flow in _task_ids(account, region)
            ]
        },
    }


def _accepted(simulator: SimulatorProcess, secret_id: str, start: float, end: float) -> int:
    query = f"secret_id={secret_id}&product=mariadb&action={ACTION}&start={start}&end={end}"
    return int(_get(f"{simulator.url}/_sim/stats/accepted?{query}")["accepted"])


def test_four_quotas_spent_at_once_each_by_its_own_account_at_its_own_endpoint(
    simulators: dict[str, SimulatorProcess], tmp_path: Path
) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(_config(simulators)))
    with DaemonProcess(["--config.file", str(config)]) as daemon:
        per_bucket = [(s, secret_id) for s in simulators.values() for secret_id, _ in ACCOUNTS.values()]

        # Warmed up: every bucket has spent a second's quota (first polls are spread over an interval).
        def warm() -> bool:
            return all(_accepted(s, sid, 0, s.stats()["now"]) >= QUOTA for s, sid in per_bucket)

        wait_for(warm, 30, "every (account, endpoint) bucket busy")
        # One window on each simulator's clock, measured after it has passed: the same wall-clock seconds.
        ends = {id(s): s.stats()["now"] for s in simulators.values()}
        wait_for(
            lambda: all(s.stats()["now"] >= ends[id(s)] + WINDOW for s in simulators.values()), 30, "window"
        )
        use = {
            (region, account): _accepted(s, secret_id, ends[id(s)], ends[id(s)] + WINDOW) / (QUOTA * WINDOW)
            for region, s in simulators.items()
            for account, (secret_id, _) in ACCOUNTS.items()
        }
        # All four spent at once: each bucket a good share of its own quota in the same seconds.
        assert min(use.values()) >= FLOOR, use

        for region, simulator in simulators.items():
            stats = simulator.stats()
            assert stats["region"] == region
            for secret_id, _ in ACCOUNTS.values():
                counters = stats["accounts"][secret_id][f"mariadb:{ACTION}"]
                # Zero violations: never more than the quota in any sliding second, nothing throttled.
                assert counters["max_in_window"] <= QUOTA, (region, secret_id, counters)
                assert counters["throttled"] == 0, (region, secret_id, counters)
                # Every request by the task's own account (foreign: another account's task) at its own
                # region's endpoint (wrong_region: another region's request or task).
                assert counters["foreign"] == 0, (region, secret_id, counters)
                assert counters["wrong_region"] == 0, (region, secret_id, counters)
                assert counters["errors"] == {}, (region, secret_id, counters)

        samples = daemon.scrape()
        for simulator in simulators.values():
            host = simulator.url.removeprefix("http://")
            for account in ACCOUNTS:
                bucket = {"account": account, "product": MARIADB.name, "action": ACTION, "api_endpoint": host}
                assert samples.get("tencentcloud_api_rate_limit_requests_per_second", **bucket) == QUOTA
                assert (
                    samples.get("tencentcloud_api_current_rate_limit_requests_per_second", **bucket) == QUOTA
                )
                assert samples.get("tencentcloud_api_throttled_requests_total", **bucket) == 0
                assert (samples.get("tencentcloud_api_requests_total", **bucket) or 0) > 0
        flow = _task_ids("staging", REGIONS[1])[0]
        assert samples.status(MARIADB.name, str(flow)) == "running"
        [(labels, _)] = samples.all("tencentcloud_task_info", task_id=str(flow))
        assert (labels["account"], labels["cloud_region"]) == ("staging", REGIONS[1])
        # One account's keys never show in the exporter's output, let alone next to another's.
        text = "\n".join(daemon.lines) + samples.text
        assert not any(key in text for _, key in ACCOUNTS.values())
