"""Command line: parse flags, load and check the config, then serve until SIGINT/SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import ssl
import sys
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import prometheus_client
from aiohttp import web

from exporter import __version__, httpserver, looperrors
from exporter import log as logsetup
from exporter.config import Config, ConfigError, load_config, parse_duration
from exporter.credentials import CredentialsError
from exporter.daemon import API_TOKEN_ENV, Daemon, Options, ReloadError
from exporter.services import SERVICES
from exporter.sharding import Shard
from exporter.store import StoreError
from exporter.web import TASK_API_PREFIX, create_app
from exporter.webconfig import WebConfig, WebConfigError, load_web_config, middlewares, ssl_context, summary

log = logging.getLogger("exporter")

EXIT_INVALID = 2
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tencentcloud-task-exporter",
        description="Prometheus exporter for Tencent Cloud database async operations "
        f"({', '.join(s.title for s in SERVICES)}).",
    )
    parser.add_argument("--config.file", dest="config_file", default="config.yaml", help="YAML config file")
    parser.add_argument(
        "--web.listen-address",
        dest="listen",
        default=":10123",
        type=parse_listen_address,
        help="address to serve /metrics on (default :10123; port 0 picks a free port)",
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
    parser.add_argument("--log.level", dest="log_level", default="info", choices=logsetup.LEVELS)
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
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    return parser


@dataclass(frozen=True)
class Listener:
    address: tuple[str | None, int]
    web_config: WebConfig
    tls: ssl.SSLContext | None
    read_header_timeout: float = httpserver.DEFAULT_READ_HEADER_TIMEOUT
    max_connections: int = httpserver.DEFAULT_MAX_CONNECTIONS


async def _serve_config(config: Config, options: Options, listener: Listener) -> None:
    # The daemon opens the credential chain itself as it starts, and closes whatever it opened.
    await _serve(Daemon(config, None, options), listener)


async def _serve(daemon: Daemon, listener: Listener) -> None:
    app = create_app(daemon, middlewares(listener.web_config, bearer_paths=(TASK_API_PREFIX,)))
    # Before anything opens a socket: the polls and the server share the process's descriptors.
    httpserver.raise_open_files_limit()
    # Repeated loop errors (accept() failing, say) are logged once per kind and interval, not each time.
    looperrors.install_loop_exception_handler(asyncio.get_running_loop())
    # shutdown_timeout bounds how long in-flight requests may delay exit after SIGTERM. An idle keep-alive
    # connection is closed after KEEPALIVE_TIMEOUT (aiohttp's default is an hour), so idle clients cannot
    # hold --web.max-connections; scrapers reconnect at their next interval.
    runner = web.AppRunner(
        app, handle_signals=False, shutdown_timeout=2.0, keepalive_timeout=KEEPALIVE_TIMEOUT
    )
    await runner.setup()
    try:
        listen = listener.address
        site = httpserver.GuardedSite(
            runner,
            listen[0],
            listen[1],
            ssl_context=listener.tls,
            read_header_timeout=listener.read_header_timeout,
            max_connections=listener.max_connections,
            registry=daemon.metrics.registry,
        )
        await site.start()
        for address in runner.addresses:
            host, port = address[0], address[1]
            shown = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
            log.info("listening", extra={"fields": {"address": shown, "version": __version__}})
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        reloads: set[asyncio.Task[None]] = set()

        def on_sighup() -> None:
            if stop.is_set():
                log.info("SIGHUP ignored: shutting down")
                return
            reload = asyncio.create_task(_reload_logged(daemon))
            reloads.add(reload)
            reload.add_done_callback(reloads.discard)

        def sighup(signum: int, frame: object) -> None:
            # A process-level handler, not loop.add_signal_handler: closing the loop would put back the
            # default action (terminate), so a SIGHUP late in shutdown would kill the process.
            with contextlib.suppress(RuntimeError):  # the loop has closed: the process is exiting
                loop.call_soon_threadsafe(on_sighup)

        signal.signal(signal.SIGHUP, sighup)
        await stop.wait()
        # Ignored from here to the exit: the interpreter's own finalisation puts back the default action
        # (terminate) of any signal that has a Python handler, SIG_IGN excepted.
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        log.info("shutting down")
    finally:
        await runner.cleanup()


async def _reload_logged(daemon: Daemon) -> None:
    # Daemon.reload logs the outcome and keeps the old config on failure; nothing more to do here.
    with contextlib.suppress(ReloadError):
        await daemon.reload()


async def _serve_demo(speed: float, options: Options, listener: Listener) -> None:
    # Imported here: the simulator is only needed in demo mode.
    from exporter import demo
    from exporter.simulator import Simulator

    simulator = Simulator(list(demo.DEMO_ACCOUNTS.values()), speed=speed)
    for task in demo.demo_tasks():
        simulator.add_task(task)
    url = await simulator.start()
    try:
        log.info("demo mode: polling the built-in simulator", extra={"fields": {"simulator": url}})
        # Each demo account's made-up keys come from the demo config, as a real config's would.
        await _serve(Daemon(demo.demo_config(url, speed), None, options, env={}), listener)
    finally:
        await simulator.stop()


def _options(args: argparse.Namespace, config_path: Path | None) -> Options:
    """Checked command-line settings; raises ValueError with the flag's name."""
    try:
        shard = Shard(args.shard_index, args.shard_count)
    except ValueError as exc:
        raise ValueError(f"--shard.index/--shard.count: {exc}") from None
    retention = parse_duration(args.retention)
    if retention is None or retention <= 0:
        raise ValueError(f"--tasks.retention: expected a duration like 24h, got {args.retention!r}")
    storage: Path | None = args.storage_path
    legacy: Path | None = None
    if storage is None and not args.demo:
        storage, legacy = DEFAULT_STORAGE_PATH, LEGACY_STATE_FILE
    if args.state_file is not None:
        if args.storage_path is None:
            # Beside the old file, so the store lands in the same (mounted, backed-up) directory.
            storage = args.state_file.with_name(DEFAULT_STORAGE_PATH.name)
        log.warning(
            "--tasks.state-file is deprecated and will be removed; its JSON file is migrated into "
            "--storage.path (a SQLite file)",
            extra={"fields": {"state_file": str(args.state_file), "storage_path": str(storage)}},
        )
        legacy = args.state_file
    return Options(
        config_path,
        shard,
        storage,
        retention,
        args.api_token_file,
        enable_lifecycle=args.enable_lifecycle,
        legacy_state_file=legacy,
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logsetup.setup(args.log_level, args.log_format)
    # Process-wide switch of the client library: `*_created` series double the per-API series for a value
    # nobody queries (counters here start with the process, which process_start_time_seconds says).
    prometheus_client.disable_created_metrics()  # type: ignore[no-untyped-call]
    try:
        options = _options(args, None if args.demo else Path(args.config_file))
        if args.demo and args.demo_speed <= 0:
            raise ValueError(f"--demo.speed: expected a positive number, got {args.demo_speed}")
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_INVALID
    try:
        web_config = load_web_config(args.web_config_file) if args.web_config_file else WebConfig()
        listener = Listener(
            args.listen, web_config, ssl_context(web_config), args.read_header_timeout, args.max_connections
        )
    except WebConfigError as exc:
        print(f"invalid web configuration ({len(exc.problems)} problem(s)):", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        return EXIT_INVALID
    for warning in web_config.warnings:
        log.warning(warning)
    if args.web_config_file:
        log.info("web config loaded", extra={"fields": summary(web_config)})
    if args.demo:
        return _run(_serve_demo(args.demo_speed, options, listener))
    try:
        config = load_config(args.config_file)
    except ConfigError as exc:
        print(f"invalid configuration ({len(exc.problems)} problem(s)):", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        return EXIT_INVALID
    if args.check_config:
        print(f"{args.config_file}: valid, {len(config.tasks)} task(s) watched")
        if args.web_config_file:
            print(f"{args.web_config_file}: valid")
        return 0
    return _run(_serve_config(config, options, listener))


def _run(main_coroutine: Coroutine[Any, Any, None]) -> int:
    """Runs the daemon; problems with its inputs found while starting exit 2 with the reason."""
    try:
        asyncio.run(main_coroutine)
    except (CredentialsError, StoreError, ReloadError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_INVALID
    return 0
