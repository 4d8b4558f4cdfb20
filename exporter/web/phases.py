"""The phases as the pages show them: the catalogue's phase of each task (exporter.catalogue.phases, read
through TaskState.phase, the same as `tencentcloud_task_phase`), with `unknown` before any answer, in the
order a person on call reads them.
"""

from __future__ import annotations

from exporter.catalogue.phases import Phase
from exporter.exposition.state import TaskState

PENDING, RUNNING, ONGOING, SUCCEEDED, FAILED, UNKNOWN_PHASE, NOT_FOUND_PHASE = (
    Phase.PENDING.value,
    Phase.RUNNING.value,
    Phase.ONGOING.value,
    Phase.SUCCEEDED.value,
    Phase.FAILED.value,
    Phase.UNKNOWN.value,
    Phase.NOT_FOUND.value,
)
# In the order a person on call reads them: what needs looking at first.
PHASES: tuple[str, ...] = (FAILED, NOT_FOUND_PHASE, UNKNOWN_PHASE, RUNNING, PENDING, ONGOING, SUCCEEDED)


def phase_of(state: TaskState) -> str:
    """The task's phase, `unknown` before any answer."""
    phase = state.phase
    return UNKNOWN_PHASE if phase is None else phase.value
