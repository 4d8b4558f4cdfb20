"""The catalogue: everything the exporter knows about each product's status API, in one entry per product.

Action, version, ID field and its kind, the config's watch key, endpoint and published quota, the documented
statuses and which are final or failures, how an answer becomes an Observation (status and the extra fields
the product gives), which error codes mean "not found" and "too many requests". Config keys, validation,
request payloads, the simulator's routing, HELP texts and the README's table come from here; nothing else
branches on a product's name. Shapes and statuses are those of the official SDKs' models.py.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from typing import Any

from exporter.catalogue import instancelists, joblists, listapis

# Re-exported: the rest of the exporter reads every catalogue fact from this module.
from exporter.catalogue.apifields import (
    INFO_MAX_LENGTH,
    NOT_FOUND,
    UNKNOWN,
    IdKind,
    InvalidResponse,
    Observation,
    TaskNotFound,
    api_text,
    tencent_time,
)
from exporter.catalogue.auditcalls import CLB_AUDITED_CALLS, VPC_AUDITED_CALLS
from exporter.catalogue.auditlists import AUDIT_TRAIL, AuditOwner
from exporter.catalogue.listapis import ListApi
from exporter.catalogue.parsers import fields as _fields
from exporter.catalogue.parsers import first_item as _first_item
from exporter.catalogue.parsers import flow as _flow
from exporter.catalogue.parsers import held as _held
from exporter.catalogue.parsers import parse_task_set
from exporter.catalogue.phases import FINAL_PHASES, IN_PROGRESS_PHASES, PHASES, Phase
from exporter.catalogue.product import (
    ASYNC_REQUEST_ID,
    FLOW_ID,
    FLOW_STATUSES,
    REQUEST_ID,
    TASK_ID,
    THROTTLING,
    Product,
    flow_product,
)
from exporter.catalogue.shapes import (
    INSTANCE_TASKS_ANSWER,
    MIGRATION_DETAIL_ANSWER,
    RESULT_FLOW_ANSWER,
    STATUS_ANSWER,
    STATUS_INFO_ANSWER,
    STATUS_TIMES_ANSWER,
    SYNC_JOBS_ANSWER,
    TASK_INFO_ANSWER,
    TASK_RESULT_ANSWER,
    TASK_SET_ANSWER,
    TASK_STATUS_ANSWER,
    AnswerShape,
)

MARIADB = flow_product(
    "mariadb",
    "MariaDB",
    "DescribeFlow",
    "2017-03-12",
    ("InvalidParameter.FlowNotFound",),
    ("LimitExceeded.TooFrequentlyCalled",),
    listapis.MARIADB_INSTANCES,
)
CDB = Product(
    name="cdb",
    title="TencentDB for MySQL",
    action="DescribeAsyncRequestInfo",
    version="2017-03-20",
    id_param="AsyncRequestId",
    id_kind=ASYNC_REQUEST_ID,
    watch_key="cdb_async_requests",
    default_endpoint="https://cdb.tencentcloudapi.com",
    default_rate_limit=40.0,
    # SDK: PAUSED is "terminating" (not final yet); REMOVED final, so failed like every final status but
    # success; UNDEFINED "created but not started" (waiting for the maintenance window): pending, not unknown.
    phases=(
        ("initial", Phase.PENDING),
        ("running", Phase.RUNNING),
        ("success", Phase.SUCCEEDED),
        ("failed", Phase.FAILED),
        ("killed", Phase.FAILED),
        ("removed", Phase.FAILED),
        ("paused", Phase.RUNNING),
        ("undefined", Phase.PENDING),
        (UNKNOWN, Phase.UNKNOWN),
    ),
    parse=_fields(info="Info"),
    not_found_codes=("InvalidParameter.InvalidAsyncRequestId",),
    answer_shape=STATUS_INFO_ANSWER,
    extra_fields=("Info",),
    listing=listapis.CDB_TASKS,
)
DCDB = flow_product(
    "dcdb",
    "TDSQL (DCDB)",
    "DescribeFlow",
    "2018-04-11",
    ("InvalidParameter.FlowNotFound",),
    ("LimitExceeded.TooFrequentlyCalled",),
    listapis.DCDB_INSTANCES,
)
# The SDK lists no flow-specific code; ResourceNotFound is its generic "resource does not exist".
SQLSERVER = dataclasses.replace(
    flow_product("sqlserver", "SQL Server", "DescribeFlowStatus", "2018-03-28", ("ResourceNotFound",)),
    unlisted_why="none without an instance ID (its instances' tasks: `sqlserver_tasks`)",
)


def _unpicked(response: Mapping[str, Any]) -> Observation:
    """`parse` of a product whose answer lists several tasks: without the ID there is no telling which."""
    raise InvalidResponse("this answer is read with the task's ID (Product.observe)")


# SQL Server's instance tasks, each an (instance ID, task ID) pair read from its instance's task list
# (instancelists has the facts and their sources). Not the FlowId of SQLSERVER: nothing says a task's Id is.
SQLSERVER_TASKS = Product(
    name="sqlserver_tasks",
    title="SQL Server instance tasks",
    action="DescribeInstanceTasks",
    version="2018-03-28",
    id_param="InstanceId",
    id_kind=IdKind(
        integer=False, expected="an instance ID and task ID such as mssql-njj2mtpl:23517", pair=True
    ),
    watch_key="sqlserver_instance_tasks",
    default_endpoint="https://sqlserver.tencentcloudapi.com",
    default_rate_limit=20.0,
    # DescribeInstanceTasksRequest.Status: 1 running, 2 success, 3 failed.
    phases=(
        ("running", Phase.RUNNING),
        ("success", Phase.SUCCEEDED),
        ("failed", Phase.FAILED),
        (UNKNOWN, Phase.UNKNOWN),
    ),
    parse=_unpicked,
    parse_for=instancelists.parse_instance_task,
    request=instancelists.instance_task_request,
    # An unknown instance: the SDK's errorcodes.py has ResourceNotFound.InstanceNotFound ("实例不存在").
    not_found_codes=("ResourceNotFound.InstanceNotFound",),
    answer_shape=INSTANCE_TASKS_ANSWER,
    extra_fields=("Type", "StartTime", "EndTime", "Progress", "Message"),
    listing=listapis.SQLSERVER_INSTANCE_TASKS,
    service="sqlserver",
)
CYNOSDB = flow_product(
    "cynosdb",
    "TDSQL-C (CynosDB)",
    "DescribeFlow",
    "2019-01-07",
    ("InvalidParameterValue.FlowNotFound", "FailedOperation.FlowNotFoundError"),
    listing=listapis.CYNOSDB_TASKS,
)
MONGODB = Product(
    name="mongodb",
    title="TencentDB for MongoDB",
    action="DescribeAsyncRequestInfo",
    version="2019-07-25",
    id_param="AsyncRequestId",
    id_kind=ASYNC_REQUEST_ID,
    watch_key="mongodb_async_requests",
    default_endpoint="https://mongodb.tencentcloudapi.com",
    default_rate_limit=20.0,
    # "paused: failed, paused" and "undoed: failed, rolled back" (SDK): failures that end the task.
    phases=(
        ("initial", Phase.PENDING),
        ("running", Phase.RUNNING),
        ("paused", Phase.FAILED),
        ("undoed", Phase.FAILED),
        ("failed", Phase.FAILED),
        ("success", Phase.SUCCEEDED),
        (UNKNOWN, Phase.UNKNOWN),
    ),
    parse=_fields(start="StartTime", end="EndTime"),
    not_found_codes=("ResourceNotFound",),
    answer_shape=STATUS_TIMES_ANSWER,
    throttling_codes=(*THROTTLING, "LimitExceeded.TooManyRequests"),
    extra_fields=("StartTime", "EndTime"),
    unlisted_why="none: no action lists async requests",
)
REDIS = Product(
    name="redis",
    title="TencentDB for Redis",
    action="DescribeTaskInfo",
    version="2018-04-12",
    id_param="TaskId",
    id_kind=TASK_ID,
    watch_key="redis_tasks",
    default_endpoint="https://redis.tencentcloudapi.com",
    default_rate_limit=20.0,
    # SDK: preparing is "waiting to run".
    phases=(
        ("preparing", Phase.PENDING),
        ("running", Phase.RUNNING),
        ("succeed", Phase.SUCCEEDED),
        ("failed", Phase.FAILED),
        ("error", Phase.FAILED),
        (UNKNOWN, Phase.UNKNOWN),
    ),
    parse=_fields(info="TaskMessage", start="StartTime", task_type="TaskType", instance="InstanceId"),
    not_found_codes=("ResourceNotFound",),
    answer_shape=TASK_INFO_ANSWER,
    extra_fields=("StartTime", "TaskType", "InstanceId", "TaskMessage"),
    listing=listapis.REDIS_TASKS,
)
POSTGRES = Product(
    name="postgres",
    title="TencentDB for PostgreSQL",
    action="DescribeTasks",
    version="2017-03-12",
    id_param="TaskId",
    id_kind=TASK_ID,
    watch_key="postgres_tasks",
    default_endpoint="https://postgres.tencentcloudapi.com",
    default_rate_limit=20.0,
    # WaitSwitch: done but for the switch-over, which waits for the maintenance window; Pause may resume.
    phases=(
        ("running", Phase.RUNNING),
        ("success", Phase.SUCCEEDED),
        ("waitswitch", Phase.RUNNING),
        ("fail", Phase.FAILED),
        ("pause", Phase.RUNNING),
        (UNKNOWN, Phase.UNKNOWN),
    ),
    parse=parse_task_set,
    not_found_codes=(NOT_FOUND,),
    answer_shape=TASK_SET_ANSWER,
    throttling_codes=(*THROTTLING, "FailedOperation.OperateFrequencyLimitedError"),
    extra_fields=("TaskType", "DBInstanceId", "StartTime", "EndTime", "Progress"),
    listing=listapis.POSTGRES_TASKS,
)

# KeeWiDB answers like Redis: the same fields and statuses (succeed is the success; failed and error are
# failures; those three are final). Quota 20/s
# (cloud.tencent.com/document/api/1520/86202). No task-not-found code is documented: the SDK's error list
# for the action (tencentcloud-sdk-go keewidb/v20220308 client.go) is Redis's, word for word
# (FailedOperation.SystemError, InvalidParameter.InvalidParameter, InvalidParameter.PermissionDenied), and
# the Terraform provider never polls it; an unknown ID is taken to answer as Redis's does.
KEEWIDB = Product(
    name="keewidb",
    title="KeeWiDB",
    action="DescribeTaskInfo",
    version="2022-03-08",
    id_param="TaskId",
    id_kind=TASK_ID,
    watch_key="keewidb_tasks",
    default_endpoint="https://keewidb.tencentcloudapi.com",
    default_rate_limit=20.0,
    # Redis's: preparing accepted, not started yet (pending).
    phases=REDIS.phases,
    parse=_fields(info="TaskMessage", start="StartTime", task_type="TaskType", instance="InstanceId"),
    not_found_codes=("ResourceNotFound",),
    answer_shape=TASK_INFO_ANSWER,
    extra_fields=("StartTime", "TaskType", "InstanceId", "TaskMessage"),
    listing=listapis.KEEWIDB_TASKS,
)
# The request carries one parameter, the ID, already checked to be a positive integer (or a well-formed
# string): a parameter error can only mean the API does not know that ID. Used where the product documents
# no task-not-found code and its error list for the action has no better one.
_GENERIC_NOT_FOUND = ("InvalidParameter",)
# TDSQL Boundless: a FlowId like MariaDB's, but the Status is a word (SDK: "running: in progress; success;
# paused; failed"). Quota 20/s (tencentcloud.com/document/api/1292/78260). Its errorcodes.py has no flow
# code (ResourceNotFound.* name instances and products), there is no per-action error list (neither the Go
# SDK's client nor the Terraform provider has the product), so an unknown ID counts as not found through
# its generic InvalidParameter.
TDMYSQL = Product(
    name="tdmysql",
    title="TDSQL Boundless",
    action="DescribeFlow",
    version="2021-11-22",
    id_param="FlowId",
    id_kind=FLOW_ID,
    watch_key="tdmysql_flows",
    default_endpoint="https://tdmysql.tencentcloudapi.com",
    default_rate_limit=20.0,
    # paused: stopped, waiting for someone to resume it (not final, as PostgreSQL's pause); no status means
    # "accepted, not started".
    phases=(
        ("running", Phase.RUNNING),
        ("success", Phase.SUCCEEDED),
        ("paused", Phase.RUNNING),
        ("failed", Phase.FAILED),
        (UNKNOWN, Phase.UNKNOWN),
    ),
    parse=_fields(),
    not_found_codes=_GENERIC_NOT_FOUND,
    answer_shape=STATUS_ANSWER,
    unlisted_why="none: no list carries a FlowId",
)
# CKafka: a FlowId whose flow Status (0 success, 1 failed, 2 running) and Output are inside Result. Quota
# 20/s (cloud.tencent.com/document/api/597/90934). Its error list for the action (Go SDK's ckafka/v20190819
# client.go) has no flow code (InvalidParameterValue.InstanceNotExist names an instance), and the Terraform
# provider passes any error on; the list's InvalidParameter is the one that can be about the ID.
CKAFKA = Product(
    name="ckafka",
    title="CKafka",
    action="DescribeTaskStatus",
    version="2019-08-19",
    id_param="FlowId",
    id_kind=FLOW_ID,
    watch_key="ckafka_flows",
    default_endpoint="https://ckafka.tencentcloudapi.com",
    default_rate_limit=20.0,
    # As every flow's (success succeeded, failed failed, running running); none means "not started".
    phases=FLOW_STATUSES,
    parse=_held("Result", _flow(info="Output")),
    not_found_codes=_GENERIC_NOT_FOUND,
    answer_shape=RESULT_FLOW_ANSWER,
    extra_fields=("Result.Output",),
    unlisted_why="none: no list carries a FlowId",
)
# CLB: a request-ID task; an integer Status as a flow's, the load balancers it concerns and a Message
# ("the reason of a failure"). Quota 20/s (tencentcloud.com/document/api/214/33823). Its error list for the
# action (Go SDK's clb/v20180317 client.go) is FailedOperation, InternalError, InvalidParameter and
# InvalidParameter.RegionNotFound; the Terraform provider (services/clb waitForTaskFinish) stops at any
# error. InvalidParameter is the one that can be about the ID.
CLB = Product(
    name="clb",
    title="CLB",
    action="DescribeTaskStatus",
    version="2018-03-17",
    id_param="TaskId",
    id_kind=REQUEST_ID,
    watch_key="clb_tasks",
    default_endpoint="https://clb.tencentcloudapi.com",
    default_rate_limit=20.0,
    # As every flow's (success succeeded, failed failed, running running); none means "not started".
    phases=FLOW_STATUSES,
    parse=_flow(info="Message", instances="LoadBalancerIds"),
    not_found_codes=_GENERIC_NOT_FOUND,
    answer_shape=TASK_STATUS_ANSWER,
    extra_fields=("LoadBalancerIds", "Message"),
    audit_events=CLB_AUDITED_CALLS,
)
# VPC: a request-ID task (the mutating calls' documentation says to poll their RequestId; the Terraform
# provider's VPN resources pass an integer TaskId as a string too, which the string ID accepts). Status is
# SUCCESS, FAILED or RUNNING (exported lower-cased) beside Output and, for batch operations, a Result list.
# Quota 20/s (cloud.tencent.com/document/api/215/59037). Its error list for the action (Go SDK's
# vpc/v20170312 client.go) holds ResourceNotFound ("the resource does not exist"); the Terraform provider
# (services/vpc DescribeVpcTaskResult) retries any error.
VPC = Product(
    name="vpc",
    title="VPC",
    action="DescribeVpcTaskResult",
    version="2017-03-12",
    id_param="TaskId",
    id_kind=REQUEST_ID,
    watch_key="vpc_tasks",
    default_endpoint="https://vpc.tencentcloudapi.com",
    default_rate_limit=20.0,
    # success succeeded, failed failed; none means "accepted, not started", so there is no pending word.
    phases=(
        ("running", Phase.RUNNING),
        ("success", Phase.SUCCEEDED),
        ("failed", Phase.FAILED),
        (UNKNOWN, Phase.UNKNOWN),
    ),
    parse=_fields(info="Output"),
    not_found_codes=("ResourceNotFound",),
    answer_shape=TASK_RESULT_ANSWER,
    extra_fields=("Output",),
    audit_events=VPC_AUDITED_CALLS,
)
# DTS data migration jobs, watched by JobId (dts-...) through DescribeMigrationDetail. Quota 20/s
# (cloud.tencent.com/document/api/571/82085). Its errorcodes.py has ResourceNotFound.JobNotExist ("the
# migration job does not exist"); the action's error list (Go SDK's dts/v20211206 client.go) has
# ResourceNotFound.ResourceNotFoundError. Discovered from DescribeMigrationJobs (joblists.MIGRATION_JOBS).
DTS = Product(
    name="dts",
    title="DTS migration",
    action="DescribeMigrationDetail",
    version="2021-12-06",
    id_param="JobId",
    id_kind=IdKind(integer=False, expected="a DTS job ID such as dts-amm1jw5q"),
    watch_key="dts_migration_jobs",
    default_endpoint="https://dts.tencentcloudapi.com",
    default_rate_limit=20.0,
    # Lower-cased as exported. created: accepted, not started (pending). checkpass: the pre-check passed,
    # waiting to be started (running); checknotpass: it did not, and the job waits for a fix and a new check
    # (final, failed); manualpaused and pausing: paused by someone, not final (running); readycomplete and
    # completing: the incremental phase is being ended; success and failed are final.
    phases=(
        ("created", Phase.PENDING),
        ("checking", Phase.RUNNING),
        ("checkpass", Phase.RUNNING),
        ("checknotpass", Phase.FAILED),
        ("readyrun", Phase.RUNNING),
        ("running", Phase.RUNNING),
        ("readycomplete", Phase.RUNNING),
        ("completing", Phase.RUNNING),
        ("success", Phase.SUCCEEDED),
        ("failed", Phase.FAILED),
        ("stopping", Phase.RUNNING),
        ("pausing", Phase.RUNNING),
        ("manualpaused", Phase.RUNNING),
        (UNKNOWN, Phase.UNKNOWN),
    ),
    parse=_fields(info="BriefMsg", start="StartTime", end="EndTime"),
    not_found_codes=("ResourceNotFound.JobNotExist", "ResourceNotFound.ResourceNotFoundError"),
    answer_shape=MIGRATION_DETAIL_ANSWER,
    extra_fields=("BriefMsg", "StartTime", "EndTime"),
    listing=joblists.MIGRATION_JOBS,
)
# DTS data sync jobs, watched by JobId (sync-...). There is no per-job action: DescribeSyncJobs filtered by
# JobId is the status request, as the Terraform provider asks it (services/dts DescribeDtsSyncJob, which
# reads an empty JobList as "no such job"); the same action, unfiltered, is the list discovery sweeps, so
# the two share its quota, 100/s (cloud.tencent.cn/document/api/571/82103). An unknown ID is an empty JobList
# (counted as Exporter.TaskNotFound); errorcodes.py's ResourceNotFound.JobNotExist ("the job does not
# exist") is read as not found too. Served by the `dts` service, whose credential scope it signs for.
DTS_SYNC = Product(
    name="dts_sync",
    service="dts",
    title="DTS sync",
    action="DescribeSyncJobs",
    version="2021-12-06",
    id_param="JobId",
    id_kind=IdKind(integer=False, expected="a DTS sync job ID such as sync-werwfs23"),
    watch_key="dts_sync_jobs",
    default_endpoint="https://dts.tencentcloudapi.com",
    default_rate_limit=100.0,
    # SyncJobInfo.Status (SDK models.py), lower-cased, in the SDK's order. uninitialized (bought, not
    # configured) and initialized (configured, not started): pending. checkpass waits to be started and
    # checknotpass for a fix and a new check, as the migration jobs' (running; failed). running is a sync job
    # replicating: healthy, and meant to stay so for months, so it is ongoing, not running: a long-running
    # phase would trip every "running too long" alert and page, and no success can stand for it, because a
    # final phase is polled only every finished_interval and forgotten after discovery's retention, so a
    # later failure would go unseen. stopped (ended) is the success: the job's own end, what the Terraform
    # provider's stop operation waits for (as its start operation waits for running). resumableerr ("task
    # error", waiting for someone to resume it) is failed, as checknotpass: the job no longer replicates;
    # a resume is seen by the next poll of a final status. released: the job's resources are gone (final,
    # failed). pausing, paused (waits to be resumed), stopping, resuming and resetting (back to be
    # configured again) are on their way: running.
    phases=(
        ("uninitialized", Phase.PENDING),
        ("initialized", Phase.PENDING),
        ("checking", Phase.RUNNING),
        ("checkpass", Phase.RUNNING),
        ("checknotpass", Phase.FAILED),
        ("readyrunning", Phase.RUNNING),
        ("running", Phase.ONGOING),
        ("pausing", Phase.RUNNING),
        ("paused", Phase.RUNNING),
        ("stopping", Phase.RUNNING),
        ("stopped", Phase.SUCCEEDED),
        ("resumableerr", Phase.FAILED),
        ("resuming", Phase.RUNNING),
        ("failed", Phase.FAILED),
        ("released", Phase.FAILED),
        ("resetting", Phase.RUNNING),
        (UNKNOWN, Phase.UNKNOWN),
    ),
    parse=_first_item(
        "JobList",
        _fields(info="Detail.Message", start="StartTime", end="EndTime", progress="Detail.Progress"),
    ),
    not_found_codes=(NOT_FOUND, "ResourceNotFound.JobNotExist"),
    answer_shape=SYNC_JOBS_ANSWER,
    extra_fields=("StartTime", "EndTime", "Detail.Progress", "Detail.Message"),
    listing=joblists.SYNC_JOBS,
)

PRODUCTS: tuple[Product, ...] = (
    MARIADB,
    CDB,
    DCDB,
    SQLSERVER,
    SQLSERVER_TASKS,
    CYNOSDB,
    MONGODB,
    REDIS,
    POSTGRES,
    KEEWIDB,
    TDMYSQL,
    CKAFKA,
    CLB,
    VPC,
    DTS,
    DTS_SYNC,
)
BY_NAME: Mapping[str, Product] = {s.name: s for s in PRODUCTS}
__all__ = [
    "AUDITED",
    "AUDIT_TRAIL",
    "BY_NAME",
    "DISCOVERABLE",
    "FINAL_PHASES",
    "INFO_MAX_LENGTH",
    "IN_PROGRESS_PHASES",
    "NOT_FOUND",
    "PHASES",
    "PRODUCTS",
    "UNKNOWN",
    "AnswerShape",
    "IdKind",
    "InvalidResponse",
    "ListApi",
    "Observation",
    "Phase",
    "Product",
    "TaskNotFound",
    "api_text",
    "audit_owners",
    "tencent_time",
]
# The products discovery sweeps a list API of: those with one (`Product.discoverable` also counts AUDITED).
DISCOVERABLE: tuple[Product, ...] = tuple(s for s in PRODUCTS if s.listing is not None)
# The products discovered through the audit trail, and each event name's owner (names are one product's).
AUDITED: tuple[Product, ...] = tuple(s for s in PRODUCTS if s.audit_events)


def audit_owners(products: Iterable[Product]) -> dict[str, AuditOwner]:
    """Each audit event name of `products` and whose operation it starts; ValueError when two products claim
    one name (the trail could not say whose operation it is)."""
    owners: dict[str, AuditOwner] = {}
    for product in products:
        for name in product.audit_events:
            other = owners.setdefault(name, AuditOwner(product.name, product.id_kind))
            if other.product != product.name:
                raise ValueError(f"audit event {name} is both {other.product}'s and {product.name}'s")
    return owners


audit_owners(AUDITED)  # checked when the catalogue loads
