"""The command line's flags: the daemon's, and those a subcommand adds; and where they point by default."""

from __future__ import annotations

import argparse
import contextlib
import sys
import textwrap
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from exporter import buildinfo
from exporter import log as logsetup
from exporter.catalogue.products import PRODUCTS
from exporter.daemon.core import API_TOKEN_ENV
from exporter.web import httpserver
from exporter.web.app import DEFAULT_TELEMETRY_PATH, telemetry_path_flag

PROG = buildinfo.PROGRAM
EXIT_INVALID = 2
EXIT_UNHEALTHY = 1
DEFAULT_LISTEN_ADDRESS = ":10123"
# The daemon writes where it listens to this file (when the variable is set) and `healthcheck` without
# --web.listen-address reads it: a container's HEALTHCHECK cannot see the flags given to `docker run`.
HEALTHCHECK_FILE_ENV = "TENCENTCLOUD_EXPORTER_HEALTHCHECK_FILE"
# `user:password` for a web config with basic_auth_users, when --healthcheck.username is not given.
HEALTHCHECK_AUTH_ENV = "TENCENTCLOUD_EXPORTER_HEALTHCHECK_AUTH"
HEALTHY_PATH = "/-/healthy"
DEFAULT_HEALTHCHECK_TIMEOUT = 4.0  # below the image's HEALTHCHECK --timeout=5s, so the reason gets printed
KEEPALIVE_TIMEOUT = 120.0  # seconds; longer than any usual scrape interval
DEFAULT_STORAGE_PATH = Path("data/tencentcloud-task-exporter.db")
# Where releases before the SQLite store kept registered tasks; migrated when found.
LEGACY_STATE_FILE = Path("data/registered-tasks.json")


def parse_listen_address(value: str) -> tuple[str | None, int]:
    """`HOST:PORT`, `:PORT` (every interface) or `[IPV6]:PORT`; port 0 lets the OS pick one."""
    host, sep, port_text = value.rpartition(":")
    if not sep or not port_text.isdigit() or int(port_text) > 65535:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {value!r}")
    host = host.removeprefix("[").removesuffix("]")
    return (host or None), int(port_text)


class VersionAction(argparse.Action):
    """--version: the Prometheus-style version text (buildinfo.version_text), read only when asked for."""

    def __init__(self, option_strings: Sequence[str], dest: str = argparse.SUPPRESS, **kwargs: Any) -> None:
        kwargs.setdefault("help", "print the version, revision and build information, and exit")
        super().__init__(option_strings, dest=dest, default=argparse.SUPPRESS, nargs=0, **kwargs)

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: object,
        option_string: str | None = None,
    ) -> None:
        sys.stdout.write(buildinfo.version_text())
        parser.exit()


class _OwnFlagsFirst(argparse.ArgumentParser):
    """A subcommand's parser: its own flags first in the help (usage line included), then the daemon's,
    which it accepts so that the daemon's command line works after the word."""

    daemon_flags: argparse._ArgumentGroup | None = None

    def format_usage(self) -> str:
        with self._own_first():
            return super().format_usage()

    def format_help(self) -> str:
        with self._own_first():
            return super().format_help()

    @contextlib.contextmanager
    def _own_first(self) -> Iterator[None]:
        daemon = self.daemon_flags
        if daemon is None or self.usage is not None:
            yield
            return
        groups, theirs = self._action_groups, daemon._group_actions
        own = [a for a in self._actions if a not in theirs]
        formatter = self._get_formatter()
        formatter.add_usage(None, own, [], prefix="usage: ")  # wrapped as argparse wraps it
        listed = any(a.help is not argparse.SUPPRESS for a in theirs)
        usage = formatter.format_help().strip().removeprefix("usage: ")
        self.usage = usage + (" [DAEMON FLAGS]" if listed else "")
        self._action_groups = [g for g in groups if g is not daemon] + [daemon]
        try:
            yield
        finally:
            self._action_groups, self.usage = groups, None


def _subcommand_lines(summaries: Mapping[str, str]) -> str:
    """One line per subcommand (its summary wrapped under itself), for the main help's epilog."""
    width = max(len(name) for name in summaries) + 4
    lines = ["subcommands (the first word; SUBCOMMAND --help shows its own flags):"]
    for name, summary in summaries.items():
        wrapped = textwrap.wrap(summary, _HELP_WIDTH - width) or [""]
        lines.append(f"  {name.ljust(width - 2)}{wrapped[0]}")
        lines.extend(" " * width + more for more in wrapped[1:])
    return "\n".join(lines)


_HELP_WIDTH = 79


def build_parser(
    subcommand: str | None = None, subcommands: Mapping[str, str] | None = None
) -> argparse.ArgumentParser:
    """The daemon's flags; a subcommand's parser has them all too (the healthcheck reads the daemon's
    --web.* flags; the others are accepted, so the daemon's command line works after the word), listed
    after its own. `subcommands`: each subcommand's one-line summary, for the help text."""
    summaries = dict(subcommands or {})
    if subcommand is None:
        description = (
            "Prometheus exporter for Tencent Cloud database async operations "
            f"({', '.join(s.title for s in PRODUCTS)})."
        )
        parser = argparse.ArgumentParser(
            prog=PROG,
            description=textwrap.fill(description, _HELP_WIDTH),
            # Kept as written: one line per subcommand (the default formatter joins lines into a paragraph).
            epilog=_subcommand_lines(summaries) if summaries else None,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        _add_daemon_flags(parser)
        return parser
    sub = _OwnFlagsFirst(prog=f"{PROG} {subcommand}", description=summaries.get(subcommand, ""))
    if subcommand == "healthcheck":
        _add_healthcheck_flags(sub)
    daemon = sub.add_argument_group(
        "the daemon's flags", "accepted after the word, so the daemon's own command line works"
    )
    sub.daemon_flags = daemon
    _add_daemon_flags(daemon)
    return sub


def _add_daemon_flags(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    parser.add_argument("--config.file", dest="config_file", default="config.yaml", help="YAML config file")
    parser.add_argument(
        "--web.listen-address",
        dest="listen",
        action="append",
        default=None,
        type=parse_listen_address,
        metavar="HOST:PORT",
        help=f"address to serve on, repeatable: every one is served (default {DEFAULT_LISTEN_ADDRESS}; "
        "port 0 picks a free port)",
    )
    parser.add_argument(
        "--web.systemd-socket",
        dest="systemd_socket",
        action="store_true",
        help="serve on the sockets systemd passes (socket activation: LISTEN_FDS, LISTEN_PID) instead of "
        "--web.listen-address (Linux)",
    )
    parser.add_argument(
        "--web.telemetry-path",
        dest="telemetry_path",
        default=DEFAULT_TELEMETRY_PATH,
        type=telemetry_path_flag,
        metavar="PATH",
        help=f"path to serve the metrics on (default {DEFAULT_TELEMETRY_PATH}; nothing else serves them)",
    )
    parser.add_argument(
        "--web.config.file",
        dest="web_config_file",
        default="",
        help="TLS, mTLS and basic auth for every endpoint (Prometheus exporter-toolkit format)",
    )
    parser.add_argument(
        "--web.read-header-timeout",
        dest="read_header_timeout",
        metavar="DURATION",
        default=httpserver.DEFAULT_READ_HEADER_TIMEOUT,
        type=httpserver.read_header_timeout_flag,
        help="close a connection whose request headers are not complete within this time after its first "
        "byte (after the accept, TLS handshake included, for the first request) (default 10s)",
    )
    parser.add_argument(
        "--web.max-connections",
        dest="max_connections",
        metavar="N",
        default=httpserver.DEFAULT_MAX_CONNECTIONS,
        type=httpserver.max_connections_flag,
        help="close new connections at once beyond this many open ones (default 512; lowered to leave "
        f"{httpserver.FD_RESERVE} file descriptors free under the open-files limit)",
    )
    parser.add_argument(
        "--log.level",
        dest="log_level",
        default="info",
        choices=logsetup.LEVELS,
        help="only log events at this level or above (default info; warning is an alias of warn)",
    )
    parser.add_argument("--log.format", dest="log_format", default="logfmt", choices=("logfmt", "json"))
    parser.add_argument(
        "--check-config", action="store_true", help="validate the config file and exit (0 valid, 2 invalid)"
    )
    parser.add_argument(
        "--demo",
        action="store_true",
        help="no config or credentials needed: poll a built-in simulator of every product with demo tasks",
    )
    parser.add_argument(
        "--demo.speed",
        dest="demo_speed",
        type=float,
        default=1.0,
        help="with --demo, run the demo timelines and poll intervals this many times faster",
    )
    parser.add_argument("--shard.index", dest="shard_index", type=int, default=0, help="this replica's shard")
    parser.add_argument(
        "--shard.count",
        dest="shard_count",
        type=int,
        default=1,
        help="replicas the watched tasks are split across by a stable hash; each takes rate_limit/count",
    )
    parser.add_argument(
        "--tasks.api-token-file",
        dest="api_token_file",
        type=Path,
        help=f"file holding the bearer token that enables the task API (or set {API_TOKEN_ENV})",
    )
    parser.add_argument(
        "--storage.path",
        dest="storage_path",
        type=Path,
        default=None,
        help="SQLite file keeping registered tasks and status first-seen times across restarts "
        f"(default {DEFAULT_STORAGE_PATH}; with --demo, nothing is kept unless this is given)",
    )
    parser.add_argument(
        "--tasks.state-file",
        dest="state_file",
        type=Path,
        default=None,
        help="deprecated: the v1 JSON state file, migrated into --storage.path on start",
    )
    parser.add_argument(
        "--web.enable-lifecycle",
        dest="enable_lifecycle",
        action="store_true",
        help="allow POST /-/reload (SIGHUP reloads either way)",
    )
    parser.add_argument(
        "--tasks.retention",
        dest="retention",
        default="24h",
        help="how long a registered task is kept once it reached a final state (default 24h)",
    )
    add_version_flag(parser)


def add_version_flag(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """--version, printing what Prometheus programs print: the daemon's, and every subcommand's."""
    parser.add_argument("--version", action=VersionAction, help="print the version and build, then exit")


def _add_healthcheck_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "healthcheck",
        f"GET {HEALTHY_PATH} on the first --web.listen-address (:PORT and 0.0.0.0 ask 127.0.0.1, [::] asks "
        f"::1), over TLS when --web.config.file has tls_server_config; exit 0 on 200, 1 otherwise. Without "
        f"--web.listen-address, the address the daemon wrote to ${HEALTHCHECK_FILE_ENV} (when set) is used.",
    )
    group.add_argument(
        "--healthcheck.timeout",
        dest="healthcheck_timeout",
        metavar="DURATION",
        default=DEFAULT_HEALTHCHECK_TIMEOUT,
        type=httpserver.read_header_timeout_flag,
        help="give up after this long, for each of connecting, the TLS handshake and the answer (default 4s)",
    )
    group.add_argument(
        "--healthcheck.username",
        dest="healthcheck_username",
        default="",
        help=f"basic auth user, when the web config has basic_auth_users (or set {HEALTHCHECK_AUTH_ENV} to "
        "user:password)",
    )
    group.add_argument(
        "--healthcheck.password-file",
        dest="healthcheck_password_file",
        default="",
        metavar="PATH",
        help="file holding that user's password (surrounding whitespace ignored)",
    )
    group.add_argument(
        "--healthcheck.cert-file",
        dest="healthcheck_cert_file",
        default="",
        metavar="PATH",
        help="client certificate to present when the web config requires one (default: the server's own "
        "certificate and key files)",
    )
    group.add_argument(
        "--healthcheck.key-file",
        dest="healthcheck_key_file",
        default="",
        metavar="PATH",
        help="private key of --healthcheck.cert-file",
    )
