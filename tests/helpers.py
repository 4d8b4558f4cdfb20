"""Shared test helpers: real binaries (skip on a laptop, fail in CI), parsed expositions."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable

import pytest
from prometheus_client.parser import text_string_to_metric_families


def require_binary(name: str) -> str:
    """Path of a binary a test runs for real; skips locally when missing, but fails when CI=true."""
    path = shutil.which(name)
    if path is None:
        message = f"{name} is not installed (Debian package: prometheus); .ci/run installs it"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return path


class Samples:
    """A parsed Prometheus text exposition, queried like registry.get_sample_value()."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.samples: list[tuple[str, dict[str, str], float]] = [
            (s.name, dict(s.labels), s.value)
            for family in text_string_to_metric_families(text)
            for s in family.samples
        ]

    def get(self, name: str, **labels: str) -> float | None:
        for sample_name, sample_labels, value in self.samples:
            if sample_name == name and all(sample_labels.get(k) == v for k, v in labels.items()):
                return value
        return None

    def all(self, name: str, **labels: str) -> list[tuple[dict[str, str], float]]:
        return [
            (sample_labels, value)
            for sample_name, sample_labels, value in self.samples
            if sample_name == name and all(sample_labels.get(k) == v for k, v in labels.items())
        ]

    def status(self, service: str, task_id: str) -> str | None:
        """The status whose state-set series is 1, or None before the first successful poll."""
        current = [
            labels["status"]
            for labels, value in self.all("tencentcloud_task_status", service=service, task_id=task_id)
            if value == 1
        ]
        assert len(current) <= 1, f"state set with several 1s: {current}"
        return current[0] if current else None

    def names(self) -> Iterable[str]:
        return {name for name, _, _ in self.samples}
