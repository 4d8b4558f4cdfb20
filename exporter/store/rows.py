"""The rows of the store: what they hold, and how an untrusted row (from the file, or a v1 JSON state file)
is checked exactly like a config watch entry before the exporter believes it."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass

from exporter.catalogue.products import BY_NAME
from exporter.config.parser import ConfigError, LimitsConfig, WatchedTask, parse_task
from exporter.config.validation import describe, is_utf8, key_text

STATUS_MAX_LENGTH = 256  # above what the products keep (64): only a bound on untrusted rows
_PRODUCTS = ", ".join(sorted(BY_NAME))


class StoreError(Exception):
    """The store cannot be opened, read or written; the message names the file and what is wrong."""


@dataclass(frozen=True)
class Registration:
    task: WatchedTask
    registered_at: float
    final_since: float | None = None  # unix time the task was first seen in a final state


@dataclass(frozen=True)
class StatusSince:
    status: str
    since: float  # unix time the status was first seen


@dataclass(frozen=True)
class OperationTimes:
    """What the duration histogram needs kept of one operation across restarts."""

    in_progress_since: float | None  # unix time a poll first saw it pending or running
    duration_observed_at: float | None  # unix time its duration was observed; None: not yet


def check_operation(
    where: str, key: tuple[object, object, object], in_progress_since: object, observed_at: object
) -> list[str]:
    product, region, task_id = key
    _, problems = check_task(where, product, {"id": task_id, "region": region})
    for name, value in (("in_progress_since", in_progress_since), ("duration_observed_at", observed_at)):
        if value is not None and timestamp(value) is None:
            problems.append(f"{where}: {name}: expected a unix time or null, got {describe(value)}")
    return problems


def check_task(
    where: str,
    product: object,
    entry: dict[str, object],
    limits: LimitsConfig | None = None,
    product_key: str = "product",
) -> tuple[WatchedTask | None, list[str]]:
    """The task a row stands for, checked like a config watch entry, or the problems with it; `product_key`
    is what the row calls the product, for the message."""
    if not isinstance(product, str) or product not in BY_NAME:
        return None, [f"{where}: {product_key}: expected one of {_PRODUCTS}, got {describe(product)}"]
    try:
        task = parse_task(product, entry, None, where, limits, accounts=None)
    except ConfigError as exc:
        return None, exc.problems
    if task.task_id != entry["id"]:
        # Stored IDs are canonical: another spelling would be a second key for the same task.
        return None, [f"{where}: id: expected {task.task_id!r}, got {describe(entry['id'])}"]
    return task, []


def check_registration(
    where: str, row: Mapping[str, object], limits: LimitsConfig | None, product_key: str = "product"
) -> tuple[Registration | None, list[str]]:
    """The registration a row stands for, or the problems with it; the product is `row[product_key]` (the v1
    JSON state file calls it `service`, the store's rows `product`)."""
    entry = {"id": row.get("id"), "region": row.get("region"), "labels": row.get("labels")}
    if row.get("account"):  # "" in rows from before accounts: the account named default
        entry["account"] = row["account"]
    task, problems = check_task(where, row.get(product_key), entry, limits, product_key)
    raw_registered, raw_final = row.get("registered_at"), row.get("final_since")
    registered_at, final = timestamp(raw_registered), None if raw_final is None else timestamp(raw_final)
    if registered_at is None:
        problems.append(f"{where}: registered_at: expected a unix time, got {describe(raw_registered)}")
    if raw_final is not None and final is None:
        problems.append(f"{where}: final_since: expected a unix time or null, got {describe(raw_final)}")
    if problems or task is None or registered_at is None:
        return None, problems
    return Registration(task, registered_at, final), []


def check_status(where: str, key: tuple[object, object, object], status: object, since: object) -> list[str]:
    product, region, task_id = key
    _, problems = check_task(where, product, {"id": task_id, "region": region})
    if not isinstance(status, str) or not is_utf8(status) or not 0 < len(status) <= STATUS_MAX_LENGTH:
        problems.append(f"{where}: status: expected 1 to {STATUS_MAX_LENGTH} characters of text")
    if timestamp(since) is None:
        problems.append(f"{where}: since: expected a unix time, got {describe(since)}")
    return problems


def timestamp(value: object) -> float | None:
    """A finite unix time, or None (SQLite would store NaN as NULL, and NULL breaks the NOT NULL batch)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if math.isfinite(number) else None


def json_object(text: object) -> dict[str, object] | None:
    try:
        value = json.loads(text) if isinstance(text, str) else None
    except (ValueError, RecursionError):
        return None
    return value if isinstance(value, dict) else None


def ident(product: object, region: object, task_id: object) -> str:
    """A row's key for a message: as stored when printable, quoted otherwise (a newline, a surrogate)."""
    return "/".join(key_text(part) for part in (product, region, task_id))
