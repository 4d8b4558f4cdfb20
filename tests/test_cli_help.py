"""The help texts: a subcommand's own flags come first, and the main help lists subcommands one per line."""

from __future__ import annotations

import subprocess
import sys

from exporter.cli.main import SUBCOMMANDS


def help_text(*words: str) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "exporter", *words, "--help"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_healthcheck_help_shows_its_own_flags_before_the_daemons() -> None:
    """Before: the usage line and the options listed the daemon's 20 flags, then the healthcheck's five."""
    text = help_text("healthcheck")
    usage = text[: text.index("\n\n")]
    assert "--healthcheck.timeout" in usage
    assert usage.rstrip().endswith("[DAEMON FLAGS]")
    assert "--web.listen-address" not in usage
    own = text.index("--healthcheck.timeout DURATION\n")
    theirs = text.index("the daemon's flags:")
    assert own < theirs < text.index("--web.listen-address HOST:PORT")
    assert text.index("--config.file") > theirs  # every daemon flag after the heading, none before


def test_register_help_lists_its_own_flags_first() -> None:
    text = help_text("register")
    assert text.index("--url URL") < text.index("--config.file")
    assert "--web.listen-address" not in text  # accepted, not listed


def test_the_main_help_lists_one_subcommand_per_line() -> None:
    """Before: every subcommand and its summary in one reflowed paragraph."""
    lines = help_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("subcommands"))
    listed = [line.split()[0] for line in lines[start + 1 :] if line.startswith("  ") and line[2] != " "]
    assert listed == list(SUBCOMMANDS)
    assert all(len(line) <= 79 for line in lines[start:]), lines[start:]
