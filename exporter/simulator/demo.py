"""The scenario behind `--demo`: a simulator full of realistic tasks and the config that watches them.

Every product of the catalogue has tasks that succeed, fail, and run for many minutes, plus one ID its API
does not know, and, when it has a list API or the audit trail lists its calls, operations only discovery
finds. Every status the APIs document
shows up at least once, with the awkward cases a dashboard must survive: a null CDB status, a status value the
docs never mention, PostgreSQL waiting for its switch-over window. The products with a scripted story are
named once, in `_SCRIPTS`; any other product of the catalogue gets a generic story made from its documented
statuses. Phase times are seconds at speed 1 (negative: before the demo started); the simulator's `speed`
compresses them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from exporter.catalogue.products import PRODUCTS, UNKNOWN, Product
from exporter.config.parser import Config, parse_config
from exporter.credentials.signing import Credentials
from exporter.simulator.scenario import Phase, SimTask

# Shaped like a real key pair so it exercises the same code paths, but plainly not one.
DEMO_CREDENTIALS: Final = Credentials(
    secret_id="AKIDDEMO0000000000000000NOTAREALKEY",
    secret_key="demo-secret-key-not-valid-anywhere",
)
# The demo's second account: its operations are polled with its own keys, inside its own buckets.
DEMO_STAGING_CREDENTIALS: Final = Credentials(
    secret_id="AKIDDEMOSTAGING000000000NOTAREALKEY",
    secret_key="demo-staging-key-not-valid-anywhere",
)
DEMO_ACCOUNTS: Final[Mapping[str, Credentials]] = {
    "prod": DEMO_CREDENTIALS,
    "staging": DEMO_STAGING_CREDENTIALS,
}
DEMO_REGION: Final = "ap-guangzhou"
DEMO_OTHER_REGION: Final = "ap-shanghai"

# Watched by the demo config but unknown to the simulator: they must surface as "not found".
DEMO_UNKNOWN_FLOW_ID: Final = 3399
DEMO_UNKNOWN_ASYNC_REQUEST_ID: Final = "5b0d7e21-4c3a9f08-a16e2d5b-0f9c8e73"

_MINUTE: Final = 60.0
_SUCCEEDED, _FAILED, _RUNNING = 0, 1, 2  # the flow products' integer statuses
_STAGING: Final = DEMO_STAGING_CREDENTIALS.secret_id  # the owner of the staging account's operations


@dataclass(frozen=True)
class _Story:
    """One product's part of the demo: the tasks the config watches (a task's region, when set, is where it
    is watched; its owner, when set, the account watching it, else prod), user labels by task ID, the
    operations only discovery finds, and an ID the product's API does not know."""

    watched: Sequence[SimTask]
    unknown_id: int | str
    unlisted: Sequence[SimTask] = ()
    labels: Mapping[str, Mapping[str, str]] = field(default_factory=dict)


def _mariadb_flows(product: str) -> _Story:
    watched = [
        SimTask(product, "3340", (Phase(0, _SUCCEEDED),)),
        SimTask(product, "3341", (Phase(0, _FAILED),)),
        SimTask(product, "3342", (Phase(0, _RUNNING), Phase(45, _SUCCEEDED))),
        SimTask(product, "3343", (Phase(0, _RUNNING), Phase(90, _FAILED))),
        # A large instance resize: still running long after everything else has settled.
        SimTask(product, "3344", (Phase(0, _RUNNING), Phase(40 * _MINUTE, _SUCCEEDED))),
        # Watched in the other region; the API looks flows up by ID alone.
        SimTask(
            product,
            "3345",
            (Phase(0, _RUNNING), Phase(2 * _MINUTE, _SUCCEEDED)),
            region=DEMO_OTHER_REGION,
            owner=_STAGING,
        ),
    ]
    unlisted = SimTask(
        product,
        "3390",
        (Phase(0, _RUNNING), Phase(8 * _MINUTE, _SUCCEEDED)),
        instance_id="tdsql-ow728lmc",
        instance_name="orders-prod",
        tags=(("team", "dba"), ("env", "prod")),
    )
    labels = {"3341": {"team": "dba"}, "3344": {"team": "dba", "change": "resize-prod-db"}}
    return _Story(watched, DEMO_UNKNOWN_FLOW_ID, [unlisted], labels)


def _cdb_async_requests(product: str) -> _Story:
    def task(request_id: str, *phases: Phase) -> SimTask:
        return SimTask(product, request_id, phases)

    watched = [
        task(
            "f96e4f3c-8fc96c86-2ec79ac8-cb63a7a7",
            Phase(0, "SUCCESS", "Dropped the database table successfully."),
        ),
        task(
            "a3c1e8d2-5b7f4a90-c2e6d1f8-7e4b9a03",
            Phase(0, "FAILED", "Failed to modify the parameters: innodb_buffer_pool_size is out of range."),
        ),
        task(
            "2d8f6b1e-93a4c7d0-5e1f8b2a-c6d3e9f4",
            Phase(0, "INITIAL", "The task has been created."),
            Phase(20, "RUNNING", "Upgrading the instance specification."),
            Phase(4 * _MINUTE, "SUCCESS", "The instance specification has been upgraded."),
        ),
        task(
            "7c4e2a9b-1f6d8e3c-b5a07d4f-e2c9b6a1",
            Phase(0, "RUNNING", "Creating a physical backup."),
            Phase(30, "PAUSED", "The backup task is being terminated."),
        ),
        task(
            "e1b7d4c9-6a2f0e8b-3d9c5a1e-84f6b2d7",
            Phase(0, "UNDEFINED", "Waiting for the maintenance window to start the switch."),
        ),
        task(
            "9f3a6c2e-d8b14e7a-0c5f9d3b-a7e2c6f1", Phase(0, "KILLED", "The task was terminated by the user.")
        ),
        task("3e7b0c5a-2f9d6e1b-8a4c3f7d-b1e8d2c6", Phase(0, "REMOVED", "The task record was deleted.")),
        task("4b8e1d6a-c3f79a2e-e6d04b8c-1a5f7c3d", Phase(0, None, None)),
        # A status value no documentation lists: the exporter must report it rather than drop it.
        task(
            "c6a9f2d4-7e3b1c8f-9d2a6e4b-3f8c1a7e",
            Phase(0, "RUNNING", "Switching the primary instance."),
            Phase(75, "ROLLBACK", "The switch failed and is being rolled back."),
        ),
    ]
    unlisted = [
        SimTask(
            product,
            "6f1d9b3e-0a7c4e2f-b8d5a1c6-3e9f7b2d",
            (Phase(0, "RUNNING", "Modifying instance parameters."), Phase(3 * _MINUTE, "SUCCESS", "Done.")),
            task_type="MODIFY PARAM",
            instance_id="cdb-8kz3p1qa",
            started=-2 * _MINUTE,
        ),
        SimTask(
            product,
            "b2e7c4a9-5d1f8e3b-6a0c9d7e-f4b1a8c5",
            (Phase(90, "RUNNING", "Rolling back the database."), Phase(6 * _MINUTE, "FAILED", "Binlog gap.")),
            task_type="ROLLBACK",
            instance_id="cdb-2nv7w4xe",
            started=90,
        ),
    ]
    labels = {"a3c1e8d2-5b7f4a90-c2e6d1f8-7e4b9a03": {"team": "app"}}
    return _Story(watched, DEMO_UNKNOWN_ASYNC_REQUEST_ID, unlisted, labels)


def _flows(
    first_id: int,
    unlisted: Callable[[str], Sequence[SimTask]] = lambda _: (),
    long_labels: Mapping[str, str] | None = None,
) -> Callable[[str], _Story]:
    """TDSQL, SQL Server and TDSQL-C flows answer like MariaDB's: the same four stories, other timings;
    `long_labels` are the long flow's user labels."""

    def story(product: str) -> _Story:
        ids = [str(first_id + n) for n in range(4)]
        watched = [
            SimTask(product, ids[0], (Phase(0, _SUCCEEDED),)),
            SimTask(product, ids[1], (Phase(0, _RUNNING), Phase(2 * _MINUTE, _SUCCEEDED))),
            SimTask(product, ids[2], (Phase(0, _RUNNING), Phase(150, _FAILED))),
            # Shard split, storage migration, cluster upgrade: the long one.
            SimTask(product, ids[3], (Phase(0, _RUNNING), Phase(30 * _MINUTE, _SUCCEEDED))),
        ]
        labels = {ids[3]: long_labels} if long_labels else {}
        return _Story(watched, first_id + 98, unlisted(product), labels)

    return story


def _dcdb_unlisted(product: str) -> Sequence[SimTask]:
    return [
        SimTask(
            product,
            "81290",
            (Phase(60, _RUNNING), Phase(5 * _MINUTE, _FAILED)),
            instance_id="dcdbt-2t4cf98d",
            instance_name="ledger-shards",
            tags=(("team", "payments"),),
            started=60,
            owner=_STAGING,
        )
    ]


def _cynosdb_unlisted(product: str) -> Sequence[SimTask]:
    return [
        SimTask(
            product,
            "740090",
            (Phase(0, _RUNNING), Phase(4 * _MINUTE, _SUCCEEDED)),
            task_type="ModifyInstance",
            instance_id="cynosdbmysql-ins-3kq9v2zd",
            started=-30,
        )
    ]


def _mongodb_async_requests(product: str) -> _Story:
    def task(request_id: str, *phases: Phase, started: float = 0.0) -> SimTask:
        return SimTask(product, request_id, phases, started=started)

    watched = [
        task("4863127", Phase(-2 * _MINUTE, "success"), started=-9 * _MINUTE),
        task("4863128", Phase(0, "initial"), Phase(10, "running"), Phase(4 * _MINUTE, "success")),
        task("4863129", Phase(0, "running"), Phase(2 * _MINUTE, "paused"), started=-30),  # failed, paused
        task("4863130", Phase(0, "running"), Phase(90, "undoed"), started=-20),  # failed, rolled back
        task("4863131", Phase(-5 * _MINUTE, "failed"), started=-6 * _MINUTE),
        task("4863132", Phase(0, "running"), Phase(35 * _MINUTE, "success"), started=-_MINUTE),
    ]
    return _Story(watched, "4863199", labels={"4863129": {"team": "app"}})


def _redis_tasks(product: str) -> _Story:
    # Task types are the categories the SDK documents for TaskType, in the API's own language.
    def task(
        task_id: str, task_type: str, instance: str, *phases: Phase, started: float = 0.0, owner: str = ""
    ) -> SimTask:
        return SimTask(
            product, task_id, phases, task_type=task_type, instance_id=instance, started=started, owner=owner
        )

    watched = [
        task("1092301", "备份实例", "crs-5a4py64p", Phase(0, "succeed"), started=-4 * _MINUTE),
        task(
            "1092302",
            "配置变更",
            "crs-9r2kd3xe",
            Phase(0, "preparing"),
            Phase(15, "running"),
            Phase(3 * _MINUTE, "succeed"),
        ),
        task(
            "1092303",
            "实例可用区迁移",
            "crs-7m1qz0bw",
            Phase(0, "running"),
            Phase(100, "failed", "Insufficient resources in the target availability zone."),
            started=-40,
        ),
        task(
            "1092304",
            "版本升级",
            "crs-3h8vn6tc",
            Phase(0, "running"),
            Phase(2 * _MINUTE, "error", "The upgrade check failed: a module is not supported by 6.2."),
        ),
        task(
            "1092305",
            "配置变更",
            "crs-2w6jf4ys",
            Phase(0, "running"),
            Phase(45 * _MINUTE, "succeed"),
            owner=_STAGING,
        ),
    ]
    unlisted = task(
        "1092390",
        "FLOW_BACKUPINSTANCE",
        "crs-6xg2m8rt",
        Phase(0, "running"),
        Phase(7 * _MINUTE, "succeed"),
        started=-90,
        owner=_STAGING,
    )
    labels = {"1092305": {"team": "cache", "change": "resize-session-cache"}}
    return _Story(watched, 1092399, [unlisted], labels)


def _postgres_tasks(product: str) -> _Story:
    def task(
        task_id: str,
        task_type: str,
        instance: str,
        *phases: Phase,
        started: float = 0.0,
        region: str | None = None,
        owner: str = "",
    ) -> SimTask:
        return SimTask(
            product,
            task_id,
            phases,
            task_type=task_type,
            instance_id=instance,
            started=started,
            region=region,
            owner=owner,
        )

    watched = [
        task(
            "60210001",
            "CreateBackup",
            "postgres-6r233v55",
            Phase(-_MINUTE, "Success", "The backup is complete.", step="Finish"),
            started=-8 * _MINUTE,
        ),
        # Done but for the switch-over, which waits for the maintenance window: not a final state.
        task(
            "60210002",
            "ModifySpec",
            "postgres-1x2mzp7a",
            Phase(0, "Running", progress=10, step="CheckParameters"),
            Phase(30, "Running", progress=45, step="SyncData"),
            Phase(
                3 * _MINUTE, "WaitSwitch", "Waiting for the maintenance window.", progress=90, step="Switch"
            ),
            region=DEMO_OTHER_REGION,
            owner=_STAGING,
        ),
        task(
            "60210003",
            "UpgradeKernelVersion",
            "postgres-8k4wq1tn",
            Phase(0, "Running", progress=20, step="CheckParameters"),
            Phase(40, "Running", progress=35, step="UpgradeKernel"),
            Phase(
                2 * _MINUTE,
                "Fail",
                "The kernel upgrade failed: an extension is incompatible.",
                step="Rollback",
            ),
            started=-15,
        ),
        task(
            "60210004",
            "RestoreInstance",
            "postgres-3d9hc7fe",
            Phase(0, "Running", progress=5, step="DownloadBackup"),
            Phase(10 * _MINUTE, "Running", progress=40, step="ApplyLog"),
            Phase(35 * _MINUTE, "Running", progress=85, step="CheckData"),
            Phase(50 * _MINUTE, "Success", step="Finish"),
        ),
        task(
            "60210005",
            "ModifySpec",
            "postgres-5b7ny2qs",
            Phase(0, "Pause", "Paused by the user.", progress=60, step="SyncData"),
            started=-3 * _MINUTE,
        ),
    ]
    unlisted = task(
        "60210090",
        "RestartInstance",
        "postgres-q6fj84vb",
        Phase(0, "Running", progress=10),
        Phase(5 * _MINUTE, "Success"),
        started=-60,
    )
    # Answered with an empty TaskSet rather than an error code.
    return _Story(watched, 60210099, [unlisted], {"60210002": {"team": "dba"}})


# SyncJobInfo.Status as the SDK spells each of the catalogue's lower-cased words.
_SYNC_SPELLING: Final = {
    word.lower(): word
    for word in (
        *("UnInitialized", "Initialized", "Checking", "CheckPass", "CheckNotPass", "ReadyRunning", "Running"),
        *("Pausing", "Paused", "Stopping", "Stopped", "ResumableErr", "Resuming", "Failed", "Released"),
        "Resetting",
    )
}


def _dts_sync_jobs(product: str) -> _Story:
    """Sync jobs as the console runs them: configured, checked, then replicating for good (ongoing); one is
    paused and resumed, one breaks on a purged binlog, one is stopped; every other documented status ends a
    job of its own; one job only discovery finds."""

    def job(number: int, *phases: Phase, started: float = 0.0) -> SimTask:
        return SimTask(
            product, f"sync-demo{number:04d}", phases, instance_name="orders-to-dr", started=started
        )

    setup = (
        Phase(0, "Initialized"),
        Phase(20, "Checking"),
        Phase(40, "CheckPass"),
        Phase(50, "ReadyRunning"),
    )
    watched = [
        job(1, *setup, Phase(60, "Running", progress=100)),
        job(
            2,
            Phase(0, "Running"),
            Phase(30, "Pausing"),
            Phase(40, "Paused"),
            Phase(5 * _MINUTE, "Resuming"),
            Phase(5 * _MINUTE + 20, "Running"),
        ),
        job(
            3,
            Phase(0, "Running"),
            Phase(90, "ResumableErr", "The source's binlog was purged before it was read."),
        ),
        job(4, Phase(0, "Running"), Phase(60, "Stopping"), Phase(80, "Stopped")),
    ]
    shown = {"initialized", "checking", "checkpass", "readyrunning", "running", "pausing", "paused"}
    shown |= {"resuming", "resumableerr", "stopping", "stopped"}
    rest = [word for word in _SYNC_SPELLING if word not in shown]
    watched += [
        job(10 + n, Phase(0, "Initialized"), Phase(30.0 * (n + 1), _SYNC_SPELLING[word]))
        for n, word in enumerate(rest)
    ]
    unlisted = [job(90, *setup, Phase(60, "Running"), started=-_MINUTE)]
    return _Story(watched, "sync-demo0099", unlisted, {"sync-demo0001": {"team": "dba"}})


def _generic(product: Product) -> _Story:
    """A product without a script: a task ending in each documented status, one running for long, and, with
    a list API, one operation only discovery finds; statuses as the product's answer writes them."""
    codes = dict(product.answer_shape.status_codes)
    statuses = [s for s in product.statuses if s != UNKNOWN]
    running = next((s for s in statuses if s not in product.final_statuses), statuses[0])

    def raw(status: str) -> int | str:
        return codes.get(status, status)  # a flow's integer, else the word

    def task_id(number: int) -> str:
        if product.id_kind.request_id:  # a RequestId, as the call that started the task answered it
            return f"{number:08x}-de30-4000-8000-{700_000 + number:012x}"
        if product.id_kind.pair:  # an instance's task: `<instance ID>:<task ID>`, three instances
            return f"mssql-demo{number % 3}:{700_000 + number}"
        return str(700_000 + number) if product.id_kind.integer else f"demo-{product.name}-{number:04d}"

    watched = [
        SimTask(product.name, task_id(n), (Phase(0, raw(running)), Phase(30.0 * (n + 1), raw(status))))
        for n, status in enumerate(statuses)
    ]
    long = (Phase(0, raw(running)), Phase(30 * _MINUTE, raw(product.success_status)))
    watched.append(SimTask(product.name, task_id(len(statuses)), long))
    unlisted = [
        SimTask(
            product.name,
            task_id(90),
            (Phase(0, raw(running)), Phase(5 * _MINUTE, raw(product.success_status))),
            instance_id=f"{product.name}-demo-1",
            instance_name="demo",
            started=-_MINUTE,
        )
    ]
    # An instance's task: of an instance that does not exist, which its own not-found code says.
    unknown = product.id_kind.request_value("mssql-gone:700099" if product.id_kind.pair else task_id(99))
    # Discoverable through a list API, or through the audit trail (CLB, VPC: CloudAudit lists their calls).
    return _Story(watched, unknown, unlisted if product.discoverable else ())


# The products with a scripted story; any other product of the catalogue gets `_generic`'s.
_SCRIPTS: Final[Mapping[str, Callable[[str], _Story]]] = {
    "mariadb": _mariadb_flows,
    "cdb": _cdb_async_requests,
    "dcdb": _flows(81201, _dcdb_unlisted, {"team": "dba", "change": "split-orders-shards"}),
    "sqlserver": _flows(5120301),
    "cynosdb": _flows(740001, _cynosdb_unlisted),
    "mongodb": _mongodb_async_requests,
    "redis": _redis_tasks,
    "postgres": _postgres_tasks,
    "dts_sync": _dts_sync_jobs,
}


def _story(product: Product) -> _Story:
    script = _SCRIPTS.get(product.name)
    return script(product.name) if script is not None else _generic(product)


_STORIES: Final[Mapping[str, _Story]] = {p.name: _story(p) for p in PRODUCTS}
DEMO_UNKNOWN_IDS: Final[Mapping[str, int | str]] = {name: s.unknown_id for name, s in _STORIES.items()}
_ACCOUNT_OF: Final = {keys.secret_id: name for name, keys in DEMO_ACCOUNTS.items()}


def demo_unlisted_operations() -> list[SimTask]:
    """Operations no config names (started from the console, by Terraform, by Tencent's maintenance): the
    demo's discovery finds them through the list APIs and the audit trail. Some start while the demo runs."""
    return [_owned(task) for story in _STORIES.values() for task in story.unlisted]


def demo_tasks() -> list[SimTask]:
    """Fresh task objects on every call, so callers can tweak their copy: the watched ones, then the ones
    only discovery finds. A task watched in another region is listed only there; each task belongs to one
    of DEMO_ACCOUNTS (prod, but for those the stories give to staging)."""
    watched = [_owned(task) for story in _STORIES.values() for task in story.watched]
    return [*watched, *demo_unlisted_operations()]


def _owned(task: SimTask) -> SimTask:
    return dataclasses.replace(task, owner=task.owner or DEMO_CREDENTIALS.secret_id)


def demo_watch() -> dict[str, list[object]]:
    """The `watch` section of the demo config (the region default is DEMO_REGION): every demo task of every
    product, then that product's unknown ID."""
    watch: dict[str, list[object]] = {}
    for product in PRODUCTS:
        story, entries = _STORIES[product.name], watch.setdefault(product.watch_key, [])
        for task in story.watched:
            task_id = product.id_kind.request_value(task.task_id)
            extras: dict[str, Any] = {}
            if task.task_id in story.labels:
                extras["labels"] = dict(story.labels[task.task_id])
            if task.region is not None:
                extras["region"] = task.region
            if task.owner:
                extras["account"] = _ACCOUNT_OF[task.owner]
            entries.append({"id": task_id, **extras} if extras else task_id)
        entries.append(story.unknown_id)
    return watch


def demo_config(url: str, speed: float = 1.0) -> Config:
    """The exporter config for `--demo`: every API at the simulator on `url`, polling sped up like its tasks.

    Two accounts, prod and staging, with the demo's made-up keys (DEMO_ACCOUNTS).
    """
    if speed <= 0:
        raise ValueError(f"speed must be > 0, got {speed}")
    # Intervals short enough that the 45 s and 90 s flows visibly change state on a dashboard.
    document = {
        "accounts": [
            {"name": name, "credentials": {"secret_id": keys.secret_id, "secret_key": keys.secret_key}}
            for name, keys in DEMO_ACCOUNTS.items()
        ],
        "region": DEMO_REGION,
        "apis": {s.name: {"endpoint": url} for s in PRODUCTS},
        "polling": {
            "interval": max(10.0 / speed, 0.05),
            "finished_interval": max(60.0 / speed, 0.05),
            "timeout": 5.0,
            "max_backoff": max(120.0 / speed, 0.1),
        },
        "watch": demo_watch(),
        # Sweeps often enough that the operations starting during the demo show up within a minute or so.
        "discovery": {
            "regions": [DEMO_REGION],
            "interval": max(20.0 / speed, 1.0),
            "retention": max(30 * _MINUTE / speed, 1.0),
            "tag_labels": ["team"],
            # The audit trail (CloudAudit's DescribeEvents) is the simulator too.
            "cloudaudit": {"endpoint": url},
        },
    }
    return parse_config(document, "<demo>", env={})
