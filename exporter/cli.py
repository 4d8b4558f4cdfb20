"""Command line: parse flags, load and check the config, then serve until SIGINT/SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from collections.abc import Sequence

from aiohttp import web

from exporter import __version__
from exporter import log as logsetup
from exporter.config import Config, ConfigError, load_config
from exporter.credentials import CredentialProvider, CredentialsError, StaticProvider, open_provider
from exporter.daemon import Daemon
from exporter.web import create_app

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
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    return parser


async def _serve_config(config: Config, listen: tuple[str | None, int]) -> None:
    credentials = await open_provider(config, os.environ)
    log.info("credentials found", extra={"fields": {"source": credentials.source}})
    try:
        await _serve(config, credentials, listen)
    finally:
        await credentials.close()


async def _serve(config: Config, credentials: CredentialProvider, listen: tuple[str | None, int]) -> None:
    runner = web.AppRunner(create_app(Daemon(config, credentials)), handle_signals=False)
    await runner.setup()
    try:
        site = web.TCPSite(runner, listen[0], listen[1])
        await site.start()
        for address in runner.addresses:
            host, port = address[0], address[1]
            shown = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
            log.info("listening", extra={"fields": {"address": shown, "version": __version__}})
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        log.info("shutting down")
    finally:
        await runner.cleanup()


async def _serve_demo(speed: float, listen: tuple[str | None, int]) -> None:
    # Imported here: the simulator is only needed in demo mode.
    from exporter import demo
    from exporter.simulator import Simulator

    simulator = Simulator([demo.DEMO_CREDENTIALS], speed=speed)
    for task in demo.demo_tasks():
        simulator.add_task(task)
    url = await simulator.start()
    try:
        log.info("demo mode: polling the built-in simulator", extra={"fields": {"simulator": url}})
        await _serve(demo.demo_config(url, speed), StaticProvider(demo.DEMO_CREDENTIALS, "demo"), listen)
    finally:
        await simulator.stop()


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logsetup.setup(args.log_level, args.log_format)
    if args.demo:
        if args.demo_speed <= 0:
            print("--demo.speed: expected a positive number", file=sys.stderr)
            return EXIT_INVALID
        asyncio.run(_serve_demo(args.demo_speed, args.listen))
        return 0
    try:
        config = load_config(args.config_file)
    except ConfigError as exc:
        print(f"invalid configuration ({len(exc.problems)} problem(s)):", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        return EXIT_INVALID
    if args.check_config:
        print(f"{args.config_file}: valid, {len(config.tasks)} task(s) watched")
        return 0
    try:
        asyncio.run(_serve_config(config, args.listen))
    except CredentialsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_INVALID
    return 0
