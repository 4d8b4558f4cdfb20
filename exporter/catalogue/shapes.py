"""The shapes of the status answers: what each holds beside Status, by name. The simulator answers each named
shape its own way (`exporter.simulator.answers`); a product names its shape in its catalogue entry."""

from __future__ import annotations

from dataclasses import dataclass

from exporter.catalogue.parsers import FLOW_STATUS_CODES


@dataclass(frozen=True)
class AnswerShape:
    """What a status answer is made of, by name. The simulator answers each named shape its own way
    (`exporter.simulator.answers`), so a new product that answers like an existing one names that shape here
    and needs no simulator change; only a new shape needs its answer written there. The shapes:

    - `flow`: an integer Status alone, 0 success, 1 failed, 2 running (MariaDB, TDSQL, SQL Server, TDSQL-C);
    - `status_info`: a string Status and Info (CDB);
    - `status_times`: a string Status, StartTime and EndTime (MongoDB);
    - `task_info`: a string Status, StartTime, TaskType, InstanceId and TaskMessage (Redis);
    - `task_set`: a TaskSet holding the one task asked for, empty when there is none (PostgreSQL);
    - `status`: a string Status alone (TDSQL Boundless);
    - `result_flow`: a flow's integer Status and Output, both inside `Result` (CKafka);
    - `task_status`: a flow's integer Status, LoadBalancerIds and Message (CLB, a request-ID task);
    - `task_result`: a word Status, Output and a Result list of resources (VPC, a request-ID task);
    - `migration_detail`: a word Status, JobId, JobName, BriefMsg and four times (DTS migration jobs);
    - `instance_tasks`: an instance's task list, InstanceTaskSet, whose items have an integer Status, 1
      running, 2 success, 3 failed (SQL Server's instance tasks; the exporter picks the task by its Id).
    - `sync_jobs`: a JobList holding the one job asked for, empty when there is none, each job with a word
      Status, times and a Detail of its steps (DTS sync jobs: DescribeSyncJobs filtered by JobId).

    `holder` names the object that holds Status when it is not the answer itself (CKafka's `Result`): a
    product answering a known shape one level down reuses the shape's fields under its own holder.
    """

    name: str
    # The status words and the integers the API answers for them; empty: Status is a word.
    status_codes: tuple[tuple[str, int], ...] = ()
    holder: str = ""  # the answer field holding Status and the fields beside it; "": the answer itself

    @property
    def integer_status(self) -> bool:
        return bool(self.status_codes)


FLOW_ANSWER = AnswerShape("flow", FLOW_STATUS_CODES)
STATUS_INFO_ANSWER = AnswerShape("status_info")
STATUS_TIMES_ANSWER = AnswerShape("status_times")
TASK_INFO_ANSWER = AnswerShape("task_info")
TASK_SET_ANSWER = AnswerShape("task_set")
STATUS_ANSWER = AnswerShape("status")
RESULT_FLOW_ANSWER = AnswerShape("result_flow", FLOW_ANSWER.status_codes, holder="Result")
TASK_STATUS_ANSWER = AnswerShape("task_status", FLOW_ANSWER.status_codes)
TASK_RESULT_ANSWER = AnswerShape("task_result")
MIGRATION_DETAIL_ANSWER = AnswerShape("migration_detail")
INSTANCE_TASKS_ANSWER = AnswerShape("instance_tasks", (("running", 1), ("success", 2), ("failed", 3)))
SYNC_JOBS_ANSWER = AnswerShape("sync_jobs")
