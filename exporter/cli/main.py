"""Command line: parse flags, load and check the config, then serve until SIGINT/SIGTERM; or a subcommand.

`tencentcloud-task-exporter [FLAGS]` runs the daemon. When the first word names a subcommand (SUBCOMMANDS),
that runs instead, with the rest of the words: `tencentcloud-task-exporter healthcheck [FLAGS]`. A word that
is a flag, or anything after one, is the daemon's, so every invocation without a subcommand works as before.
Adding a subcommand is one entry in SUBCOMMANDS: a function from its words to an exit status.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import socket
import ssl
import sys
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import prometheus_client
from aiohttp import web

from exporter import __version__
from exporter import log as logsetup
from exporter.cli import flags as cliflags
from exporter.cli import getwait, healthcheck
from exporter.cli import register as register_command
from exporter.cli.flags import (
    DEFAULT_LISTEN_ADDRESS,
    DEFAULT_STORAGE_PATH,
    EXIT_INVALID,
    KEEPALIVE_TIMEOUT,
    LEGACY_STATE_FILE,
    parse_listen_address,
)
from exporter.config.parser import Config, ConfigError, load_config, parse_duration
from exporter.config.sharding import Shard
from exporter.credentials.chain import CredentialsError, check_chain
from exporter.daemon.core import Daemon, Options, ReloadError, read_api_token
from exporter.store.database import StoreError
from exporter.web import httpserver, looperrors
from exporter.web.app import DEFAULT_TELEMETRY_PATH, TASK_API_PREFIX, create_app
from exporter.web.config import WebConfig, WebConfigError, middlewares, summary
from exporter.web.reload import WebConfigReloader

log = logging.getLogger("exporter")


@dataclass(frozen=True)
class Listener:
    addresses: tuple[tuple[str | None, int], ...]
    web_config: WebConfig
    tls: ssl.SSLContext | None
    read_header_timeout: float = httpserver.DEFAULT_READ_HEADER_TIMEOUT
    max_connections: int = httpserver.DEFAULT_MAX_CONNECTIONS
    # Serve on the sockets systemd passed, not on `addresses`.
    systemd_socket: bool = False
    telemetry_path: str = DEFAULT_TELEMETRY_PATH
    # Absolute, for the healthcheck file; "" without one.
    web_config_file: str = ""
    # Re-reads --web.config.file when it changes; None without one.
    web_reloader: WebConfigReloader | None = None

    def bind(self) -> list[socket.socket]:
        """The listening sockets, all or none; raises httpserver.ListenError."""
        if self.systemd_socket:
            return httpserver.systemd_sockets()
        return httpserver.bind(self.addresses)


async def _serve_config(config: Config, options: Options, listener: Listener) -> None:
    # The daemon opens the credential chain itself as it starts, and closes whatever it opened.
    await _serve(Daemon(config, None, options), listener)


async def _serve(daemon: Daemon, listener: Listener) -> None:
    reloader = listener.web_reloader
    app = create_app(
        daemon,
        reloader.middlewares((TASK_API_PREFIX,))
        if reloader is not None
        else middlewares(listener.web_config, bearer_paths=(TASK_API_PREFIX,)),
        telemetry_path=listener.telemetry_path,
    )
    if reloader is not None:
        # The configured headers, on /metrics too: it streams its answer past the guard.
        app.on_response_prepare.append(reloader.add_headers)
    # Before anything opens a socket: the polls and the server share the process's descriptors.
    httpserver.raise_open_files_limit()
    # Every address is bound before the daemon starts, so one that cannot be fails at once (exit 2).
    sockets = listener.bind()
    try:
        await _serve_on(daemon, app, listener, sockets)
    finally:
        for sock in sockets:  # the site closed them when it started; not when it never did
            sock.close()


async def _serve_on(
    daemon: Daemon, app: web.Application, listener: Listener, sockets: list[socket.socket]
) -> None:
    # Repeated loop errors (accept() failing, say) are logged once per kind and interval, not each time.
    looperrors.install_loop_exception_handler(asyncio.get_running_loop())
    # shutdown_timeout bounds how long in-flight requests may delay exit after SIGTERM. An idle keep-alive
    # connection is closed after KEEPALIVE_TIMEOUT (aiohttp's default is an hour), so idle clients cannot
    # hold --web.max-connections; scrapers reconnect at their next interval.
    runner = web.AppRunner(
        app, handle_signals=False, shutdown_timeout=2.0, keepalive_timeout=KEEPALIVE_TIMEOUT
    )
    await runner.setup()
    healthcheck_file: Path | None = None
    try:
        # One site for every socket: --web.max-connections caps them all together.
        site = httpserver.GuardedSite(
            runner,
            ssl_context=listener.tls,
            read_header_timeout=listener.read_header_timeout,
            max_connections=listener.max_connections,
            registry=daemon.metrics.registry,
            sockets=sockets,
        )
        await site.start()
        if listener.web_reloader is not None:
            listener.web_reloader.register(daemon.metrics.registry)
            await listener.web_reloader.start()
        # Before the `listening` lines, which say the daemon can be asked from then on.
        healthcheck_file = healthcheck.write_file(runner.addresses[0], listener.web_config_file)
        for address in runner.addresses:
            shown = httpserver.show_address(str(address[0]), int(address[1]))
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
        if listener.web_reloader is not None:
            await listener.web_reloader.stop()
        await runner.cleanup()
        if healthcheck_file is not None:
            healthcheck.remove_file(healthcheck_file)


async def _reload_logged(daemon: Daemon) -> None:
    # Daemon.reload logs the outcome and keeps the old config on failure; nothing more to do here.
    with contextlib.suppress(ReloadError):
        await daemon.reload()


async def _serve_demo(speed: float, options: Options, listener: Listener) -> None:
    # Imported here: the simulator is only needed in demo mode.
    from exporter.simulator import Simulator, demo

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


@dataclass(frozen=True)
class Subcommand:
    summary: str
    # The words after the subcommand's name -> the exit status.
    run: Callable[[list[str]], int]


def main(argv: Sequence[str] | None = None) -> int:
    words = list(sys.argv[1:] if argv is None else argv)
    if words and words[0] in SUBCOMMANDS:
        return SUBCOMMANDS[words[0]].run(words[1:])
    return run_daemon(words)


def run_daemon(argv: Sequence[str]) -> int:
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
    if args.systemd_socket and args.listen:
        log.info("--web.listen-address ignored: --web.systemd-socket serves on the sockets systemd passes")
    try:
        reloader = WebConfigReloader(args.web_config_file) if args.web_config_file else None
        web_config = reloader.config if reloader is not None else WebConfig()
        listener = Listener(
            tuple(args.listen or [parse_listen_address(DEFAULT_LISTEN_ADDRESS)]),
            web_config,
            reloader.ssl_context if reloader is not None else None,
            args.read_header_timeout,
            args.max_connections,
            systemd_socket=args.systemd_socket,
            telemetry_path=args.telemetry_path,
            web_config_file=str(Path(args.web_config_file).absolute()) if args.web_config_file else "",
            web_reloader=reloader,
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
        problems = _start_problems(config, options)
        if problems:
            for problem in problems:
                print(f"error: {problem}", file=sys.stderr)
            return EXIT_INVALID
        print(f"{args.config_file}: valid, {len(config.tasks)} task(s) watched")
        if args.web_config_file:
            print(f"{args.web_config_file}: valid")
        return 0
    return _run(_serve_config(config, options, listener))


def _start_problems(config: Config, options: Options) -> list[str]:
    """What would stop the daemon's start besides the config file itself, found without the network: each
    account's credentials that no retry can mend (half a key pair, no source at all: the daemon exits 2 on
    them, as here) and the task API's token file. An account whose source is only unreachable now passes:
    the daemon starts without it and retries."""
    problems = []
    for account in config.accounts:
        try:
            check_chain(account.credentials, os.environ, where=config.where(account), use_env=account.use_env)
        except CredentialsError as exc:
            problems.append(str(exc))
    try:
        read_api_token(options, os.environ)
    except ReloadError as exc:
        problems.append(str(exc))
    return problems


def _run(main_coroutine: Coroutine[Any, Any, None]) -> int:
    """Runs the daemon; problems with its inputs found while starting exit 2 with the reason."""
    try:
        asyncio.run(main_coroutine)
    except (CredentialsError, StoreError, ReloadError, httpserver.ListenError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_INVALID
    return 0


SUBCOMMANDS: dict[str, Subcommand] = {
    "healthcheck": Subcommand(healthcheck.SUMMARY, healthcheck.healthcheck),
    "get": Subcommand(getwait.GET_SUMMARY, getwait.get),
    "wait": Subcommand(getwait.WAIT_SUMMARY, getwait.wait),
    "register": Subcommand(register_command.SUMMARY, register_command.register),
}


def build_parser(subcommand: str | None = None) -> argparse.ArgumentParser:
    """The daemon's parser (or a subcommand's), with every subcommand named in its help."""
    return cliflags.build_parser(subcommand, {name: sub.summary for name, sub in SUBCOMMANDS.items()})
