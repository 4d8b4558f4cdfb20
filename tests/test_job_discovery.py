"""DTS's jobs end to end: the real daemon (a subprocess) discovering migration and sync jobs nobody named from
the simulator's job lists (DescribeMigrationJobs, DescribeSyncJobs: no time bounds, every job of the region)
and following them to their final status, a replicating sync job as ongoing; a job that ended before the
lookback is history and is not taken."""

from __future__ import annotations

from pathlib import Path

import yaml

from exporter.catalogue.products import DTS, DTS_SYNC
from exporter.simulator import Phase, SimTask, SimulatorThread
from tests.helpers import ENV, DaemonProcess, swept, wait_for, wait_for_sweeps

REGION = "ap-guangzhou"
_DAY = 86400.0
MIGRATION = "dts-amm1jw5q"
OLD_MIGRATION = "dts-0ld1job5"
SYNCING = "sync-n3gh7md9"
BROKEN = "sync-bkm3mppi"


def _config(path: Path, url: str) -> Path:
    document = {
        "credentials": {"secret_id": "${TENCENTCLOUD_SECRET_ID}", "secret_key": "${TENCENTCLOUD_SECRET_KEY}"},
        "region": REGION,
        "apis": {DTS.name: {"endpoint": url}, DTS_SYNC.name: {"endpoint": url}},
        "polling": {"interval": "200ms", "finished_interval": "500ms", "timeout": "2s"},
        "watch": {},
        "discovery": {
            "regions": [REGION],
            "products": [DTS.name, DTS_SYNC.name],
            "interval": "1s",
            "lookback": "1h",
            "tag_labels": ["team"],
        },
    }
    path.write_text(yaml.safe_dump(document))
    return path


def test_migration_and_sync_jobs_nobody_named_are_discovered_and_followed_to_their_end(
    simulator: SimulatorThread, tmp_path: Path
) -> None:
    for task in (
        SimTask(
            DTS.name,
            MIGRATION,
            (Phase(0, "checking"), Phase(1, "running"), Phase(2, "success")),
            tags=(("team", "dba"),),
        ),
        # Ran three days ago: the list still shows it, two days after it ended.
        SimTask(
            DTS.name,
            OLD_MIGRATION,
            (Phase(-3 * _DAY, "running"), Phase(-2 * _DAY, "success")),
            started=-3 * _DAY,
        ),
        SimTask(
            DTS_SYNC.name,
            SYNCING,
            (Phase(0, "Initialized"), Phase(1, "Checking"), Phase(2, "Running", progress=100)),
        ),
        SimTask(
            DTS_SYNC.name,
            BROKEN,
            (Phase(0, "Running"), Phase(1, "ResumableErr", "binlog purged on the source")),
        ),
    ):
        simulator.add_task(task)
    config = _config(tmp_path / "config.yaml", simulator.url)
    with DaemonProcess(["--config.file", str(config)], env=ENV) as daemon:

        def settled() -> bool:
            samples = daemon.scrape()
            return (
                samples.status(DTS.name, MIGRATION) == "success"
                and samples.status(DTS_SYNC.name, SYNCING) == "running"
                and samples.status(DTS_SYNC.name, BROKEN) == "resumableerr"
            )

        wait_for(settled, 15, "both kinds of job at their last status", interval=0.1)
        samples = daemon.scrape()
        phases = {
            (labels["product"], labels["task_id"]): labels["phase"]
            for labels, value in samples.all("tencentcloud_task_phase")
            if value == 1
        }
        assert phases == {
            (DTS.name, MIGRATION): "succeeded",
            (DTS_SYNC.name, SYNCING): "ongoing",  # replicating: in progress for good, never late
            (DTS_SYNC.name, BROKEN): "failed",
        }
        info = {labels["task_id"]: labels for labels, _ in samples.all("tencentcloud_task_info")}
        assert {info[t]["source"] for t in (MIGRATION, SYNCING, BROKEN)} == {"discovered"}
        assert info[MIGRATION]["team"] == "dba"
        assert info[BROKEN]["info"] == "binlog purged on the source"
        # The old job is history: it ended before the lookback, so no sweep takes it.
        wait_for_sweeps(daemon, DTS.name, REGION, swept(samples, DTS.name, REGION), 1)
        assert OLD_MIGRATION not in {
            labels["task_id"] for labels, _ in daemon.scrape().all("tencentcloud_task_info")
        }

    stats = simulator.stats()["services"]
    for product, actions in stats.items():
        for action, counted in actions.items():
            assert counted["throttled"] == 0, (product, action, counted)
    assert stats[DTS.name][DTS.listing.action if DTS.listing else ""]["accepted"] > 0
    assert stats[DTS_SYNC.name][DTS_SYNC.action]["accepted"] > 0
