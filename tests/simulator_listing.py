"""What the simulator's list-action test modules share (test_simulator_discovery.py and
test_simulator_list_*.py): the products and their spellings, the list quotas, simulators whose wall clock
moves with the fake clock, tasks, and helpers that read list answers through the SDKs
(tests/simulator_sdk.py).
"""

from __future__ import annotations

import contextlib
import json
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

from exporter.catalogue.products import BY_NAME
from exporter.simulator import Phase, SimTask, SimulatorThread
from exporter.simulator.scenario import Status
from tests.helpers import FakeClock
from tests.products import FACTS
from tests.simulator_sdk import (
    LIST_SDKS,
    error_code,
    sdk_list_items,
    signed,
    simulators,
)

LIST_PRODUCTS = sorted(LIST_SDKS)
STARTED_LISTS = [p for p in LIST_PRODUCTS if LIST_SDKS[p].window is not None]
SNAPSHOTS = [p for p in LIST_PRODUCTS if LIST_SDKS[p].window is None and not LIST_SDKS[p].every_job]
# Lists of every job of the region, by ID, without time bounds (DTS's).
JOB_LISTS = [p for p in LIST_PRODUCTS if LIST_SDKS[p].every_job]
START = 1000.0
OTHER_REGION = "ap-shanghai"

# The published quotas of the list actions, from the products' API documentation.
LIST_QUOTAS = {name: sdk.quota for name, sdk in LIST_SDKS.items()}
# Limit when none is given, where the SDK's request model documents one.
DEFAULT_LIMITS = {name: sdk.default_limit for name, sdk in LIST_SDKS.items() if sdk.default_limit is not None}
# Each product's running and succeeded status, as its status API spells them, and its instance IDs' prefix.
SPELLING: dict[str, tuple[Status, Status, str]] = {
    name: (FACTS[name].running, FACTS[name].succeeded, FACTS[name].instance_prefix) for name in LIST_SDKS
}
AUTH_FAILURE = "AuthFailure.InvalidAuthorization"
Start = Callable[..., SimulatorThread]  # the fixture: starts a simulator with these tasks and options


@contextlib.contextmanager
def listing_simulators(clock: FakeClock, wall: float) -> Iterator[Start]:
    """simulators(clock), each with a wall clock that reads `wall` (the `wall` fixture: a whole second taken
    when the test started) at START and moves with the fake clock, so the times the answers show are exact
    and the signatures of the SDKs, made with the real clock, stay within the allowed skew."""
    with simulators(clock) as start_simulator:

        def start_listing(*tasks: SimTask, **options: Any) -> SimulatorThread:
            options.setdefault("wall_clock", lambda: wall + clock.now - START)
            return start_simulator(*tasks, **options)

        yield start_listing


def china_time(unix_time: float) -> str:
    return datetime.fromtimestamp(unix_time, timezone(timedelta(hours=8))).strftime("%Y-%m-%d %H:%M:%S")


def task_id(product: str, n: int) -> str:
    return str(1000 + n) if BY_NAME[product].id_kind.integer else f"{n:08x}-5eed0000-00000000-00000000"


def task(
    product: str, n: int, *phases: Phase, started: float = 0.0, instance: str | None = None, **fields: Any
) -> SimTask:
    """Task n of a product, running unless phases say otherwise, on an instance of its own by default."""
    return SimTask(
        product,
        task_id(product, n),
        phases or (Phase(0, SPELLING[product][0]),),
        instance_id=instance or f"{SPELLING[product][2]}{n:04d}",
        started=started,
        **fields,
    )


def key(product: str, n: int) -> str:
    """How task n shows in its product's list: by its ID, or in a snapshot by its instance."""
    return f"{SPELLING[product][2]}{n:04d}" if product in SNAPSHOTS else task_id(product, n)


def key_of(product: str, item: Any) -> str:
    """What one SDK item stands for: the ID the status action takes, or a snapshot's instance."""
    sdk = LIST_SDKS[product]
    return str(getattr(item, sdk.instance_field if product in SNAPSHOTS else sdk.id_field))


def listed(client: Any, product: str, **params: Any) -> list[str]:
    """Every item of a list that fits on one page, by key_of, in the order the API gives them."""
    total, items = sdk_list_items(client, product, Limit=100, **params)
    assert total == len(items)
    return [key_of(product, item) for item in items]


def burst(thread: SimulatorThread, product: str, count: int, payload: dict[str, Any]) -> list[str | None]:
    """`count` list requests as fast as one signature allows; the error code of each (None: answered)."""
    spec = BY_NAME[product]
    assert spec.listing is not None
    headers, body = signed(
        thread, payload, action=spec.listing.action, service=spec.api_service, version=spec.listing.version
    )
    return [error_code(thread, headers, body) for _ in range(count)]


def shows(item: Any, **expected: Any) -> None:
    """The SDK model holds these field values."""
    assert {name: getattr(item, name) for name in expected} == expected


def faults(thread: SimulatorThread, **document: Any) -> int:
    """POSTs to the control endpoint for faults; its HTTP status."""
    request = urllib.request.Request(
        thread.url + "/_sim/faults",
        data=json.dumps(document).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return int(error.code)
