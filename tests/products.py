"""What the tests know of each product that must not come from the catalogue: one row per product, written
from its official SDK (the client, models.py and errorcodes.py) and its API documentation, so a mistake in
the catalogue shows up as a disagreement instead of being copied. The only test module that spells product
names (tests/test_catalogue.py checks); every other one takes them from here or from the catalogue.

A new product needs its row here (and its SDK package in pyproject's `test` extra).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Final

from tencentcloud.cdb.v20170320 import cdb_client
from tencentcloud.cdb.v20170320 import models as cdb_models
from tencentcloud.ckafka.v20190819 import ckafka_client
from tencentcloud.ckafka.v20190819 import models as ckafka_models
from tencentcloud.clb.v20180317 import clb_client
from tencentcloud.clb.v20180317 import models as clb_models
from tencentcloud.cloudaudit.v20190319 import cloudaudit_client
from tencentcloud.cloudaudit.v20190319 import models as cloudaudit_models
from tencentcloud.cynosdb.v20190107 import cynosdb_client
from tencentcloud.cynosdb.v20190107 import models as cynosdb_models
from tencentcloud.dcdb.v20180411 import dcdb_client
from tencentcloud.dcdb.v20180411 import models as dcdb_models
from tencentcloud.dts.v20211206 import dts_client
from tencentcloud.dts.v20211206 import models as dts_models
from tencentcloud.keewidb.v20220308 import keewidb_client
from tencentcloud.keewidb.v20220308 import models as keewidb_models
from tencentcloud.mariadb.v20170312 import mariadb_client
from tencentcloud.mariadb.v20170312 import models as mariadb_models
from tencentcloud.mongodb.v20190725 import models as mongodb_models
from tencentcloud.mongodb.v20190725 import mongodb_client
from tencentcloud.postgres.v20170312 import models as postgres_models
from tencentcloud.postgres.v20170312 import postgres_client
from tencentcloud.redis.v20180412 import models as redis_models
from tencentcloud.redis.v20180412 import redis_client
from tencentcloud.sqlserver.v20180328 import models as sqlserver_models
from tencentcloud.sqlserver.v20180328 import sqlserver_client
from tencentcloud.tdmysql.v20211122 import models as tdmysql_models
from tencentcloud.tdmysql.v20211122 import tdmysql_client
from tencentcloud.vpc.v20170312 import models as vpc_models
from tencentcloud.vpc.v20170312 import vpc_client

Status = int | str | None


@dataclass(frozen=True)
class Sdk:
    """One product's official client: its class, models module, status action and ID parameter."""

    client: Any
    models: ModuleType
    action: str
    id_param: str
    integer_id: bool


@dataclass(frozen=True)
class ListSdk:
    """One product's list action through its official client, from its models.py: the action, the
    response's list attribute, the request's start-time bounds (None: a snapshot of instances), the
    published quota, and the Limit when none is given (None: the SDK documents none)."""

    action: str
    items: str
    window: tuple[str, str] | None
    quota: float
    default_limit: int | None = None
    # An item's fields: the ID the status action takes (a snapshot's Locker), its instance (with a field
    # to fall back on when it names none), and its progress.
    id_field: str = "TaskId"
    instance_field: str = "InstanceId"
    fallback_instance_field: str = ""
    progress_field: str = "Progress"
    shows_region: bool = False  # each item says its region
    offset_multiple_of_limit: bool = False  # the API refuses an Offset that is not a multiple of Limit
    cluster_prefix: str = ""  # an instance ID that begins so names a cluster; "": the API has no clusters
    every_job: bool = False  # no time bounds: every job of the region by its ID, not a snapshot (DTS)
    status_action: bool = False  # the list is the status action itself, unfiltered (one quota for both)


@dataclass(frozen=True)
class Facts:
    """One product, as its SDK and documentation describe it."""

    sdk: Sdk
    not_found: str | None  # the not-found code, from errorcodes.py; None: an empty answer instead
    answer_fields: frozenset[str]  # the status answer's fields beside RequestId, from the response model
    # Statuses as the API spells them (flows: 0 succeeded, 1 failed, 2 running): a running one, a succeeded
    # one, and three in a row for a timeline; then the running and succeeded ones as exported.
    running: Status
    succeeded: Status
    timeline: tuple[Status, Status, Status]
    exported_running: str
    exported_succeeded: str
    instance_prefix: str  # how the product's instance IDs begin
    listing: ListSdk | None = None  # its account-wide list action, if it has one
    # The list field of the answer holding the one task asked for (PostgreSQL's TaskSet, DTS sync's
    # JobList); "": the task is the answer itself.
    in_list: str = ""
    status_in: str = ""  # the answer field holding Status (CKafka's Result); "": the answer itself
    id_pattern: str = ""  # what its real IDs look like (a regular expression), where the tests check it
    # Its task ID is the RequestId of the call that started it, and its SDK's documentation names those
    # calls (see audit_calls): discovery reads them from the audit trail (CloudAudit's DescribeEvents).
    audited: bool = False
    # The status request is the instance's task list (InstanceId and Limit), the task picked by its Id: the
    # ID is `<instance ID>:<task Id>`.
    instance_tasks: bool = False


_FLOW_FIELDS: Final = frozenset({"Status"})
# A RequestId, as every API answers it (the SDKs' examples): a lower-case UUID.
REQUEST_ID_PATTERN: Final = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"


def _flow(
    client: Any,
    models: ModuleType,
    action: str,
    not_found: str,
    timeline: tuple[Status, Status, Status],
    prefix: str,
    listing: ListSdk | None = None,
) -> Facts:
    """A product whose flows answer an integer Status: 0 succeeded, 1 failed, 2 running."""
    sdk = Sdk(client, models, action, "FlowId", True)
    return Facts(sdk, not_found, _FLOW_FIELDS, 2, 0, timeline, "running", "success", prefix, listing)


_INSTANCES: Final = "Instances"
FACTS: Final[Mapping[str, Facts]] = {
    "mariadb": _flow(
        mariadb_client.MariadbClient,
        mariadb_models,
        "DescribeFlow",
        "InvalidParameter.FlowNotFound",
        (2, 2, 0),
        "tdsql-",
        ListSdk("DescribeDBInstances", _INSTANCES, None, 200, 20, "Locker", shows_region=True),
    ),
    "cdb": Facts(
        Sdk(cdb_client.CdbClient, cdb_models, "DescribeAsyncRequestInfo", "AsyncRequestId", False),
        "InvalidParameter.InvalidAsyncRequestId",
        frozenset({"Status", "Info"}),
        "RUNNING",
        "SUCCESS",
        ("INITIAL", "RUNNING", "SUCCESS"),
        "running",
        "success",
        "cdb-",
        ListSdk(
            "DescribeTasks",
            "Items",
            ("StartTimeBegin", "StartTimeEnd"),
            100,
            20,
            id_field="AsyncRequestId",
            instance_field="InstanceIds",  # a list of them
        ),
        id_pattern=r"[0-9a-f]{8}(-[0-9a-f]{8}){3}",
    ),
    "dcdb": _flow(
        dcdb_client.DcdbClient,
        dcdb_models,
        "DescribeFlow",
        "InvalidParameter.FlowNotFound",
        (2, 2, 1),
        "dcdbt-",
        ListSdk("DescribeDCDBInstances", _INSTANCES, None, 200, 10, "Locker", shows_region=True),
    ),
    "sqlserver": _flow(
        sqlserver_client.SqlserverClient,
        sqlserver_models,
        "DescribeFlowStatus",
        "ResourceNotFound",
        (2, 2, 0),
        "mssql-",
    ),
    # An instance's task: `<instance ID>:<task Id>`, read from DescribeInstanceTasks (1 running, 2 success,
    # 3 failed); an unknown instance is ResourceNotFound.InstanceNotFound. Discovered in two steps (the
    # busy instances, DescribeDBInstances Status 7, then each one's running tasks): no ListSdk row, the
    # generic list tests being for one-step lists; tests/test_instance_discovery.py reads both with the SDK.
    "sqlserver_tasks": Facts(
        Sdk(sqlserver_client.SqlserverClient, sqlserver_models, "DescribeInstanceTasks", "InstanceId", False),
        "ResourceNotFound.InstanceNotFound",
        frozenset({"TotalCount", "InstanceTaskSet"}),
        1,
        2,
        (1, 1, 3),
        "running",
        "success",
        "mssql-",
        instance_tasks=True,
    ),
    "cynosdb": _flow(
        cynosdb_client.CynosdbClient,
        cynosdb_models,
        "DescribeFlow",
        "InvalidParameterValue.FlowNotFound",
        (2, 2, 1),
        "cynosdbmysql-ins-",
        # The status action (DescribeFlow) takes the FlowId; a cluster's task names no instance.
        ListSdk(
            "DescribeTasks",
            "TaskList",
            ("StartTimeBegin", "StartTimeEnd"),
            1000,
            id_field="FlowId",
            fallback_instance_field="ClusterId",
            progress_field="Process",
            shows_region=True,
            cluster_prefix="cynosdbmysql-",
        ),
    ),
    "mongodb": Facts(
        Sdk(
            mongodb_client.MongodbClient, mongodb_models, "DescribeAsyncRequestInfo", "AsyncRequestId", False
        ),
        "ResourceNotFound",
        frozenset({"Status", "StartTime", "EndTime"}),
        "running",
        "success",
        ("initial", "running", "undoed"),
        "running",
        "success",
        "cmgo-",
    ),
    "redis": Facts(
        Sdk(redis_client.RedisClient, redis_models, "DescribeTaskInfo", "TaskId", True),
        "ResourceNotFound",
        frozenset({"Status", "StartTime", "TaskType", "InstanceId", "TaskMessage"}),
        "running",
        "succeed",
        ("preparing", "running", "succeed"),
        "running",
        "succeed",
        "crs-",
        ListSdk(
            "DescribeTaskList", "Tasks", ("BeginTime", "EndTime"), 100, 20, offset_multiple_of_limit=True
        ),
    ),
    "postgres": Facts(
        Sdk(postgres_client.PostgresClient, postgres_models, "DescribeTasks", "TaskId", True),
        None,
        frozenset({"TotalCount", "TaskSet"}),
        "Running",
        "Success",
        ("Running", "WaitSwitch", "Success"),
        "running",
        "success",
        "postgres-",
        # The status action itself: its list quota is part of the status action's 20/s.
        ListSdk(
            "DescribeTasks",
            "TaskSet",
            ("MinStartTime", "MaxStartTime"),
            20,
            20,
            instance_field="DBInstanceId",
            status_action=True,
        ),
        in_list="TaskSet",
    ),
    # Redis's task service under another name: the same response model, statuses and list.
    "keewidb": Facts(
        Sdk(keewidb_client.KeewidbClient, keewidb_models, "DescribeTaskInfo", "TaskId", True),
        "ResourceNotFound",
        frozenset({"Status", "StartTime", "TaskType", "InstanceId", "TaskMessage"}),
        "running",
        "succeed",
        ("preparing", "running", "succeed"),
        "running",
        "succeed",
        "kee-",
        ListSdk("DescribeTaskList", "Tasks", ("BeginTime", "EndTime"), 50, 20, offset_multiple_of_limit=True),
    ),
    # A FlowId, and a Status that is a word: running, success, paused, failed.
    "tdmysql": Facts(
        Sdk(tdmysql_client.TdmysqlClient, tdmysql_models, "DescribeFlow", "FlowId", True),
        "InvalidParameter",
        frozenset({"Status"}),
        "running",
        "success",
        ("running", "paused", "failed"),
        "running",
        "success",
        "tdsql3-",
    ),
    # The flow's Status and Output are inside Result.
    "ckafka": Facts(
        Sdk(ckafka_client.CkafkaClient, ckafka_models, "DescribeTaskStatus", "FlowId", True),
        "InvalidParameter",
        frozenset({"Result"}),
        2,
        0,
        (2, 2, 1),
        "running",
        "success",
        "ckafka-",
        status_in="Result",
    ),
    # A request-ID task: its TaskId is the RequestId of the call that started it.
    "clb": Facts(
        Sdk(clb_client.ClbClient, clb_models, "DescribeTaskStatus", "TaskId", False),
        "InvalidParameter",
        frozenset({"Status", "LoadBalancerIds", "Message"}),
        2,
        0,
        (2, 2, 1),
        "running",
        "success",
        "lb-",
        id_pattern=REQUEST_ID_PATTERN,
        audited=True,
    ),
    # A request-ID task whose Status is a word in capitals.
    "vpc": Facts(
        Sdk(vpc_client.VpcClient, vpc_models, "DescribeVpcTaskResult", "TaskId", False),
        "ResourceNotFound",
        frozenset({"Status", "Output", "Result"}),
        "RUNNING",
        "SUCCESS",
        ("RUNNING", "RUNNING", "FAILED"),
        "running",
        "success",
        "eni-",
        id_pattern=REQUEST_ID_PATTERN,
        audited=True,
    ),
    # Migration jobs: the status words are camel-cased (checkPass, manualPaused).
    "dts": Facts(
        Sdk(dts_client.DtsClient, dts_models, "DescribeMigrationDetail", "JobId", False),
        "ResourceNotFound.JobNotExist",
        frozenset(
            {"JobId", "JobName", "Status", "BriefMsg", "CreateTime", "UpdateTime", "StartTime", "EndTime"}
        ),
        "running",
        "success",
        ("checking", "checkPass", "running"),
        "running",
        "success",
        "dts-",
        # Every job of the region, no time bounds (request model: no time parameter), 20/s (API docs).
        ListSdk(
            "DescribeMigrationJobs", "JobList", None, 20, 20, "JobId", "", progress_field="", every_job=True
        ),
    ),
    # Sync jobs: no per-job action; DescribeSyncJobs filtered by JobId answers the one job in JobList, or
    # an empty JobList for an unknown ID (as the Terraform provider reads it). Words are camel-cased.
    "dts_sync": Facts(
        Sdk(dts_client.DtsClient, dts_models, "DescribeSyncJobs", "JobId", False),
        None,
        frozenset({"TotalCount", "JobList"}),
        "Running",
        "Stopped",
        ("Initialized", "Checking", "Running"),
        "running",
        "stopped",
        "sync-",
        # The status action itself, unfiltered: every job of the region, 100/s shared with polling.
        ListSdk(
            "DescribeSyncJobs",
            "JobList",
            None,
            100,
            20,
            "JobId",
            "",
            progress_field="Detail.Progress",
            every_job=True,
            status_action=True,
        ),
        in_list="JobList",
    ),
}

# The same facts by table, for the test modules that read one kind at a time.
SDKS: Final = {name: facts.sdk for name, facts in FACTS.items()}
LIST_SDKS: Final = {name: facts.listing for name, facts in FACTS.items() if facts.listing is not None}
NOT_FOUND: Final = {name: facts.not_found for name, facts in FACTS.items() if facts.not_found is not None}
RUNNING: Final = {name: facts.running for name, facts in FACTS.items()}
AUDITED_SDKS: Final = {name: facts.sdk for name, facts in FACTS.items() if facts.audited}

# CloudAudit, whose DescribeEvents (2019-03-19, 20/s, at most 50 events a page) lists the audited calls.
AUDIT_CLIENT: Final = cloudaudit_client.CloudauditClient
AUDIT_MODELS: Final = cloudaudit_models
AUDIT_SERVICE: Final = "cloudaudit"


def audit_calls(product: str) -> set[str]:
    """The product's calls whose SDK documentation (the client's docstrings) says to pass their RequestId to
    its status action, reads (Describe*) left out: the calls an audit sweep should look for."""
    sdk = AUDITED_SDKS[product]
    calls = set()
    for name in dir(sdk.client):
        method = getattr(sdk.client, name)
        doc = getattr(method, "__doc__", None) or ""
        if (
            name[:1].isupper()
            and name != sdk.action
            and not name.startswith("Describe")
            and sdk.action in doc
        ):
            calls.add(name)
    return calls


def sdk_status(product: str, response: Any) -> Any:
    """The Status of an SDK answer, wherever the product keeps it (PostgreSQL's TaskSet item, DTS sync's
    JobList item, CKafka's Result)."""
    facts = FACTS[product]
    if facts.in_list:
        return getattr(response, facts.in_list)[0].Status
    return getattr(response, facts.status_in).Status if facts.status_in else response.Status


def tid(product: str, raw: str, instance: str = "t") -> str:
    """A task ID of the product made from `raw`: itself, or for an instance's task `<prefix><instance>:<raw>`
    (the instance is made up from the tasks the simulator is given: another `instance` is unknown)."""
    facts = FACTS[product]
    return f"{facts.instance_prefix}{instance}:{raw}" if facts.instance_tasks else raw
