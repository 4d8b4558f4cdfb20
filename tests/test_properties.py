"""Property-based tests: whatever the input, the config loader and the response parser end in a clear
error or a valid result, never an unhandled exception."""

from __future__ import annotations

import json
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from exporter.catalogue.auditlists import AUDIT_PAGE_SIZE, AUDIT_TRAIL
from exporter.catalogue.products import (
    AUDITED,
    BY_NAME,
    CDB,
    DISCOVERABLE,
    MARIADB,
    NOT_FOUND,
    PRODUCTS,
    Product,
    audit_owners,
)
from exporter.config.parser import Config, ConfigError, load_config, parse_config, parse_task
from exporter.polling.client import INVALID_RESPONSE, classify, classify_audit_page, classify_page

scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20)
documents = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12) | st.integers(), inner, max_size=4)
    ),
    max_leaves=25,
)
keys = st.sampled_from(
    [
        "credentials",
        "region",
        "apis",
        "polling",
        "watch",
        "mariadb_flows",
        "cdb_async_requests",
        "id",
        "labels",
        "interval",
        "endpoint",
        "rate_limit",
        MARIADB.name,
        CDB.name,
    ]
)
# Documents built from the real key names reach deep into the validator, not just the top-level check.
shaped = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=5),
    max_leaves=30,
)


def check(document: object) -> None:
    try:
        config = parse_config(document, "prop.yaml", {"X": "1"})
    except ConfigError as exc:
        assert exc.problems
        assert all(p.startswith("prop.yaml: ") for p in exc.problems)
    else:
        assert isinstance(config, Config)
        for task in config.tasks:
            assert task.region


@given(documents)
@settings(max_examples=300, deadline=None)
def test_any_document_is_a_config_or_a_clear_error(document: object) -> None:
    check(document)


@given(st.dictionaries(keys, shaped, max_size=5))
@settings(max_examples=300, deadline=None)
def test_config_shaped_documents_too(document: dict[str, object]) -> None:
    check(document)


@given(st.text(max_size=300))
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_any_file_text_is_a_config_or_a_clear_error(tmp_path: Path, text: str) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(text, encoding="utf-8")
    try:
        load_config(path, {})
    except ConfigError as exc:
        assert all(p.startswith(f"{path}: ") for p in exc.problems)


@given(
    st.sampled_from([s.name for s in PRODUCTS]), st.dictionaries(st.text(max_size=8), documents, max_size=4)
)
@settings(max_examples=200, deadline=None)
def test_any_task_registration_is_a_task_or_a_clear_error(product: str, entry: dict[str, object]) -> None:
    try:
        task = parse_task(product, entry, "ap-guangzhou", "request")
    except ConfigError as exc:
        assert exc.problems
    else:
        assert task.product == product


json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(
            st.sampled_from(
                [
                    *("Response", "Status", "Info", "Error", "Code", "Message", "RequestId", "TaskSet"),
                    *(
                        "StartTime",
                        "EndTime",
                        "TaskType",
                        "InstanceId",
                        "DBInstanceId",
                        "Progress",
                        "TaskMessage",
                    ),
                ]
            )
            | st.text(max_size=6),
            inner,
            max_size=4,
        )
    ),
    max_leaves=20,
)


@given(st.integers(100, 599), st.binary(max_size=200), st.sampled_from(PRODUCTS))
@settings(max_examples=300, deadline=None)
def test_any_bytes_are_classified(status: int, body: bytes, product: object) -> None:
    outcome = classify(status, body, product)  # type: ignore[arg-type]
    assert outcome.ok == (outcome.observation is not None)


@given(json_values, st.sampled_from(PRODUCTS))
@settings(max_examples=400, deadline=None)
def test_any_json_answer_is_a_status_an_error_code_or_invalid(document: object, product: object) -> None:
    outcome = classify(200, json.dumps(document).encode(), product)  # type: ignore[arg-type]
    if outcome.ok:
        assert outcome.observation is not None
        assert outcome.observation.status
    else:
        assert outcome.code
        assert outcome.code in (INVALID_RESPONSE, NOT_FOUND) or isinstance(document, dict)


# List answers shaped like the real ones (the item fields each list API documents), with hostile values.
_LIST_FIELDS = [
    "TotalCount",
    "Items",
    "Instances",
    "Tasks",
    "TaskList",
    "TaskSet",
    "Locker",
    "AsyncRequestId",
]
_LIST_FIELDS += [
    "FlowId",
    "TaskId",
    "StartTime",
    "EndTime",
    "InstanceIds",
    "InstanceId",
    "Progress",
    "Process",
]
_LIST_FIELDS += ["ResourceTags", "TagKey", "TagValue", "TaskType", "InstanceName", "Error", "Code"]
list_answers = st.recursive(
    json_values,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.sampled_from(_LIST_FIELDS), inner, max_size=6)
    ),
    max_leaves=30,
)


@given(list_answers, st.sampled_from(DISCOVERABLE))
@settings(max_examples=400, deadline=None)
def test_any_list_answer_is_a_page_an_error_code_or_invalid(document: object, product: Product) -> None:
    assert product.listing is not None
    outcome = classify_page(200, json.dumps({"Response": document}).encode(), product, product.listing)
    if outcome.code is None:
        assert outcome.page is not None
        assert outcome.page.total >= 0
        # Every operation found carries an ID the status API takes.
        assert all(product.id_kind.canonical(item.task_id) == item.task_id for item in outcome.page.items)
    else:
        assert outcome.page is None


_AUDIT_FIELDS = [
    *("ListOver", "NextToken", "Events", "EventName", "RequestID", "EventTime", "ResourceRegion"),
    *("EventRegion", "ErrorCode", "EventSource", "CloudAuditEvent", "Resources", "ResourceName", "Error"),
]
audit_answers = st.recursive(
    json_values | st.sampled_from([n for p in AUDITED for n in p.audit_events[:2]]),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.sampled_from(_AUDIT_FIELDS), inner, max_size=8)
    ),
    max_leaves=30,
)


@given(audit_answers)
@settings(max_examples=300, deadline=None)
def test_any_audit_answer_is_a_page_an_error_code_or_invalid(document: object) -> None:
    owners = audit_owners(AUDITED)
    outcome = classify_audit_page(200, json.dumps({"Response": document}).encode(), AUDIT_TRAIL, owners)
    if outcome.code is None:
        assert outcome.page is not None
        assert outcome.page.size <= AUDIT_PAGE_SIZE
        # Every operation found carries an ID its product's status API takes, and a region.
        for item in outcome.page.items:
            kind = BY_NAME[item.product].id_kind
            assert kind.canonical(item.listed.task_id) == item.listed.task_id
            assert item.region
    else:
        assert outcome.page is None
