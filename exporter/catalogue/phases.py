"""The one outcome vocabulary every product's statuses map onto, like Kubernetes' pod phase.

Each product speaks its own status words (`succeed` for Redis, `fail` for PostgreSQL, MongoDB's final
`paused`); its catalogue entry maps every one of them onto a phase, so alerts, dashboards and `wait` read
one small fixed set instead of every product's words.
"""

from __future__ import annotations

from enum import StrEnum


class Phase(StrEnum):
    PENDING = "pending"  # accepted, not started (CDB and MongoDB `initial`, Redis `preparing`)
    RUNNING = "running"  # every other status that is not final
    # In progress by design, with no end of its own: a DTS sync job replicating (`running`) stays so for
    # months when healthy. Not final (it is still polled, and its failure shows), and never "stuck" (no
    # alert or page calls a long ongoing status late, as they do a long pending or running one).
    ONGOING = "ongoing"
    SUCCEEDED = "succeeded"  # the product's one success status
    FAILED = "failed"  # every other final status
    UNKNOWN = "unknown"  # a null status, `unknown`, or a status the catalogue does not know
    NOT_FOUND = "not_found"  # the API says no operation has this ID: not a status, an answer


PHASES: tuple[Phase, ...] = tuple(Phase)
FINAL_PHASES = frozenset({Phase.SUCCEEDED, Phase.FAILED})
IN_PROGRESS_PHASES = frozenset({Phase.PENDING, Phase.RUNNING, Phase.ONGOING})
# What a status can map to: not_found is the API's answer about the ID, never a status word.
STATUS_PHASES = frozenset(PHASES) - {Phase.NOT_FOUND}
