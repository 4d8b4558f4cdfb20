"""`python -m exporter.simulator`: the simulator as a process of its own, with the demo or a scenario file."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
from collections.abc import Sequence
from pathlib import Path

from exporter.services import BY_NAME, SERVICES
from exporter.signing import Credentials
from exporter.simulator.scenario import SimTask, load_scenario
from exporter.simulator.server import Simulator

log = logging.getLogger("exporter.simulator")  # stable even when run as __main__


def _listen_address(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {value!r}")
    return host.strip("[]") or "127.0.0.1", int(port)


def _quota(value: str) -> tuple[str, float]:
    service, sep, rate = value.partition("=")
    try:
        if not sep or service not in BY_NAME:
            raise ValueError
        return service, float(rate)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected SERVICE=RATE with SERVICE in {sorted(BY_NAME)}") from None


def _parser() -> argparse.ArgumentParser:
    actions = ", ".join(f"{s.name} {s.action}" for s in SERVICES)
    parser = argparse.ArgumentParser(
        prog="python -m exporter.simulator",
        description=f"Serve simulated Tencent Cloud task status APIs ({actions}).",
    )
    parser.add_argument(
        "--listen", type=_listen_address, default=("127.0.0.1", 0), help="HOST:PORT (port 0: any)"
    )
    parser.add_argument("--scenario", default=None, help="`demo` or a JSON file of tasks (default: no tasks)")
    parser.add_argument(
        "--speed", type=float, default=1.0, help="timeline speed factor (10: ten times faster)"
    )
    parser.add_argument("--latency", type=float, default=0.0, help="extra seconds before every answer")
    parser.add_argument("--quota", type=_quota, action="append", default=[], help="SERVICE=RATE, repeatable")
    parser.add_argument("--secret-id", default=None, help="accepted SecretId (default: the demo credentials)")
    parser.add_argument("--secret-key", default=None, help="its SecretKey")
    parser.add_argument("--token", default="", help="session token the credentials require, if any")
    return parser


async def _serve(simulator: Simulator, host: str, port: int) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    url = await simulator.start(host, port)
    log.info("simulator listening on %s", url)
    try:
        await stop.wait()
    finally:
        await simulator.stop()
        log.info("simulator stopped")


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # Imported here: the demo builds its scenario from this package's types.
    from exporter.demo import DEMO_CREDENTIALS, demo_tasks

    if (args.secret_id is None) != (args.secret_key is None):
        log.error("--secret-id and --secret-key go together")
        return 2
    credentials = (
        DEMO_CREDENTIALS
        if args.secret_id is None
        else Credentials(args.secret_id, args.secret_key, args.token)
    )
    try:
        if args.scenario is None:
            tasks: list[SimTask] = []
        elif args.scenario == "demo":
            tasks = demo_tasks()
        else:
            tasks = load_scenario(Path(args.scenario))
        simulator = Simulator([credentials], quotas=dict(args.quota), latency=args.latency, speed=args.speed)
    except (OSError, ValueError) as exc:
        log.error("%s", exc)
        return 2
    simulator.add_tasks(tasks)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(simulator, *args.listen))
    return 0
