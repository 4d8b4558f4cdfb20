"""DTS's job lists (DescribeMigrationJobs, DescribeSyncJobs, 2021-12-06): lists of jobs, each job its own
operation, read whole each sweep (they have no time bounds). `exporter.catalogue.products` attaches each to
its product as its `listing`.
"""

from __future__ import annotations

from collections.abc import Mapping

from exporter.catalogue.listapis import ListApi, task_list

# DTS's job lists (2021-12-06) have no time bounds: each lists every job of the region, newest created first,
# finished ones included, so a sweep reads them all; an operation the list shows ended before the lookback
# is not taken (sweeper.py). They list jobs, not operations on instances: a job is its own operation.
# Their request's Status filter is left unset, so a job that starts and ends between two sweeps is found.

# JobItem.Status (lower-cased) -> DescribeMigrationDetail's Status: the detail's words, which the list spells
# alike. The list's own words (creating, resumableErr, resuming, error, canceled, unknown) are not the
# status API's: not mapped, the status API decides (SDK models.py, JobItem and the detail's Status).
_MIGRATION_STATUSES: Mapping[object, str] = {
    w: w
    for w in (
        "created",
        "checking",
        "checkpass",
        "checknotpass",
        "readyrun",
        "running",
        "readycomplete",
        "success",
        "failed",
        "stopping",
        "completing",
        "pausing",
        "manualpaused",
    )
}
# DescribeMigrationJobs: 20/s (tencentcloud.com/document/api/571/51812, and the API category page
# tencentcloud.com/document/api/571/51777); Limit 1 to 100, 20 by default (SDK).
MIGRATION_JOBS = ListApi(
    "DescribeMigrationJobs",
    "2021-12-06",
    20.0,
    "JobList",
    task_list(
        "JobId",
        "",
        "",
        "StartTime",
        "EndTime",
        "",
        status="Status",
        statuses=_MIGRATION_STATUSES,
        tags="Tags",
    ),
    note="every job of the region: no time bounds",
    answer_shape="migration_jobs",
    statuses=_MIGRATION_STATUSES,
)
# SyncJobInfo.Status, lower-cased: the status action's own words (the list is the status action).
_SYNC_STATUSES: Mapping[object, str] = {
    w: w
    for w in (
        "uninitialized",
        "initialized",
        "checking",
        "checkpass",
        "checknotpass",
        "readyrunning",
        "running",
        "pausing",
        "paused",
        "stopping",
        "stopped",
        "resumableerr",
        "resuming",
        "failed",
        "released",
        "resetting",
    )
}
# DescribeSyncJobs, the sync jobs' status action itself: 100/s (cloud.tencent.cn/document/api/571/82103,
# tencentcloud.com/document/api/571/51793),
# of which discovery takes 10/s by default.
SYNC_JOBS = ListApi(
    "DescribeSyncJobs",
    "2021-12-06",
    10.0,
    "JobList",
    task_list(
        "JobId",
        "",
        "",
        "StartTime",
        "EndTime",
        "Detail.Progress",
        status="Status",
        statuses=_SYNC_STATUSES,
        tags="Tags",
    ),
    note="the status action itself, every job of the region: 10/s of its 100/s go to discovery",
    answer_shape="sync_jobs",
    statuses=_SYNC_STATUSES,
)
