"""`python -m exporter.simulator`: the simulator as a process of its own, with the demo or a scenario file.

Accounts: `--secret-id`/`--secret-key` (one), `--credentials ID:KEY[:TOKEN]` (repeatable) and
`--accounts-file` (JSON: `[{"secret_id": ..., "secret_key": ..., "token": ...}]` or `{"accounts": [...]}`)
add up; with none of them the demo accounts' keys are accepted. Keys are never logged, nor echoed in errors.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import signal
from collections.abc import Sequence
from pathlib import Path

from exporter.catalogue.products import BY_NAME, PRODUCTS
from exporter.credentials.signing import Credentials
from exporter.simulator.scenario import SimTask, load_scenario
from exporter.simulator.server import Simulator

log = logging.getLogger("exporter.simulator")  # stable even when run as __main__


def _listen_address(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {value!r}")
    return host.strip("[]") or "127.0.0.1", int(port)


def _quota(value: str) -> tuple[str, float]:
    product, sep, rate = value.partition("=")
    try:
        if not sep or product not in BY_NAME:
            raise ValueError
        return product, float(rate)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected PRODUCT=RATE with PRODUCT in {sorted(BY_NAME)}") from None


def credentials_arg(value: str) -> Credentials:
    """`ID:KEY` or `ID:KEY:TOKEN`, as an argparse type; its error never quotes the value (a key)."""
    secret_id, _, rest = value.partition(":")
    secret_key, _, token = rest.partition(":")
    if not secret_id.strip() or not secret_key.strip():
        raise argparse.ArgumentTypeError(
            "expected SECRET_ID:SECRET_KEY[:TOKEN] (value not shown: it holds a key)"
        )
    return Credentials(secret_id.strip(), secret_key.strip(), token.strip())


def load_accounts(path: Path) -> list[Credentials]:
    """Accounts from a JSON file: a list of `{"secret_id", "secret_key", "token"?}` objects, or an object with
    such a list under `accounts`. Raises OSError or ValueError, whose messages never quote a key."""
    document = json.loads(path.read_text(encoding="utf-8"))
    entries = document.get("accounts") if isinstance(document, dict) else document
    if not isinstance(entries, list):
        raise ValueError(f"{path}: expected a list of accounts or an object with an `accounts` list")
    accounts = []
    for index, entry in enumerate(entries):
        fields = ("secret_id", "secret_key", "token")
        if (
            not isinstance(entry, dict)
            or set(entry) - set(fields)
            or not all(isinstance(entry.get(name, ""), str) for name in fields)
            or not entry.get("secret_id")
            or not entry.get("secret_key")
        ):
            raise ValueError(
                f"{path}: account {index}: expected an object of strings `secret_id`, `secret_key` "
                "and optionally `token`"
            )
        accounts.append(Credentials(entry["secret_id"], entry["secret_key"], entry.get("token", "")))
    return accounts


def add_account_arguments(parser: argparse.ArgumentParser) -> None:
    """--credentials, --accounts-file and --region: whose keys a simulator process accepts and which
    regional endpoint it stands for (this command's and the benchmark's simulator server's)."""
    parser.add_argument(
        "--credentials",
        type=credentials_arg,
        action="append",
        default=[],
        metavar="ID:KEY[:TOKEN]",
        help="one more accepted account, repeatable (quotas are counted per secret id)",
    )
    parser.add_argument("--accounts-file", default=None, help="JSON list of accounts' keys to accept")
    parser.add_argument(
        "--region",
        default=None,
        help="serve this region only, as a regional endpoint does (default: every region)",
    )


def _parser() -> argparse.ArgumentParser:
    actions = ", ".join(f"{s.name} {s.action}" for s in PRODUCTS)
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
    parser.add_argument("--quota", type=_quota, action="append", default=[], help="PRODUCT=RATE, repeatable")
    parser.add_argument("--secret-id", default=None, help="accepted SecretId (default: the demo's)")
    parser.add_argument("--secret-key", default=None, help="its SecretKey")
    parser.add_argument("--token", default="", help="session token the credentials require, if any")
    add_account_arguments(parser)
    return parser


async def _serve(simulator: Simulator, host: str, port: int) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    url = await simulator.start(host, port)
    log.info(
        "simulator listening on %s (region %s, %d accounts)",
        url,
        simulator.region or "any",
        len(simulator.secret_ids),
    )
    try:
        await stop.wait()
    finally:
        await simulator.stop()
        log.info("simulator stopped")


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # Imported here: the demo builds its scenario from this package's types.
    from exporter.simulator.demo import DEMO_ACCOUNTS, demo_tasks

    if (args.secret_id is None) != (args.secret_key is None):
        log.error("--secret-id and --secret-key go together")
        return 2
    accounts: list[Credentials] = []
    if args.secret_id is not None:
        accounts.append(Credentials(args.secret_id, args.secret_key, args.token))
    accounts.extend(args.credentials)
    try:
        if args.accounts_file is not None:
            accounts.extend(load_accounts(Path(args.accounts_file)))
        if args.scenario is None:
            tasks: list[SimTask] = []
        elif args.scenario == "demo":
            tasks = demo_tasks()
        else:
            tasks = load_scenario(Path(args.scenario))
        simulator = Simulator(
            accounts or list(DEMO_ACCOUNTS.values()),
            quotas=dict(args.quota),
            latency=args.latency,
            speed=args.speed,
            region=args.region,
        )
    except (OSError, ValueError) as exc:
        log.error("%s", exc)
        return 2
    simulator.add_tasks(tasks)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(simulator, *args.listen))
    return 0
