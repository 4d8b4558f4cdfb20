"""Every product of the catalogue end to end: the real daemon polls the simulator, which answers each
product's status API in that product's own shape, and the parsed /metrics shows statuses moving through a
timeline, the extra fields, unknown IDs counted with no status series, and not one quota violation."""

from __future__ import annotations

from pathlib import Path

import yaml

from exporter.catalogue.products import BY_NAME, PRODUCTS, Product
from exporter.simulator import Phase, SimTask, SimulatorThread
from tests.helpers import CREDS, DaemonProcess, Samples, wait_for
from tests.products import FACTS, tid

RUNS_FOR = 3.0  # seconds in the running status before the success


def task_ids(product: Product) -> tuple[str, str]:
    """A watched ID that exists, and one that does not (an instance's task: of an unknown instance)."""
    if FACTS[product.name].instance_tasks:
        return tid(product.name, "4242"), tid(product.name, "999999", "gone")
    return ("4242", "999999") if product.id_kind.integer else ("req-4242", "req-unknown")


def test_every_product_is_polled_through_its_timeline(simulator: SimulatorThread, tmp_path: Path) -> None:
    assert set(FACTS) == set(BY_NAME)  # a new product needs its row in tests/products.py
    watch: dict[str, list[str]] = {}
    for product in PRODUCTS:
        running, done = FACTS[product.name].running, FACTS[product.name].succeeded
        known, unknown = task_ids(product)
        phases = (Phase(0, running, progress=40), Phase(RUNS_FOR, done))  # type: ignore[arg-type]
        simulator.add_task(
            SimTask(product.name, known, phases, task_type="ModifySpec", instance_id="ins-1", started=-60)
        )
        watch[product.watch_key] = [known, unknown]
    config = tmp_path / "config.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "credentials": {"secret_id": CREDS.secret_id, "secret_key": CREDS.secret_key},
                "region": "ap-guangzhou",
                "apis": {s.name: {"endpoint": simulator.url} for s in PRODUCTS},
                "polling": {"interval": "200ms", "finished_interval": "1s", "timeout": "2s"},
                "watch": watch,
            }
        )
    )
    seen: dict[str, set[str]] = {s.name: set() for s in PRODUCTS}
    with DaemonProcess(["--config.file", str(config)]) as daemon:

        def all_done() -> bool:
            samples = daemon.scrape()
            for product in PRODUCTS:
                status = samples.status(product.name, task_ids(product)[0])
                if status is not None:
                    seen[product.name].add(status)
            return all(FACTS[s].exported_succeeded in seen[s] for s in seen)

        wait_for(all_done, 30, "every product's task to reach its success status")
        wait_for(
            lambda: all(
                daemon.scrape().get("tencentcloud_task_errors_total", task_id=task_ids(s)[1])
                for s in PRODUCTS
            ),
            15,
            "every product's unknown ID to be counted",
        )
        samples = daemon.scrape()

    for product in PRODUCTS:
        known, unknown = task_ids(product)
        running, done = FACTS[product.name].exported_running, FACTS[product.name].exported_succeeded
        assert {running, done} <= seen[product.name], product.name
        # The unknown ID: counted under the product's not-found code, and no status series.
        errors = samples.all("tencentcloud_task_errors_total", product=product.name, task_id=unknown)
        assert [labels["code"] for labels, _ in errors] == [product.not_found_codes[0]], product.name
        assert samples.all("tencentcloud_task_status", product=product.name, task_id=unknown) == []
        start = samples.get("tencentcloud_task_start_timestamp_seconds", product=product.name, task_id=known)
        end = samples.get("tencentcloud_task_end_timestamp_seconds", product=product.name, task_id=known)
        # Where the product reports times, they are there; the task started a minute before the simulator
        # had it, and ended RUNS_FOR after that (the simulator writes whole seconds in UTC+8).
        if "StartTime" in product.extra_fields:
            polled = samples.get("tencentcloud_task_last_poll_success_timestamp_seconds", task_id=known)
            assert start is not None
            assert polled is not None
            assert 40 < polled - start < 120, (product.name, polled - start)
        else:
            assert start is None, product.name
        if "EndTime" in product.extra_fields:
            assert end is not None
            assert start is not None
            assert 55 <= end - start <= 70, product.name
        else:
            assert end is None, product.name
        progress = samples.get("tencentcloud_task_progress_ratio", product=product.name, task_id=known)
        # A progress field, at the top or inside an object (DTS sync's Detail.Progress).
        reports_progress = any(name.split(".")[-1] == "Progress" for name in product.extra_fields)
        assert progress == (1.0 if reports_progress else None), product.name
        if "TaskType" in product.extra_fields:
            assert samples.get(
                "tencentcloud_task_info", task_id=known, task_type="ModifySpec", instance_id="ins-1"
            )
    # Not one request over any product's quota.
    for product, actions in simulator.stats()["services"].items():
        for action, counters in actions.items():
            assert counters["throttled"] == 0, (product, action)
    assert Samples(samples.text).get("tencentcloud_api_throttled_requests_total") == 0
