"""What every YAML file of the exporter shares: reading it, and collecting problems with their key paths.

Each problem reads `file: key.path: what was expected`, so an operator fixes a broken file in one round
trip; unknown keys are problems too, because a typo must not silently fall back to a default.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

import yaml


class ProblemsError(Exception):
    """Every problem found in one file; `str()` gives one problem per line."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


# No file or request of the exporter needs more; deeper input is refused before any recursive walk sees it.
MAX_NESTING = 32


def nesting(value: object) -> int:
    """How deeply lists and mappings nest in a parsed document (iterative: safe on any depth)."""
    deepest, stack = 0, [(value, 0)]
    while stack:
        item, depth = stack.pop()
        deepest = max(deepest, depth)
        if isinstance(item, dict):
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item)
    return deepest


def is_utf8(text: str) -> bool:
    """False for text that cannot be written as UTF-8 (lone surrogates, which JSON and YAML escapes and
    surrogate-escaped environment variables can produce): such text breaks the exposition and the store."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def non_utf8_paths(value: object, path: str = "") -> list[str]:
    """Key paths of every key or string value in a parsed document that is not valid UTF-8 text."""
    found: list[str] = []
    if isinstance(value, str):
        if not is_utf8(value):
            found.append(path)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found.extend(non_utf8_paths(item, f"{path}[{index}]"))
    elif isinstance(value, dict):
        for key, item in value.items():
            where = f"{path}.{key_text(key)}" if path else key_text(key)
            if isinstance(key, str) and not is_utf8(key):
                found.append(where)
            found.extend(non_utf8_paths(item, where))
    return found


def shown(value: object, limit: int = 80) -> str:
    """repr() of a value for an error message, cut short: a megabyte of input must not become the message."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 4] + "...'"


def key_text(key: object) -> str:
    """A mapping key as it appears in a key path: as written when it is short, printable text, else quoted
    (a key may hold a newline, a surrogate or a megabyte of text)."""
    if isinstance(key, str) and key.isprintable() and len(key) <= 64:
        return key
    return shown(key, 40)


def describe(value: object) -> str:
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return f"a boolean ({value})"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return f"{type(value).__name__} {shown(value)}"


class Checker:
    """Collects problems (and warnings) with their key paths while walking a parsed document."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.problems: list[str] = []
        self.warnings: list[str] = []
        # (mapping's path, allowed key) for each unknown key that looks like a misspelling of an allowed key
        # the mapping lacks: what follows only from that key's absence is not reported again.
        self._misspelt: set[tuple[str, str]] = set()

    def misspelt(self, path: str, key: str) -> bool:
        """Whether `key` of the mapping at `path` is absent because an unknown key there looks like it
        (`regoin:` for `region:`): a problem that only follows from its absence is then not reported, so
        one typo is one problem."""
        return (path, key) in self._misspelt

    def error(self, path: str, message: str) -> None:
        self.problems.append(f"{self.source}: {path or '<top level>'}: {message}")

    def warn(self, path: str, message: str) -> None:
        self.warnings.append(f"{self.source}: {path or '<top level>'}: {message}")

    def utf8(self, document: object) -> None:
        """Records every key or string that is not valid UTF-8 text (never quoting it)."""
        for path in non_utf8_paths(document):
            self.error(path, "expected UTF-8 text, got a string with an unpaired surrogate")

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
                where = f"{path}.{key_text(key)}" if path else key_text(key)
                absent = sorted(name for name in allowed if name not in value)
                guess = difflib.get_close_matches(key, absent, 1, 0.75) if isinstance(key, str) else []
                hint = ""
                if guess:
                    self._misspelt.add((path, guess[0]))
                    hint = f"did you mean {guess[0]}? "
                self.error(where, f"unknown key ({hint}expected one of: {', '.join(sorted(allowed))})")
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
        document = yaml.safe_load(text)
    except RecursionError:
        raise error([f"{source}: invalid YAML: nested too deeply"]) from None
    except yaml.YAMLError as exc:
        # Only the position and the parser's complaint: yaml's full message quotes the offending text, which
        # may be a secret.
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        problem = getattr(exc, "problem", None) or "cannot parse"
        raise error([f"{source}: {where}invalid YAML: {problem}"]) from None
    except (ValueError, OverflowError) as exc:
        # A scalar the YAML grammar accepts but its type cannot hold (a timestamp like 0000-0-0 0:00:00);
        # the value itself is not quoted, as it may be a secret.
        raise error([f"{source}: invalid YAML: a value cannot be read ({type(exc).__name__})"]) from None
    if nesting(document) > MAX_NESTING:
        raise error([f"{source}: nested deeper than {MAX_NESTING} levels"])
    return document
