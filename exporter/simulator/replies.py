"""What the simulator answers an API request with, as it goes out: the reply, an error answer counted where it
belongs, and the injected faults that change the reply itself (a body cut in half, a latency)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Final

from exporter.simulator.errors import ApiError, error_body
from exporter.simulator.scenario import Faults
from exporter.simulator.stats import AccountStats, ActionStats, count

# Exactly this: the SDKs read `Response.Error` only when the Content-Type is `application/json` (or
# `text/plain`); with `; charset=utf-8` appended they silently return an empty model instead of raising.
JSON: Final = "application/json"


@dataclass(frozen=True)
class Reply:
    status: int = 200
    body: bytes = b""
    content_type: str = JSON
    latency: float = 0.0


def refused(error: ApiError, stats: ActionStats, account: AccountStats | None) -> Reply:
    """An error answer, counted for every caller and for the account that asked (when it is known)."""
    count(stats.errors, error.code)
    if account is not None:
        count(account.errors, error.code)
    return Reply(body=error_body(error))


def delivered(reply: Reply, faults: Faults, stats: ActionStats, latency: float) -> Reply:
    """The reply as it goes out: cut in half when a malformed answer is injected, after `latency`."""
    if faults.malformed and reply.content_type == JSON:
        count(stats.faults, "malformed")
        reply = dataclasses.replace(reply, body=reply.body[: len(reply.body) // 2])
    return dataclasses.replace(reply, latency=latency)
