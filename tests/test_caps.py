"""The documented caps fit the shipped manifests (red team finding 6): `metrics.status_series: current`
slims each task to its one current status series, `limits.discovered_tasks` is a config key beside
`limits.registered_tasks`, and the figures the docs quote are those of the manifest and the config's
defaults. The memory and scrape time at the caps are measured in `python -m bench --hardening`.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from exporter.catalogue.apifields import Observation
from exporter.catalogue.products import BY_NAME, CDB, MARIADB
from exporter.config.parser import ConfigError, LimitsConfig, MetricsConfig, WatchedTask, parse_config
from exporter.exposition.metrics import Metrics
from exporter.exposition.state import TaskStore
from exporter.simulator import Phase, SimTask, SimulatorThread
from tests.helpers import ENV, DaemonProcess, Samples, wait_for, write_config

ROOT = Path(__file__).resolve().parent.parent
MANIFEST = ROOT / "deploy" / "kubernetes" / "statefulset.yaml"


def _config(**sections: object) -> dict[str, object]:
    return {"region": "ap-guangzhou", "watch": {MARIADB.watch_key: [1]}, **sections}


def test_the_status_series_option_and_the_discovered_cap_are_config_keys() -> None:
    config = parse_config(_config(), "cfg.yaml", {})
    assert config.metrics == MetricsConfig("all")
    assert config.limits.discovered_tasks == LimitsConfig().discovered_tasks
    document = _config(metrics={"status_series": "current"}, limits={"discovered_tasks": 5000})
    config = parse_config(document, "cfg.yaml", {})
    assert config.metrics.current_status_only
    assert config.limits.discovered_tasks == 5000


@pytest.mark.parametrize(
    ("metrics", "said"),
    [
        ({"status_series": "some"}, "metrics.status_series: expected all or current, got 'some'"),
        ({"status_series": 1}, "metrics.status_series: expected all or current, got 1"),
        ({"series": "all"}, "metrics.series"),
        ("current", "metrics"),
    ],
)
def test_a_bad_status_series_is_named_with_its_key_path(metrics: object, said: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(_config(metrics=metrics), "cfg.yaml", {})
    assert any(said in problem for problem in caught.value.problems), caught.value.problems


def _exposition(store: TaskStore) -> Samples:
    return Samples(Metrics().render(store).decode())


def test_current_status_only_writes_the_one_series_at_1_and_switches_back() -> None:
    store = TaskStore(current_status_only=True)
    state = store.add(WatchedTask(CDB.name, "req-1", "ap-guangzhou"))
    store.observe(state, Observation(BY_NAME[CDB.name].statuses[1]), 1000.0)
    slim = _exposition(store)
    assert slim.all("tencentcloud_task_status") == [
        ({"product": CDB.name, "cloud_region": "ap-guangzhou", "task_id": "req-1", "account": "default",
          "status": BY_NAME[CDB.name].statuses[1]}, 1.0)
    ]  # fmt: skip
    assert slim.status(CDB.name, "req-1") == BY_NAME[CDB.name].statuses[1]
    assert slim.get("tencentcloud_task_status_change_timestamp_seconds") == 1000.0

    store.show_current_status_only(False)  # a reload to `all`: the whole state set again, at once
    full = _exposition(store)
    assert len(full.all("tencentcloud_task_status")) == len(BY_NAME[CDB.name].statuses)
    assert full.status(CDB.name, "req-1") == BY_NAME[CDB.name].statuses[1]
    # A task added later follows the store's setting.
    later = store.add(WatchedTask(CDB.name, "req-2", "ap-guangzhou"))
    store.observe(later, Observation(BY_NAME[CDB.name].statuses[2]), 1001.0)
    assert len(_exposition(store).all("tencentcloud_task_status", task_id="req-2")) == len(
        BY_NAME[CDB.name].statuses
    )


def test_the_exporter_shows_only_current_statuses_when_told(
    simulator: SimulatorThread, tmp_path: Path
) -> None:
    simulator.add_task(SimTask(MARIADB.name, "1", (Phase(0, 2),)))
    config = write_config(tmp_path / "config.yaml", simulator.url, {MARIADB.watch_key: [1]})
    document = yaml.safe_load(config.read_text())
    document["metrics"] = {"status_series": "current"}
    config.write_text(yaml.safe_dump(document))
    with DaemonProcess(["--config.file", str(config)], env=ENV) as daemon:
        wait_for(lambda: daemon.scrape().status(MARIADB.name, "1") is not None, 15, "the first poll")
        assert [value for _, value in daemon.scrape().all("tencentcloud_task_status")] == [1.0]


# ------------------------------------------------------------------------ the figures the docs quote


def _memory_limit() -> str:
    for document in yaml.safe_load_all(MANIFEST.read_text()):
        if isinstance(document, dict) and document.get("kind") == "StatefulSet":
            [container] = document["spec"]["template"]["spec"]["containers"]
            return str(container["resources"]["limits"]["memory"])
    raise AssertionError("no StatefulSet")


def test_the_docs_quote_the_manifests_memory_limit_and_the_default_caps() -> None:
    operations = (ROOT / "docs" / "operations.md").read_text()
    limit = _memory_limit()
    limits = LimitsConfig()
    section = operations[operations.index("## Sizing") :]
    assert f"`{limit}`" in section
    for figure in (limits.registered_tasks, limits.discovered_tasks):
        assert f"{figure:,}" in section
    assert re.search(rf"limits: \{{memory: {limit}\}}", MANIFEST.read_text())
    example = yaml.safe_load((ROOT / "config.example.yaml").read_text())
    assert example["limits"]["discovered_tasks"] == limits.discovered_tasks
    assert example["limits"]["registered_tasks"] == limits.registered_tasks
