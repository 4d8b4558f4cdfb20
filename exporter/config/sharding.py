"""Partitioning watched tasks across replicas by a stable hash of (product, task id).

The hash must not depend on the process (Python's hash() is salted per run) nor on the region, so every
replica, and every restart, agrees on which replica owns a task.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass


@dataclass(frozen=True)
class Shard:
    index: int = 0
    count: int = 1

    def __post_init__(self) -> None:
        if self.count < 1 or not 0 <= self.index < self.count:
            raise ValueError(f"shard index must be in [0, {self.count}), got {self.index}")

    def owner(self, product: str, task_id: str) -> int:
        digest = hashlib.sha256(f"{product}\x00{task_id}".encode()).digest()
        return int.from_bytes(digest[:8], "big") % self.count

    def owns(self, product: str, task_id: str) -> bool:
        return self.count == 1 or self.owner(product, task_id) == self.index
