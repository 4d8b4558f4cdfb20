"""What the exporter knows about each watched task, with its exposition lines pre-rendered.

A task's lines are rendered again only when something about it changes (a poll, an error), so a scrape is a
concatenation of ready strings, as kube-state-metrics does, and never waits on rendering thousands of series.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field

from exporter.catalogue.listapis import Listed
from exporter.catalogue.products import BY_NAME, FINAL_PHASES, IN_PROGRESS_PHASES, Observation, Phase
from exporter.config.parser import Key, WatchedTask
from exporter.exposition.families import TASK_FAMILIES, current_status, task_labels

# Where the status family is in TASK_FAMILIES, rendered by current_status when only the current one is shown.
_STATUS = next(i for i, f in enumerate(TASK_FAMILIES) if f.name == "tencentcloud_task_status")


@dataclass
class TaskState:
    task: WatchedTask
    status: str | None = None
    status_since: float | None = None  # unix time the current status was first seen
    last_success: float | None = None  # unix time
    last_attempt: float | None = None  # unix time
    last_error: str | None = None
    consecutive_errors: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    observation: Observation | None = None  # the last successful poll's, with the product's extra fields
    lines: tuple[bytes, ...] = ()  # one entry per TASK_FAMILIES family
    # (status, first seen) kept by an earlier run of the exporter; used by the first poll, then dropped.
    remembered: tuple[str, float] | None = None
    # What the product's list API last said of the task (discovery): fills in what the status API lacks.
    listed: Listed | None = None
    source: str = ""  # where the task was first known (config, api, discovered); kept through retask()
    # The operation's duration: when a poll first saw it pending or running, and whether its duration was
    # observed already (kept across restarts by the store, so no operation is counted twice).
    in_progress_since: float | None = None
    duration_observed: bool = False
    current_status_only: bool = False  # metrics.status_series: current

    def __post_init__(self) -> None:
        self.source = self.source or self.task.origin
        self.retask(self.task)

    # The product's extra fields: the status API's answer first, the list API's where it has none.

    @property
    def start_time(self) -> float | None:
        seen = self.observation.start_time if self.observation else None
        return seen if seen is not None else (self.listed.start_time if self.listed else None)

    @property
    def end_time(self) -> float | None:
        seen = self.observation.end_time if self.observation else None
        return seen if seen is not None else (self.listed.end_time if self.listed else None)

    @property
    def task_type(self) -> str | None:
        seen = self.observation.task_type if self.observation else None
        return seen if seen is not None else (self.listed.task_type if self.listed else None)

    @property
    def instance_id(self) -> str | None:
        seen = self.observation.instance_id if self.observation else None
        return seen if seen is not None else (self.listed.instance_id if self.listed else None)

    @property
    def instance_name(self) -> str | None:
        return self.listed.instance_name if self.listed else None  # only the list APIs give it

    @property
    def progress(self) -> float | None:
        seen = self.observation.progress if self.observation else None
        return seen if seen is not None else (self.listed.progress if self.listed else None)

    def list(self, listed: Listed) -> None:
        """Takes what a sweep of the list API said of the task."""
        if listed != self.listed:
            self.listed = listed
            self.render()

    @property
    def info(self) -> str | None:
        """The product's free text from the last successful poll (CDB Info, Redis TaskMessage)."""
        return self.observation.info if self.observation else None

    def retask(self, task: WatchedTask) -> None:
        """Takes new watch settings (labels) for the same task, keeping everything learnt about it."""
        self.task = task
        self._labels = task_labels(task)
        self.render()

    @property
    def phase(self) -> Phase | None:
        """The phase of the last answer: not_found when the last poll was told no such ID exists (unless the
        task was seen final: it finished, and an API that forgot it since changes nothing), else its
        status's; None before either."""
        product = BY_NAME[self.task.product]
        if product.is_not_found(self.last_error) and not self.final:
            return Phase.NOT_FOUND
        return None if self.status is None else product.phase(self.status)

    @property
    def final(self) -> bool:
        return self.status in BY_NAME[self.task.product].final_statuses

    def observe(self, observation: Observation, now: float) -> bool:
        """Records a successful poll; True when the status changed (or was seen for the first time)."""
        changed = observation.status != self.status
        if changed:
            since = now
            if (
                self.status is None
                and self.remembered is not None
                and self.remembered[0] == observation.status
            ):
                # Same status as before the restart: it has held since then, not since now.
                since = self.remembered[1]
            self.status, self.status_since, self.remembered = observation.status, since, None
        self.observation = observation
        self.last_success = self.last_attempt = now
        self.last_error = None
        self.consecutive_errors = 0
        self.render()
        return changed

    def duration(self, now: float) -> float | None:
        """How long the operation took, once final (`now`: the poll that first saw it final): the API's end
        minus start where it gives both, else from the first poll that saw it in progress to `now`; None
        when neither is known (first seen final, without the API's times)."""
        start, end = self.start_time, self.end_time
        if start is not None and end is not None and end >= start:
            return end - start
        return None if self.in_progress_since is None else max(0.0, now - self.in_progress_since)

    def fail(self, code: str, now: float) -> None:
        self.errors[code] = self.errors.get(code, 0) + 1
        self.last_error = code
        self.last_attempt = now
        self.consecutive_errors += 1
        self.render()

    def render(self) -> None:
        # Encoded here, once per change, so a scrape only copies bytes.
        renders = [family.render for family in TASK_FAMILIES]
        if self.current_status_only:
            renders[_STATUS] = current_status
        self.lines = tuple(render(self, self._labels).encode("utf-8") for render in renders)


class TaskStore:
    """Every watched task's state, keyed by (product, region, task_id).

    `on_status` hears of every status change and `on_remove` of every task no longer watched, so a store
    below can keep each status's first-seen time across restarts; `remembered` is what it kept. Likewise
    `on_operation` hears when an operation is first seen in progress or has its duration observed, and
    `operations` is what was kept of those: (first seen in progress, duration observed). `on_duration`
    hears of each finished operation's duration, once per operation.
    """

    def __init__(
        self,
        remembered: Mapping[Key, tuple[str, float]] | None = None,
        on_status: Callable[[Key, str, float], None] | None = None,
        on_remove: Callable[[Key], None] | None = None,
        *,
        operations: Mapping[Key, tuple[float | None, bool]] | None = None,
        on_operation: Callable[[Key, float | None, float | None], None] | None = None,
        on_duration: Callable[[TaskState, Phase, float], None] | None = None,
        current_status_only: bool = False,
    ) -> None:
        self._tasks: dict[Key, TaskState] = {}
        self._current_status_only = current_status_only
        self._novel_statuses: set[tuple[str, str]] = set()
        self._counts: Counter[tuple[str, str]] = Counter()  # (account, product)
        self._remembered = dict(remembered or {})
        self._on_status = on_status
        self._on_remove = on_remove
        self._operations = dict(operations or {})
        self._on_operation = on_operation
        self._on_duration = on_duration

    def __len__(self) -> int:
        return len(self._tasks)

    def __iter__(self) -> Iterator[TaskState]:
        return iter(self._tasks.values())

    def get(self, key: Key) -> TaskState | None:
        return self._tasks.get(key)

    def add(self, task: WatchedTask, listed: Listed | None = None) -> TaskState:
        """The task's state, new or with the task's new settings; `listed`: what a list API said of it."""
        state = self._tasks.get(task.key)
        if state is None:
            remembered = self._remembered.pop(task.key, None)
            state = self._tasks[task.key] = TaskState(
                task, remembered=remembered, listed=listed, current_status_only=self._current_status_only
            )
            state.in_progress_since, state.duration_observed = self._operations.pop(task.key, (None, False))
            self._counts[task.account, task.product] += 1
        elif state.task != task:
            self._counts[state.task.account, task.product] -= 1
            self._counts[task.account, task.product] += 1
            state.retask(task)
        return state

    def remove(self, key: Key) -> None:
        state = self._tasks.pop(key, None)
        if state is not None:
            self._counts[state.task.account, key[0]] -= 1
            if state.duration_observed:  # should the task come back (discovery), it is not observed again
                self._operations[key] = (state.in_progress_since, True)
            if self._on_remove is not None:
                self._on_remove(key)

    def show_current_status_only(self, current: bool) -> None:
        """metrics.status_series changed (a reload): every task rendered again, once."""
        if current != self._current_status_only:
            self._current_status_only = current
            for state in self._tasks.values():
                state.current_status_only = current
                state.render()

    def unclaimed(self, pending: Callable[[Key], bool] = lambda key: False) -> list[Key]:
        """Keys remembered from an earlier run that no watched task took up, forgotten from now on; except
        those `pending` says a task may still take up (discovery has not swept yet)."""
        keys = [key for key in {**self._remembered, **self._operations} if not pending(key)]
        for key in keys:
            self._remembered.pop(key, None)
            if not self._operations.get(key, (None, False))[1]:
                self._operations.pop(key, None)  # those observed stay: never observed twice
        return keys

    def observe(self, state: TaskState, observation: Observation, now: float) -> bool:
        """Records a successful poll of a watched task; True when its status changed."""
        changed = state.observe(observation, now)
        if changed and self._on_status is not None and state.status is not None:
            self._on_status(state.task.key, state.status, state.status_since or now)
        self._time(state, now)
        return changed

    def _time(self, state: TaskState, now: float) -> None:
        """Notes the first poll that sees an operation in progress, and observes its duration at the first
        that sees it final; once per operation."""
        phase = state.phase
        if state.duration_observed or phase is None:
            return
        if phase in IN_PROGRESS_PHASES and state.in_progress_since is None:
            state.in_progress_since = now
            if self._on_operation is not None:
                self._on_operation(state.task.key, now, None)
        elif phase in FINAL_PHASES:
            seconds = state.duration(now)
            state.duration_observed = True
            if self._on_operation is not None:
                self._on_operation(state.task.key, state.in_progress_since, now)
            if seconds is not None and self._on_duration is not None:
                self._on_duration(state, phase, seconds)

    def count_by_product(self) -> dict[str, int]:
        counts = dict.fromkeys(BY_NAME, 0)
        for (_, product), count in self._counts.items():
            counts[product] += count
        return counts

    def count_by_account(self, accounts: Iterable[str]) -> dict[tuple[str, str], int]:
        """Watched tasks per (account, product): every product of every account in `accounts`, and any
        other account a task still names."""
        counts = {(account, product): 0 for account in accounts for product in BY_NAME}
        counts.update((pair, count) for pair, count in self._counts.items() if count)
        return counts

    def first_sighting(self, product: str, status: str) -> bool:
        """True the first time a status outside the documented set is seen for a product."""
        if status in BY_NAME[product].statuses or (product, status) in self._novel_statuses:
            return False
        self._novel_statuses.add((product, status))
        return True
