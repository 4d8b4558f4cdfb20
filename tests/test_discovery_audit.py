"""Discovery through the audit trail, end to end: the real daemon (a subprocess), with an empty watch list,
reads the simulator's CloudAudit DescribeEvents, finds the operations of every product whose task ID is a
call's RequestId, polls them to their final status, and rides out errors and throttling of DescribeEvents
while status polling goes on untouched."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from exporter.catalogue.products import AUDIT_TRAIL, AUDITED, BY_NAME
from exporter.simulator import Faults, Phase, SimTask, Simulator, SimulatorThread
from tests.helpers import CREDS, ENV, DaemonProcess, Samples, wait_for
from tests.products import FACTS

REGION = "ap-guangzhou"
AUDIT = {"product": AUDIT_TRAIL.service, "action": AUDIT_TRAIL.action}


def _id(product: int, n: int) -> str:
    return f"{product:04x}{n:04x}-6c1d-4e2f-9a3b-c4d5e6f7a8b9"


def _tasks() -> list[SimTask]:
    """Two operations of each audited product, running for a second and then ending; one also a second old
    (before the exporter started), one starting after it."""
    tasks = []
    for p, product in enumerate(AUDITED):
        facts = FACTS[product.name]
        for n, started in enumerate((-1.0, 0.5)):
            phases = (Phase(0, facts.running), Phase(1.5, facts.succeeded))
            tasks.append(SimTask(product.name, _id(p, n), phases, started=started, region=REGION))
    return tasks


def _config(path: Path, url: str) -> Path:
    document: dict[str, Any] = {
        "credentials": {"secret_id": "${TENCENTCLOUD_SECRET_ID}", "secret_key": "${TENCENTCLOUD_SECRET_KEY}"},
        "region": REGION,
        "apis": {p.name: {"endpoint": url} for p in AUDITED},
        "polling": {"interval": "200ms", "finished_interval": "500ms", "timeout": "2s"},
        "watch": {},
        "discovery": {
            "regions": [REGION],
            "products": [p.name for p in AUDITED],
            "interval": "1s",
            "lookback": "1h",
            "cloudaudit": {"endpoint": url},
        },
    }
    path.write_text(yaml.safe_dump(document))
    return path


def _sum(samples: Samples, name: str, **labels: str) -> float:
    return sum(value for _, value in samples.all(name, **labels))


def test_operations_found_in_the_audit_trail_reach_their_end_through_faults_of_describe_events(
    tmp_path: Path,
) -> None:
    tasks = _tasks()
    with SimulatorThread(Simulator([CREDS])) as sim:
        for task in tasks:
            sim.add_task(task)
        config = _config(tmp_path / "config.yaml", sim.url)
        with DaemonProcess(["--config.file", str(config)], env=ENV) as daemon:
            wait_for(
                lambda: all(daemon.scrape().status(t.product, t.task_id) for t in tasks),
                10,
                "every operation discovered and polled",
                interval=0.1,
            )
            # Errors of DescribeEvents: each failed sweep counts for every product and region it covers.
            error = Faults(error_code="InternalError.SearchError")
            sim.set_action_faults(AUDIT_TRAIL.service, AUDIT_TRAIL.action, error)
            wait_for(
                lambda: all(
                    daemon.scrape().get(
                        "tencentcloud_discovery_errors_total",
                        product=p.name,
                        code="InternalError.SearchError",
                    )
                    for p in AUDITED
                ),
                5,
                "failed sweeps counted for every product",
                interval=0.1,
            )
            # Throttling: the page is asked again within the sweep, which then succeeds.
            sim.set_action_faults(
                AUDIT_TRAIL.service, AUDIT_TRAIL.action, Faults(error_code="RequestLimitExceeded")
            )
            wait_for(
                lambda: _sum(daemon.scrape(), "tencentcloud_api_throttled_requests_total", **AUDIT) >= 1,
                5,
                "a throttled DescribeEvents",
                interval=0.1,
            )
            sim.set_action_faults(AUDIT_TRAIL.service, AUDIT_TRAIL.action, Faults())
            wait_for(
                lambda: all(
                    daemon.scrape().get("tencentcloud_discovery_consecutive_failed_sweeps", product=p.name)
                    == 0
                    and all(
                        daemon.scrape().status(t.product, t.task_id) == FACTS[t.product].exported_succeeded
                        for t in tasks
                    )
                    for p in AUDITED
                ),
                10,
                "the sweeps recovered and every operation succeeded",
                interval=0.1,
            )
            samples = daemon.scrape()
        stats = sim.stats()

    for product in AUDITED:
        # Exactly the operations: not the failed or refused calls beside them in the trail.
        assert samples.get("tencentcloud_discovery_tasks", product=product.name, cloud_region=REGION) == 2
        for labels, _ in samples.all("tencentcloud_task_info", product=product.name):
            assert labels["source"] == "discovered"
            assert labels["task_type"] in product.audit_events
        # Status polling went on untouched: not an error, not a throttled request.
        status = {"product": product.name, "action": product.action}
        assert not samples.all("tencentcloud_api_errors_total", **status)
        assert _sum(samples, "tencentcloud_api_throttled_requests_total", **status) == 0
        assert stats["services"][product.name][BY_NAME[product.name].action]["throttled"] == 0
    audit = stats["services"][AUDIT_TRAIL.service][AUDIT_TRAIL.action]
    assert audit["faults"]["error_code"] >= 2
    assert _sum(samples, "tencentcloud_api_requests_total", **AUDIT) >= 3
