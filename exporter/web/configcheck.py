"""The web config's error type and value checker, shared by `exporter.web.config` and `exporter.web.tls`.

They live apart from both so the TLS parsing in webtls can use them while webconfig imports webtls.
"""

from __future__ import annotations

from pathlib import Path

from exporter.config.validation import Checker, ProblemsError, describe


class WebConfigError(ProblemsError):
    """Raised with every problem found in a web configuration; `str()` gives one problem per line."""


class WebChecker(Checker):
    """The web config's own kinds of values, on top of the shared key-path bookkeeping."""

    def secret(self, value: object, path: str) -> str:
        """Like string(), but an error never shows the value."""
        if value is None:
            return ""
        if not isinstance(value, str):
            self.error(path, f"expected a string, got a {value_kind(value)} (value not shown)")
            return ""
        return value

    def boolean(self, value: object, path: str, default: bool) -> bool:
        if value is None:
            return default
        if not isinstance(value, bool):
            self.error(path, f"expected true or false, got {describe(value)}")
            return default
        return value

    def strings(self, value: object, path: str) -> list[str]:
        if value is None:
            return []
        if not isinstance(value, list):
            self.error(path, f"expected a list of strings, got {describe(value)}")
            return []
        result = []
        for index, item in enumerate(value):
            if isinstance(item, str) and item:
                result.append(item)
            else:
                self.error(f"{path}[{index}]", f"expected a non-empty string, got {describe(item)}")
        return result

    def file(self, value: object, path: str, base: Path) -> Path | None:
        text = self.string(value, path)
        if not text:
            return None
        resolved = Path(text) if Path(text).is_absolute() else base / text
        if not resolved.is_file():
            shown = str(resolved) if resolved == Path(text) else f"{resolved} (relative to {base})"
            self.error(path, f"file not found: {shown}")
            return None
        return resolved


def value_kind(value: object) -> str:
    """What a value is, for an error that must not show it."""
    if isinstance(value, dict):
        return "mapping"
    if isinstance(value, list):
        return "list"
    return type(value).__name__
