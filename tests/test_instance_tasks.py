"""Tasks reached through their instance (catalogue/instancelists.py): the (instance, task) ID, the status
request, the parser that picks the task out of its instance's task list, and the two-step list's pages,
against well-formed, hostile and malformed answers."""

from __future__ import annotations

import json
from typing import Any

import pytest

from exporter.catalogue.apifields import INFO_MAX_LENGTH, NOT_FOUND, UNKNOWN
from exporter.catalogue.instancelists import STATUS_PAGE
from exporter.catalogue.listapis import PAGE_SIZE, InvalidResponse, busy_instances, within
from exporter.catalogue.products import SQLSERVER, SQLSERVER_TASKS
from exporter.polling.client import INVALID_RESPONSE, classify, classify_page

PRODUCT = SQLSERVER_TASKS
LISTING = PRODUCT.listing
assert LISTING is not None
assert LISTING.instances is not None
INSTANCES = LISTING.instances


def body(response: dict[str, Any]) -> bytes:
    return json.dumps({"Response": {**response, "RequestId": "r-1"}}).encode()


def task(number: int, status: object = 1, **fields: object) -> dict[str, Any]:
    return {
        "Id": number,
        "Type": 62,
        "Status": status,
        "Progress": 40,
        "StartTime": "2026-11-23 10:00:00",
        "EndTime": "",
        "ErrorCode": 0,
        "Message": "",
        **fields,
    }


@pytest.mark.parametrize(
    ("raw", "canonical"),
    [
        ("mssql-njj2mtpl:23517", "mssql-njj2mtpl:23517"),
        ("mssql-njj2mtpl:0023517", "mssql-njj2mtpl:23517"),
        ("mssql-njj2mtpl", None),
        ("mssql-njj2mtpl:0", None),
        ("mssql-njj2mtpl:-1", None),
        ("mssql-njj2mtpl:x", None),
        ("mssql-njj2mtpl/1", None),
        (":1", None),
        ("-mssql:1", None),
        ("mssql-njj2mtpl:1:2", None),
        (f"{'m' * 65}:1", None),
        (f"mssql-a:{2**63}", None),
        ("mssql-é:1", None),
        (23517, None),
        (True, None),
    ],
)
def test_an_instance_task_id_is_an_instance_id_and_a_task_number(raw: object, canonical: str | None) -> None:
    assert PRODUCT.id_kind.canonical(raw) == canonical


def test_the_status_request_is_the_instances_task_list() -> None:
    assert PRODUCT.payload("mssql-njj2mtpl:23517") == {"InstanceId": "mssql-njj2mtpl", "Limit": STATUS_PAGE}
    assert PRODUCT.api_service == SQLSERVER.name != PRODUCT.name
    assert PRODUCT.listing_shares_quota  # the list is the status action: one quota


def test_the_task_is_picked_out_of_its_instances_list_by_its_id() -> None:
    answer = body(
        {
            "TotalCount": 3,
            "InstanceTaskSet": [
                task(7, 1),
                task(5, 3, EndTime="2026-11-23 10:05:00", Message="disk full", ErrorCode=1),
                task(4, 2, Progress=100, EndTime="2026-11-23 10:01:00"),
            ],
        }
    )
    failed = classify(200, answer, PRODUCT, "mssql-a:5")
    assert failed.code is None
    assert failed.observation is not None
    seen = failed.observation
    assert (seen.status, seen.info, seen.task_type, seen.instance_id) == (
        "failed",
        "disk full",
        "62",
        "mssql-a",
    )
    assert seen.end_time is not None
    assert seen.start_time is not None
    assert seen.end_time > seen.start_time
    done = classify(200, answer, PRODUCT, "mssql-a:4").observation
    assert done is not None
    assert (done.status, done.progress) == ("success", 1.0)
    running = classify(200, answer, PRODUCT, "mssql-a:7").observation
    assert running is not None
    assert running.status == "running"
    assert PRODUCT.phase(running.status).value
    assert classify(200, answer, PRODUCT, "mssql-a:6").code == NOT_FOUND


def test_only_the_first_page_is_looked_at_and_odd_statuses_stay_readable() -> None:
    many = [task(n) for n in range(1, STATUS_PAGE + 2)]
    answer = body({"TotalCount": len(many), "InstanceTaskSet": many})
    assert classify(200, answer, PRODUCT, f"mssql-a:{STATUS_PAGE}").code is None
    assert classify(200, answer, PRODUCT, f"mssql-a:{STATUS_PAGE + 1}").code == NOT_FOUND
    odd = body({"TotalCount": 2, "InstanceTaskSet": [task(1, None), task(2, 9, Message="m" * 5000)]})
    null = classify(200, odd, PRODUCT, "mssql-a:1").observation
    assert null is not None
    assert null.status == UNKNOWN
    nine = classify(200, odd, PRODUCT, "mssql-a:2").observation
    assert nine is not None
    assert nine.status == "status_9"
    assert len(nine.info or "") == INFO_MAX_LENGTH
    assert (
        classify(200, body({"TotalCount": 0, "InstanceTaskSet": None}), PRODUCT, "mssql-a:1").code
        == NOT_FOUND
    )


@pytest.mark.parametrize(
    "response",
    [
        {"TotalCount": 1, "InstanceTaskSet": {"Id": 1}},
        {"TotalCount": 1, "InstanceTaskSet": "x"},
        {"TotalCount": 1, "InstanceTaskSet": [7]},
        {"TotalCount": 1, "InstanceTaskSet": [task(1, "running")]},
        {"TotalCount": 1, "InstanceTaskSet": [task(1, True)]},
    ],
)
def test_a_malformed_task_list_is_an_invalid_response(response: dict[str, Any]) -> None:
    assert classify(200, body(response), PRODUCT, "mssql-a:1").code == INVALID_RESPONSE


def test_the_busy_instances_page_names_instances_with_their_tags_and_is_bounded() -> None:
    assert INSTANCES.payload(0, PAGE_SIZE) == {"Status": 7, "Offset": 0, "Limit": PAGE_SIZE}
    assert INSTANCES.payload(2 * PAGE_SIZE, PAGE_SIZE)["Offset"] == 2  # a page number, by default
    items = [
        {
            "InstanceId": f"mssql-{n:04d}",
            "Name": "n",
            "Status": 7,
            "ResourceTags": [{"TagKey": "team", "TagValue": "dba"}],
        }
        for n in range(PAGE_SIZE + 50)
    ]
    items[0] = {"InstanceId": "not an id!", "Status": 7}
    page = busy_instances(INSTANCES, {"TotalCount": 150, "DBInstances": items})
    assert (page.total, page.size, len(page.items)) == (150, PAGE_SIZE, PAGE_SIZE - 1)
    assert page.items[0].task_id == "mssql-0001"
    assert page.items[0].tags == (("team", "dba"),)
    for bad in (
        {"DBInstances": []},
        {"TotalCount": -1},
        {"TotalCount": 1, "DBInstances": {}},
        {"TotalCount": 1, "DBInstances": [1]},
    ):
        with pytest.raises(InvalidResponse):
            busy_instances(INSTANCES, bad)
    outcome = classify_page(200, body({"TotalCount": "3", "DBInstances": []}), PRODUCT, INSTANCES)
    assert outcome.code == INVALID_RESPONSE


def test_an_instances_tasks_become_operations_named_by_the_pair() -> None:
    instance = busy_instances(
        INSTANCES, {"TotalCount": 1, "DBInstances": [{"InstanceId": "mssql-a", "Name": "orders"}]}
    ).items[0]
    page = LISTING.page(
        {"TotalCount": 3, "InstanceTaskSet": [task(9, 1), task(0, 1), task(8, "odd")]}, PRODUCT.id_kind
    )
    listed = [within(instance, item) for item in page.items]
    assert [(item.task_id, item.status) for item in listed if item is not None] == [
        ("mssql-a:9", "running"),
        ("mssql-a:8", None),  # a status the list does not document: the status request decides
    ]
    first = listed[0]
    assert first is not None
    assert (first.instance_id, first.instance_name) == ("mssql-a", "orders")
    assert LISTING.payload(0, 0.0, 0.0) == {"Status": 1, "Offset": 0, "Limit": PAGE_SIZE}
