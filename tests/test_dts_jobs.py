"""DTS's jobs in the catalogue: the sync jobs' status request (DescribeSyncJobs filtered by JobId, the job in
JobList), the phases of their statuses (a job replicating is ongoing), and the two job lists discovery reads
(statuses in the status API's words where the list says the same thing; every answer bounded, malformed
ones refused). Shapes as the official SDK's models.py (dts v20211206) gives them."""

from __future__ import annotations

import json

import pytest

from exporter.catalogue.listapis import PAGE_SIZE, TAG_MAX
from exporter.catalogue.products import (
    DTS,
    DTS_SYNC,
    FINAL_PHASES,
    IN_PROGRESS_PHASES,
    NOT_FOUND,
    InvalidResponse,
    Phase,
)
from exporter.polling.client import INVALID_RESPONSE, classify


def _answer(body: dict[str, object]) -> bytes:
    return json.dumps({"Response": {**body, "RequestId": "r-1"}}).encode()


def _job(**fields: object) -> dict[str, object]:
    return {"JobId": "sync-werwfs23", "Status": "Running", **fields}


def test_a_sync_job_is_read_from_the_one_item_of_its_job_list() -> None:
    job = _job(
        Status="ResumableErr",
        StartTime="2024-03-01 10:00:00",
        EndTime="2024-03-01 12:00:00",
        Detail={"Progress": 40, "Message": "binlog purged"},
    )
    outcome = classify(200, _answer({"TotalCount": 1, "JobList": [job]}), DTS_SYNC)
    observed = outcome.observation
    assert observed is not None
    assert (observed.status, observed.info, observed.progress) == ("resumableerr", "binlog purged", 0.4)
    assert observed.end_time is not None
    assert observed.start_time is not None
    assert observed.end_time - observed.start_time == 7200
    assert DTS_SYNC.phase(observed.status) is Phase.FAILED
    # A job without Detail, or with one of another type, still has its status.
    for bare in (_job(), _job(Detail=None), _job(Detail="x"), _job(Detail={"Progress": "40"})):
        plain = classify(200, _answer({"TotalCount": 1, "JobList": [bare]}), DTS_SYNC).observation
        assert plain is not None
        assert (plain.status, plain.progress, plain.info) == ("running", None, None)


def test_an_unknown_sync_job_is_an_empty_job_list_and_odd_lists_are_invalid() -> None:
    for empty in ({"TotalCount": 0, "JobList": []}, {"TotalCount": 0, "JobList": None}):
        outcome = classify(200, _answer(empty), DTS_SYNC)
        assert (outcome.code, outcome.observation) == (NOT_FOUND, None)
    assert DTS_SYNC.is_not_found(NOT_FOUND)
    assert DTS_SYNC.is_not_found("ResourceNotFound.JobNotExist")  # errorcodes.py: the job does not exist
    for odd in ({"JobList": "x"}, {"JobList": [1]}, {"JobList": [{"Status": 5}]}, {"JobList": [{}]}):
        assert classify(200, _answer(odd), DTS_SYNC).code == INVALID_RESPONSE


def test_a_replicating_sync_job_is_ongoing_and_a_stopped_one_succeeded() -> None:
    assert DTS_SYNC.phase("running") is Phase.ONGOING
    assert Phase.ONGOING in IN_PROGRESS_PHASES
    assert Phase.ONGOING not in FINAL_PHASES
    assert DTS_SYNC.success_status == "stopped"  # what the Terraform provider's stop operation waits for
    assert DTS_SYNC.failure_statuses == {"checknotpass", "resumableerr", "failed", "released"}
    assert {s for s, p in DTS_SYNC.phases if p is Phase.PENDING} == {"uninitialized", "initialized"}
    # Paused or on their way somewhere: running, so a long pause does show as late.
    for word in ("checking", "checkpass", "readyrunning", "pausing", "paused", "stopping", "resuming"):
        assert DTS_SYNC.phase(word) is Phase.RUNNING, word
    # Only the sync jobs' replication is ongoing: a migration job's running is on its way to success.
    assert DTS.phase("running") is Phase.RUNNING


def test_sync_jobs_are_signed_for_dts_and_ask_by_job_id() -> None:
    # Served by the migration jobs' service, whose key is the product's.
    assert (DTS_SYNC.api_service, DTS.api_service) == (DTS.name, DTS.name)
    assert DTS_SYNC.default_endpoint == DTS.default_endpoint
    assert DTS_SYNC.payload("sync-werwfs23") == {"JobId": "sync-werwfs23"}
    # The list is the status action itself: discovery spends part of its one quota.
    assert DTS_SYNC.listing_shares_quota
    assert not DTS.listing_shares_quota


def test_the_job_lists_speak_in_the_status_apis_words_only_where_they_mean_the_same() -> None:
    migration, sync = DTS.listing, DTS_SYNC.listing
    assert migration is not None
    assert sync is not None
    words = [
        "checkPass",
        "manualPaused",
        "success",
        "resumableErr",
        "canceled",
        "error",
        "creating",
        "unknown",
    ]
    items = [{"JobId": f"dts-{n:08d}", "Status": w} for n, w in enumerate(words)]
    page = migration.page({"TotalCount": len(items), "JobList": items}, DTS.id_kind)
    # The list's own words (not DescribeMigrationDetail's) are left to the status API.
    assert [i.status for i in page.items] == ["checkpass", "manualpaused", "success", *[None] * 5]
    assert all(status in DTS.statuses for status in migration.statuses.values())
    # The sync list is the status action: every documented word is its own.
    assert set(sync.statuses.values()) == set(DTS_SYNC.statuses) - {"unknown"}
    assert migration.payload(0, 1.0, 2.0) == {"Offset": 0, "Limit": PAGE_SIZE}  # no time bounds to give
    assert sync.payload(100, 1.0, 2.0) == {"Offset": 100, "Limit": PAGE_SIZE}
    assert migration.snapshot
    assert sync.snapshot


def test_a_job_lists_items_are_read_and_bounded() -> None:
    sync = DTS_SYNC.listing
    assert sync is not None
    tags = [{"TagKey": f"k{n}", "TagValue": "v"} for n in range(TAG_MAX + 20)]
    job = _job(StartTime="2024-03-01 10:00:00", EndTime="", Detail={"Progress": 100}, Tags=tags)
    jobs = [job, *({**job, "JobId": f"sync-{n:08d}"} for n in range(PAGE_SIZE + 50)), {"JobId": "../x"}]
    page = sync.page({"TotalCount": len(jobs), "JobList": jobs}, DTS_SYNC.id_kind)
    assert page.size == PAGE_SIZE  # a page that ignores its Limit is cut there
    first = page.items[0]
    assert (first.task_id, first.status, first.progress, first.end_time) == (
        "sync-werwfs23",
        "running",
        1.0,
        None,
    )
    assert len(first.tags) == TAG_MAX
    assert (first.instance_id, first.task_type) == (None, None)
    for odd in (
        {"JobList": []},
        {"TotalCount": -1, "JobList": []},
        {"TotalCount": 1, "JobList": {"JobId": "sync-1"}},
        {"TotalCount": 1, "JobList": ["sync-1"]},
    ):
        with pytest.raises(InvalidResponse):
            sync.page(odd, DTS_SYNC.id_kind)
    # An item without a JobId the status action takes names no operation.
    assert sync.page({"TotalCount": 1, "JobList": [{"Status": "Running"}]}, DTS_SYNC.id_kind).items == ()
