"""The exporter's own list parser (`catalogue.listapis`) reading the simulator's list answers: it finds the
same operations, with the same fields, that each product's official SDK client reads from them
(tests/simulator_sdk.py), and refuses an answer without its total count.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from typing import Any

import pytest

from exporter.catalogue.products import BY_NAME, REDIS, InvalidResponse
from exporter.simulator import Faults, Phase
from tests.helpers import FakeClock
from tests.products import LIST_SDKS
from tests.simulator_listing import (
    LIST_PRODUCTS,
    SNAPSHOTS,
    SPELLING,
    START,
    Start,
    china_time,
    listing_simulators,
    task,
    task_id,
)
from tests.simulator_sdk import sdk_call, sdk_client, sdk_list_items, sdk_list_raw


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(START)


@pytest.fixture
def start(clock: FakeClock, wall: float) -> Iterator[Start]:
    with listing_simulators(clock, wall) as start_listing:
        yield start_listing


# --------------------------------------------------------------------------- the exporter's parser


def sdk_fields(product: str, item: Any) -> dict[str, Any]:
    """What one SDK item says of its operation, read from the SDK's model (empty text: None)."""
    if product in SNAPSHOTS:
        return {
            "task_id": str(item.Locker),
            "instance_id": item.InstanceId,
            "instance_name": item.InstanceName or None,
            "tags": tuple((t.TagKey, t.TagValue) for t in item.ResourceTags),
        }
    sdk = LIST_SDKS[product]
    if sdk.every_job:  # a DTS job: its own operation, on no one instance
        fields = sdk.progress_field.split(".") if sdk.progress_field else []
        progress = functools.reduce(getattr, fields, item) if fields else None
        return {
            "task_id": item.JobId,
            "start": item.StartTime,
            "end": item.EndTime or None,
            "task_type": None,
            "instance_id": None,
            "progress": None if progress is None else progress / 100,
            "tags": tuple((t.TagKey, t.TagValue) for t in item.Tags),
        }
    task, instance, progress = (
        getattr(item, name) for name in (sdk.id_field, sdk.instance_field, sdk.progress_field)
    )
    if isinstance(instance, list):  # CDB's InstanceIds
        instance = (instance or [None])[0]
    if not instance and sdk.fallback_instance_field:
        instance = getattr(item, sdk.fallback_instance_field)
    return {
        "task_id": str(task),
        "start": item.StartTime,
        "end": item.EndTime or None,
        "task_type": item.TaskType or None,
        "instance_id": instance or None,
        "progress": progress / 100,
    }


@pytest.mark.parametrize("product", LIST_PRODUCTS)
def test_the_exporters_parser_reads_the_simulators_list_answers(
    start: Start, clock: FakeClock, product: str, wall: float
) -> None:
    running, done, _ = SPELLING[product]
    resize = (Phase(0, running, progress=30), Phase(600, done))
    tasks = [
        task(
            product,
            1,
            *resize,
            started=-120,
            task_type="Resize",
            instance_name="orders",
            tags=(("team", "dba"),),
        ),
        task(product, 2, Phase(0, running), Phase(20, done), started=-60, task_type="Reboot"),
    ]
    if LIST_SDKS[product].cluster_prefix:  # a cluster's task
        tasks.append(task(product, 3, instance=f"{LIST_SDKS[product].cluster_prefix}c0ffee00", started=-30))
    thread = start(*tasks)
    clock.advance(30)
    spec = BY_NAME[product]
    listing = spec.listing
    assert listing is not None
    client = sdk_client(product, thread.url)
    # The exporter's own request: its page payload, over the last hour.
    payload = listing.payload(0, wall - 3600, wall + 30)

    page = listing.page(sdk_list_raw(client, product, payload), spec.id_kind)
    total, items = sdk_list_items(client, product, **payload)
    assert (page.total, page.size) == (total, len(items))
    if product in SNAPSHOTS:
        assert [i.Locker for i in items] == [1001]  # Status [1]: only the instance whose flow still runs
    assert len(page.items) == len(items) >= 1
    for parsed, item in zip(page.items, items, strict=True):
        expected = sdk_fields(product, item)
        assert parsed.task_id == expected["task_id"]
        assert parsed.instance_id == expected["instance_id"]
        if product in SNAPSHOTS:
            assert (parsed.instance_name, parsed.tags) == (expected["instance_name"], expected["tags"])
            assert (parsed.instance_name, parsed.tags) == ("orders", (("team", "dba"),))
            continue
        assert china_time(parsed.start_time or 0) == expected["start"]
        assert (china_time(parsed.end_time) if parsed.end_time else None) == expected["end"]
        assert parsed.task_type == expected["task_type"]
        if expected["progress"] is None:
            assert parsed.progress is None
        else:
            assert parsed.progress == pytest.approx(expected["progress"])
        if "tags" in expected:
            assert parsed.tags == expected["tags"]
        # And each is an ID the status action answers for.
        sdk_call(client, product, parsed.task_id)
    if product not in SNAPSHOTS:
        # A job list has no type, and a migration job's item no progress.
        jobs, progress = LIST_SDKS[product].every_job, bool(LIST_SDKS[product].progress_field)
        first = {p.task_id: p for p in page.items}[task_id(product, 1)]
        assert (first.start_time, first.end_time) == (wall - 120, None)
        assert first.progress == (pytest.approx(0.3) if progress else None)
        second = {p.task_id: p for p in page.items}[task_id(product, 2)]
        assert (second.end_time, second.progress) == (wall + 20, 1.0 if progress else None)
        assert second.task_type == (None if jobs else "Reboot")


def test_a_missing_total_count_is_an_invalid_answer_to_the_exporter(start: Start) -> None:
    thread = start(task(REDIS.name, 1))
    thread.set_action_faults(REDIS.name, "DescribeTaskList", Faults(missing_status=True))
    client = sdk_client(REDIS.name, thread.url)
    raw = sdk_list_raw(client, REDIS.name, {})
    assert "TotalCount" not in raw
    assert len(raw["Tasks"]) == 1
    listing = BY_NAME[REDIS.name].listing
    assert listing is not None
    with pytest.raises(InvalidResponse):
        listing.page(raw, BY_NAME[REDIS.name].id_kind)
    assert thread.stats()["services"][REDIS.name]["DescribeTaskList"]["faults"] == {"missing_status": 1}
