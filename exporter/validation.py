"""What every YAML file of the exporter shares: reading it, and collecting problems with their key paths.

Each problem reads `file: key.path: what was expected`, so an operator fixes a broken file in one round
trip; unknown keys are problems too, because a typo must not silently fall back to a default.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml


class ProblemsError(Exception):
    """Every problem found in one file; `str()` gives one problem per line."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


def describe(value: object) -> str:
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return f"a boolean ({value})"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return f"{type(value).__name__} {value!r}"


class Checker:
    """Collects problems (and warnings) with their key paths while walking a parsed document."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.problems: list[str] = []
        self.warnings: list[str] = []

    def error(self, path: str, message: str) -> None:
        self.problems.append(f"{self.source}: {path or '<top level>'}: {message}")

    def warn(self, path: str, message: str) -> None:
        self.warnings.append(f"{self.source}: {path or '<top level>'}: {message}")

    def mapping(self, value: object, path: str, allowed: set[str] | None = None) -> dict[Any, Any]:
        """The mapping's allowed keys (every key when `allowed` is None); {} for null or a non-mapping."""
        if value is None:
            return {}
        if not isinstance(value, dict):
            self.error(path, f"expected a mapping, got {describe(value)}")
            return {}
        if allowed is None:
            return value
        for key in value:
            if key not in allowed:
                where = f"{path}.{key}" if path else str(key)
                self.error(where, f"unknown key (expected one of: {', '.join(sorted(allowed))})")
        return {k: v for k, v in value.items() if k in allowed}

    def string(self, value: object, path: str, default: str = "") -> str:
        if value is None:
            return default
        if not isinstance(value, str):
            self.error(path, f"expected a string, got {describe(value)}")
            return default
        return value


def read_yaml(path: str | Path, error: type[ProblemsError]) -> object:
    """The parsed document; raises `error` naming the file (and line) when it cannot be read or parsed."""
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise error([f"{source}: file not found"]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise error([f"{source}: cannot read file: {exc}"]) from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        # Only the position and the parser's complaint: yaml's full message quotes the offending text, which
        # may be a secret.
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        problem = getattr(exc, "problem", None) or "cannot parse"
        raise error([f"{source}: {where}invalid YAML: {problem}"]) from None
