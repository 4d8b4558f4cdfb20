"""One outcome vocabulary for the pages: every status of every product as one of six phases, as a pod's phase
is for Kubernetes, so the board colours, counts and filters them the same for every product.

Replaced by the catalogue's own phase at merge (issue 20 item 1 adds a phase for every status there): until
then `phase_of` computes it from what the catalogue has today, and it is the only place the web wing does.
"""

from __future__ import annotations

from exporter.catalogue.products import BY_NAME, NOT_FOUND, UNKNOWN
from exporter.exposition.state import TaskState

PENDING, RUNNING, SUCCEEDED, FAILED, UNKNOWN_PHASE, NOT_FOUND_PHASE = (
    "pending",
    "running",
    "succeeded",
    "failed",
    "unknown",
    "not_found",
)
# In the order a person on call reads them: what needs looking at first.
PHASES: tuple[str, ...] = (FAILED, NOT_FOUND_PHASE, UNKNOWN_PHASE, RUNNING, PENDING, SUCCEEDED)
# Documented statuses meaning "accepted, not started yet" (CDB and MongoDB `initial`, Redis `preparing`).
_NOT_STARTED = frozenset({"initial", "preparing"})
# Documented statuses meaning "the API does not say" (CDB `undefined`; `unknown` is a null Status).
_NO_STATUS = frozenset({UNKNOWN, "undefined"})


def phase_of(state: TaskState) -> str:
    """The task's phase: `not_found` while the API says the ID does not exist (unless it was seen final),
    `unknown` before any status or for a status the catalogue does not know, else from the status."""
    # TODO(merge): replace the body with the catalogue's phase of `state.status` (issue 20 item 1).
    product = BY_NAME[state.task.product]
    status = state.status
    final = status is not None and status in product.final_statuses
    error = state.last_error
    if not final and error is not None and (error == NOT_FOUND or error in product.not_found_codes):
        return NOT_FOUND_PHASE
    if status is None or status in _NO_STATUS or status not in product.statuses:
        return UNKNOWN_PHASE
    if status == product.success_status:
        return SUCCEEDED
    if final:
        return FAILED
    return PENDING if status in _NOT_STARTED else RUNNING
