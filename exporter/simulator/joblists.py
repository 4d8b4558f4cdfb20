"""DTS's job lists, the answers to DescribeMigrationJobs and DescribeSyncJobs (2021-12-06), and `answer`, the
list answer of every shape the catalogue names (`listing`'s and these).

Unlike the start-time lists, a job list has no time bounds: it shows every job of the region that has
begun, newest created first unless `OrderSeq` says otherwise, finished ones included, ties in ID order so
that offsets page through a stable sequence. A job is its own operation: its JobId is what the status
action takes. The filters the SDK documents for finding jobs (JobId, JobIds, Status, TagFilters) are
applied; the others are accepted, checked for their JSON type, and match every job (the simulator's jobs
have no endpoints or billing to filter on).

Parameters, defaults and fields are written from the official SDK's request and response models
(tencentcloud-sdk-python-dts, v20211206 models.py), apart from the exporter's list catalogue.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final

from exporter.catalogue.listapis import ListApi
from exporter.catalogue.products import PRODUCTS
from exporter.simulator.answers import SHAPES
from exporter.simulator.errors import ApiError
from exporter.simulator.listing import (
    LISTS,
    MAX_LIMIT,
    Filter,
    Item,
    Listable,
    ListRequest,
    _checked,
    _id_order,
    _invalid,
    _paging,
    _schema,
)

_MIGRATION_PARAMS: Final = _schema(
    str="JobId JobName SrcInstanceId SrcRegion DstInstanceId DstRegion RunMode OrderSeq",
    strs="Status SrcDatabaseType SrcAccessType DstDatabaseType DstAccessType",
    int="Limit Offset",
    objects="TagFilters",
)
_SYNC_PARAMS: Final = _schema(
    str="JobId JobName Order OrderSeq RunMode JobType PayMode SrcInfoPattern DstInfoPattern",
    strs="JobIds Status",
    int="Offset Limit",
    objects="TagFilters",
)
_TAG_FILTER: Final = _schema(str="TagKey", strs="TagValue")


def _tag_filter(raw: Mapping[str, Any]) -> Filter:
    """One TagFilter: a job tagged TagKey, with one of TagValue's values when it lists any."""
    try:
        _checked(raw, _TAG_FILTER)
    except ApiError as error:
        raise ApiError("InvalidParameter", f"TagFilters: {error.message}") from None
    key, values = raw.get("TagKey", ""), raw.get("TagValue", [])
    return lambda entry: any(
        tag["TagKey"] == key and (not values or tag["TagValue"] in values) for tag in entry["Tags"]
    )


def _jobs(
    request: ListRequest,
    item: Callable[[Listable], Item],
    filters: Sequence[Filter],
    ascending: bool,
) -> tuple[int, list[Item]]:
    """TotalCount and one page of the jobs that have begun, by creation time (a job is created when it
    begins here), newest first unless `ascending`."""
    offset, limit = _paging(request.params, 20)  # both lists' default Limit
    chosen = sorted((t for t in request.tasks if t.began), key=lambda t: _id_order(t.task_id))
    chosen.sort(key=lambda t: t.view.started_at, reverse=not ascending)  # stable: ties stay in ID order
    items = [entry for entry in (item(t) for t in chosen) if all(f(entry) for f in filters)]
    return len(items), items[offset : offset + limit]


def _common_filters(params: Mapping[str, Any]) -> list[Filter]:
    filters: list[Filter] = []
    if "JobId" in params:
        filters.append(lambda entry: entry["JobId"] == params["JobId"])
    if params.get("Status"):
        filters.append(lambda entry: entry["Status"] in params["Status"])
    filters.extend(_tag_filter(raw) for raw in params.get("TagFilters", []))
    return filters


def _order(params: Mapping[str, Any], field: str = "OrderSeq") -> bool:
    """True for ascending; the lists take `asc`/`desc` (migration) or `ASC`/`DESC` (sync), any case."""
    order = str(params.get(field, "desc")).lower()
    if order not in ("asc", "desc"):
        raise _invalid(field, params[field])
    return order == "asc"


def _migration_item(task: Listable) -> Item:
    """A JobItem: the detail's fields (`migration_detail`), which the list's items share, and its Tags."""
    view = task.view
    return {
        **SHAPES["migration_detail"].fields(view),
        "RunMode": "immediate",
        "ExpectRunTime": "",
        "Action": {"AllAction": [], "AllowedAction": []},
        "Tags": [{"TagKey": key, "TagValue": value} for key, value in view.task.tags],
    }


def _migration_jobs(request: ListRequest) -> dict[str, Any]:
    params = request.params
    _checked(params, _MIGRATION_PARAMS)
    total, items = _jobs(request, _migration_item, _common_filters(params), _order(params))
    return {"TotalCount": total, "JobList": items}


def _sync_item(task: Listable) -> Item:
    # Exactly the item the one-job question answers (`answers`), so polling and listing never disagree.
    return SHAPES["sync_jobs"].fields(task.view)


def _sync_jobs(request: ListRequest) -> dict[str, Any]:
    params = request.params
    _checked(params, _SYNC_PARAMS)
    if params.get("Order", "CreateTime") != "CreateTime":  # "only CreateTime for now" (SDK)
        raise _invalid("Order", params["Order"])
    if len(params.get("JobIds", [])) > MAX_LIMIT:
        raise _invalid("JobIds", f"{len(params['JobIds'])} IDs")
    filters = _common_filters(params)
    if params.get("JobIds"):
        filters.append(lambda entry: entry["JobId"] in params["JobIds"])
    total, items = _jobs(request, _sync_item, filters, _order(params))
    return {"TotalCount": total, "JobList": items}


# Every list answer by the catalogue's list shape names (`ListApi.answer_shape`).
ALL_LISTS: Final[Mapping[str, Callable[[ListRequest], dict[str, Any]]]] = {
    **LISTS,
    "migration_jobs": _migration_jobs,
    "sync_jobs": _sync_jobs,
}
# A list of a new shape needs its answer written here or in `listing`; failing at import says so at once.
# A two-step list (busy instances, then each one's tasks) is answered by `instancetasks`.
_UNKNOWN: Final = sorted(
    {p.listing.answer_shape for p in PRODUCTS if p.listing is not None and p.listing.instances is None}
    - set(ALL_LISTS)
)
if _UNKNOWN:
    raise RuntimeError(f"the simulator has no list answer of the catalogue's shapes {_UNKNOWN}")


def answer(api: ListApi, request: ListRequest) -> dict[str, Any]:
    """`Response` (without RequestId) of any list action; raises ApiError for bad parameters."""
    return ALL_LISTS[api.answer_shape](request)
