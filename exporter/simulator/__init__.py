"""A local stand-in for the Tencent Cloud task status APIs the exporter polls, and the list APIs its
discovery sweeps, for tests, benchmarks and `--demo`.

One aiohttp server answers every product of the catalogue (`catalogue.products.PRODUCTS`) the way the real
endpoints do: requests are routed by the credential scope's service, `X-TC-Action` and `X-TC-Version`;
TC3-HMAC-SHA256 signatures are verified from the received bytes; each action's per-second quota is enforced
(PostgreSQL's list action is its status action, with one quota); errors come back as HTTP 200 with a Tencent
error code and a Content-Type of exactly `application/json`. Tasks follow scripted status timelines and are
listed by region and start time, and faults (latency, HTTP errors, broken JSON, error codes, missing fields)
can be injected for every request, one action or one task, so the exporter's failure handling can be
exercised end to end.

Several accounts (secret ids) may sign requests: quotas are counted per account, a task may belong to one
(`SimTask.owner`: another account reads it as unknown, and never sees it listed), and a task lives in one
region. A simulator may stand for one regional endpoint (`Simulator(region=...)`), refusing requests for
other regions with `UnsupportedRegion`; `stats()["accounts"]` counts each account's requests apart.

Modules: `scenario` (tasks, phases, faults and their JSON form), `gateway` (routing, signatures, quotas),
`lateness` (how late its own loop has been, which its quotas allow for), `stats` (what is counted, per action
and per account), `answers` (each product's status answer), `listing` (each product's list answer), `joblists`
(DTS's job lists, and the list answer of every shape), `instancetasks` (SQL Server's busy instances and each
one's task list, which answers its tasks' status requests too), `audit` (CloudAudit's DescribeEvents: the
audit trail of the calls that started the request-ID products' tasks), `replies` (an answer as it goes out,
with its injected faults), `server` (the aiohttp app), `thread` (a server in a background thread), `cli`
(`python -m exporter.simulator`), `demo` (the scenario and config of `--demo`), `errors` (Tencent's error
answer).

May import: `exporter.credentials` (signing), `exporter.config`, `exporter.catalogue`, `exporter.log`; never
the exporter's running parts (polling, store, exposition, daemon, web), so it answers as Tencent Cloud would
and not as the exporter expects.
"""

from exporter.simulator.answers import tencent_time_text
from exporter.simulator.cli import main
from exporter.simulator.errors import ApiError
from exporter.simulator.scenario import (
    Faults,
    Phase,
    SimTask,
    Status,
    faults_from_dict,
    load_scenario,
    task_from_dict,
    task_to_dict,
)
from exporter.simulator.server import CONTROL_PREFIX, Simulator
from exporter.simulator.thread import SimulatorThread

__all__ = [
    "CONTROL_PREFIX",
    "ApiError",
    "Faults",
    "Phase",
    "SimTask",
    "Simulator",
    "SimulatorThread",
    "Status",
    "faults_from_dict",
    "load_scenario",
    "main",
    "task_from_dict",
    "task_to_dict",
    "tencent_time_text",
]
