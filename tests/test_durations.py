"""Operation durations, below the daemon: the TaskStore observes each finished operation once (the API's times
where it gives both, else the polls' own), and the store keeps what it needs to do so across restarts (schema
version 4, migrated from version 3 in place). The daemon and the simulator together are in
tests/test_durations_live.py."""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import time
from pathlib import Path

import pytest

from exporter.catalogue.products import CDB, MARIADB, MONGODB, Observation, Phase
from exporter.config.parser import Key, WatchedTask
from exporter.exposition.metrics import Metrics
from exporter.exposition.state import TaskState, TaskStore
from exporter.store.database import OBSERVED_KEPT, SCHEMA_VERSION, OperationTimes, Store, StoreError
from tests.helpers import Samples
from tests.store_helpers import REGION

Seen = list[tuple[Key, Phase, float]]


def tracked(
    operations: dict[Key, tuple[float | None, bool]] | None = None,
) -> tuple[TaskStore, Seen, dict[Key, tuple[float | None, float | None]]]:
    seen: Seen = []
    kept: dict[Key, tuple[float | None, float | None]] = {}

    def on_duration(state: TaskState, phase: Phase, seconds: float) -> None:
        seen.append((state.task.key, phase, seconds))

    def on_operation(key: Key, since: float | None, observed: float | None) -> None:
        kept[key] = (since, observed)

    store = TaskStore(operations=operations, on_operation=on_operation, on_duration=on_duration)
    return store, seen, kept


def test_polled_times_from_first_in_progress_to_first_final_once() -> None:
    store, seen, kept = tracked()
    state = store.add(WatchedTask(CDB.name, "req-1", REGION))
    store.observe(state, Observation("initial"), 100.0)  # pending: the clock starts here
    store.observe(state, Observation("running"), 130.0)
    assert seen == []
    assert kept == {state.task.key: (100.0, None)}
    store.observe(state, Observation("success"), 400.0)
    store.observe(state, Observation("success"), 460.0)  # polled again once final: not counted again
    assert seen == [(state.task.key, Phase.SUCCEEDED, 300.0)]
    assert kept == {state.task.key: (100.0, 400.0)}


def test_api_times_win_and_failures_count_as_failed() -> None:
    store, seen, _ = tracked()
    state = store.add(WatchedTask(MONGODB.name, "mongo-1", REGION))
    store.observe(state, Observation("running", start_time=1000.0), 5000.0)
    store.observe(state, Observation("undoed", start_time=1000.0, end_time=1090.0), 9000.0)
    assert seen == [(state.task.key, Phase.FAILED, 90.0)]


def test_an_operation_first_seen_final_without_api_times_is_not_observed() -> None:
    store, seen, kept = tracked()
    state = store.add(WatchedTask(MARIADB.name, "7", REGION))
    store.observe(state, Observation("success"), 50.0)
    assert seen == []
    # Marked all the same: a later start of the same ID cannot count it with a wrong start.
    assert kept == {state.task.key: (None, 50.0)}


def test_what_the_store_kept_carries_over_a_restart() -> None:
    key = (CDB.name, REGION, "req-2")
    observed = (CDB.name, REGION, "req-3")
    store, seen, _ = tracked({key: (100.0, False), observed: (100.0, True)})
    running = store.add(WatchedTask(CDB.name, "req-2", REGION))
    done = store.add(WatchedTask(CDB.name, "req-3", REGION))
    store.observe(running, Observation("running"), 500.0)
    store.observe(running, Observation("failed"), 700.0)
    store.observe(done, Observation("success"), 700.0)
    # From the first in-progress poll before the restart; the one observed before it is not observed again.
    assert seen == [(key, Phase.FAILED, 600.0)]
    assert store.unclaimed() == []


def test_operations_of_tasks_no_longer_watched_are_unclaimed() -> None:
    gone, observed = (CDB.name, REGION, "gone"), (CDB.name, REGION, "observed")
    store, seen, _ = tracked({gone: (1.0, False), observed: (1.0, True)})
    assert sorted(store.unclaimed()) == sorted([gone, observed])
    # The observed one is still known should it come back: not observed twice.
    state = store.add(WatchedTask(CDB.name, "observed", REGION))
    store.observe(state, Observation("success"), 10.0)
    assert seen == []


def test_the_histogram_carries_the_task_type_and_phase() -> None:
    metrics = Metrics()
    store = TaskStore(on_duration=metrics.observe_duration)
    state = store.add(WatchedTask(MONGODB.name, "m", REGION, account="prod"))
    store.observe(state, Observation("running", task_type="resize"), 0.0)
    store.observe(state, Observation("success", task_type="resize", start_time=0.0, end_time=42.0), 60.0)
    samples = Samples(metrics.render(store).decode())
    labels = {"account": "prod", "product": MONGODB.name, "cloud_region": REGION, "task_type": "resize"}
    assert samples.get("tencentcloud_task_duration_seconds_count", phase="succeeded", **labels) == 1
    assert samples.get("tencentcloud_task_duration_seconds_sum", phase="succeeded", **labels) == 42.0
    assert samples.get("tencentcloud_task_duration_seconds_bucket", le="60.0", **labels) == 1
    assert samples.get("tencentcloud_task_duration_seconds_bucket", le="30.0", **labels) == 0
    phases = {labels["phase"]: value for labels, value in samples.all("tencentcloud_task_phase", task_id="m")}
    assert phases == {str(p): (1.0 if p is Phase.SUCCEEDED else 0.0) for p in Phase}


# ---- the store's rows


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "state" / "store.db"


async def test_operation_times_survive_a_reopen_and_observed_ones_outlive_their_task(db: Path) -> None:
    """Forgetting a task drops its in-progress time, but an observed duration stays (a list API may bring the
    operation back), until it is older than any list API looks back."""
    running, observed, old = (
        (CDB.name, REGION, "req-1"),
        (MARIADB.name, REGION, "9"),
        (MARIADB.name, REGION, "8"),
    )
    now = time.time()
    store = Store(db)
    await store.open()
    store.record_operation(running, now - 300, None)
    store.record_operation(observed, now - 200, now - 100)
    store.record_operation(old, now - OBSERVED_KEPT - 20, now - OBSERVED_KEPT - 10)
    await store.close()
    store = Store(db)
    await store.open()
    assert store.operations() == {
        running: OperationTimes(now - 300, None),
        observed: OperationTimes(now - 200, now - 100),
    }
    store.forget_statuses([running, observed])
    await store.close()
    store = Store(db)
    await store.open()
    try:
        assert store.operations() == {observed: OperationTimes(now - 200, now - 100)}
    finally:
        await store.close()


def test_a_forgotten_task_found_again_is_not_observed_again() -> None:
    store, seen, _ = tracked()
    task = WatchedTask(MONGODB.name, "m", REGION)
    times = {"start_time": 0.0, "end_time": 30.0}
    store.observe(store.add(task), Observation("success", **times), 100.0)
    store.remove(task.key)  # discovery's retention
    store.observe(store.add(task), Observation("success", **times), 200.0)  # the next sweep lists it again
    assert seen == [(task.key, Phase.SUCCEEDED, 30.0)]


async def test_a_bad_operations_row_is_reported_with_its_key(db: Path) -> None:
    store = Store(db)
    await store.open()
    await store.close()
    with contextlib.closing(sqlite3.connect(db)) as raw:
        raw.execute(f"INSERT INTO operations VALUES ('{CDB.name}', '{REGION}', 'x', 'soon', NULL)")
        raw.commit()
    with pytest.raises(StoreError, match=r"operations row .*/x: in_progress_since: expected a unix time"):
        await Store(db).open()


async def test_a_version_3_store_gains_the_operations_table_in_place(
    db: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    fresh = tmp_path / "fresh.db"
    store = Store(fresh)
    await store.open()
    await store.close()
    db.parent.mkdir()
    with contextlib.closing(sqlite3.connect(fresh)) as new, contextlib.closing(sqlite3.connect(db)) as old:
        for (sql,) in new.execute(
            "SELECT sql FROM sqlite_schema WHERE name != 'operations' AND sql IS NOT NULL"
        ):
            old.execute(sql)
        old.execute(f"INSERT INTO statuses VALUES ('{MARIADB.name}', '{REGION}', '7', 'running', 2.0)")
        old.execute("PRAGMA application_id = 1413698629")
        old.execute("PRAGMA user_version = 3")
        old.commit()
    with caplog.at_level(logging.INFO, logger="exporter.store"):
        store = Store(db)
        await store.open()
        assert store.operations() == {}
        assert set(store.statuses()) == {(MARIADB.name, REGION, "7")}
        store.record_operation((MARIADB.name, REGION, "7"), 2.0, None)
        await store.close()
    assert "store migrated to schema version 4 (operation durations)" in caplog.messages
    assert "store migrated to schema version 3 (product columns)" not in caplog.messages

    def schema(path: Path) -> tuple[int, set[str]]:
        with contextlib.closing(sqlite3.connect(path)) as raw:
            version = raw.execute("PRAGMA user_version").fetchone()[0]
            return version, {r[0] for r in raw.execute("SELECT sql FROM sqlite_schema WHERE sql IS NOT NULL")}

    assert schema(db) == schema(fresh)
    assert schema(db)[0] == SCHEMA_VERSION == 4
    store = Store(db)
    await store.open()
    try:
        assert store.operations() == {(MARIADB.name, REGION, "7"): OperationTimes(2.0, None)}
    finally:
        await store.close()
