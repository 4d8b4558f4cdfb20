"""Command line: parse flags, load and check the config, then serve until SIGINT/SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import ssl
import sys
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import prometheus_client
from aiohttp import web

from exporter import __version__
from exporter import log as logsetup
from exporter.config import Config, ConfigError, load_config, parse_duration
from exporter.credentials import CredentialsError, StaticProvider, open_provider
from exporter.daemon import API_TOKEN_ENV, Daemon, Options, ReloadError
from exporter.registry import StateFileError
from exporter.sharding import Shard
from exporter.web import create_app
from exporter.webconfig import WebConfig, WebConfigError, load_web_config, middlewares, ssl_context, summary

log = logging.getLogger("exporter")

EXIT_INVALID = 2


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
        "(MariaDB DescribeFlow, CDB DescribeAsyncRequestInfo).",
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
    parser.add_argument("--log.level", dest="log_level", default="info", choices=logsetup.LEVELS)
    parser.add_argument("--log.format", dest="log_format", default="logfmt", choices=("logfmt", "json"))
    parser.add_argument(
        "--check-config", action="store_true", help="validate the config file and exit (0 valid, 2 invalid)"
    )
    parser.add_argument(
        "--demo",
        action="store_true",
        help="no config or credentials needed: poll a built-in simulator of both APIs with demo tasks",
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
        "--tasks.state-file",
        dest="state_file",
        type=Path,
        default=Path("data/registered-tasks.json"),
        help="where tasks registered over the API are kept across restarts",
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


async def _serve_config(config: Config, options: Options, listener: Listener) -> None:
    credentials = await open_provider(config, os.environ)
    try:
        await _serve(Daemon(config, credentials, options), listener)
    finally:
        await credentials.close()


async def _serve(daemon: Daemon, listener: Listener) -> None:
    app = create_app(daemon, middlewares(listener.web_config))
    # shutdown_timeout bounds how long in-flight requests may delay exit after SIGTERM.
    runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=2.0)
    await runner.setup()
    try:
        listen = listener.address
        site = web.TCPSite(runner, listen[0], listen[1], ssl_context=listener.tls)
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
            reload = asyncio.create_task(_reload_logged(daemon))
            reloads.add(reload)
            reload.add_done_callback(reloads.discard)

        loop.add_signal_handler(signal.SIGHUP, on_sighup)
        await stop.wait()
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

    simulator = Simulator([demo.DEMO_CREDENTIALS], speed=speed)
    for task in demo.demo_tasks():
        simulator.add_task(task)
    url = await simulator.start()
    try:
        log.info("demo mode: polling the built-in simulator", extra={"fields": {"simulator": url}})
        credentials = StaticProvider(demo.DEMO_CREDENTIALS, "demo")
        await _serve(Daemon(demo.demo_config(url, speed), credentials, options), listener)
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
    return Options(config_path, shard, args.state_file, retention, args.api_token_file)


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
        listener = Listener(args.listen, web_config, ssl_context(web_config))
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
    except (CredentialsError, StateFileError, ReloadError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_INVALID
    return 0
