"""`tencentcloud-task-exporter get` and `wait`: one poll of some tasks, or polling until they are final, for
scripts and pipelines; the engine (config, credentials, buckets, client) is `exporter.cli.oneshot`'s.

Exit codes: get 0 every poll answered, 3 an ID not found (wins over 4: a definite answer about an ID beats
a transient failure), 4 any other API or transport error; wait 0 every task succeeded, 1 one ended in another
final status, 3 an ID still not found after --not-found-grace (counted again from the first "not found" after
the ID was seen), 4 the keys or their permissions refused DENIED_IN_A_ROW times in a row, 124 --timeout
passed first (when several apply: 3, then 1, then 4, then 124); both 2 on bad flags, IDs, config, region,
account or credentials. Every non-zero exit says why in one line on stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import shutil
import sys
import time
from collections.abc import Sequence
from typing import Any, TextIO

from exporter import log as logsetup
from exporter.catalogue.products import PRODUCTS, Product
from exporter.cli.flags import PROG, add_version_flag
from exporter.cli.oneshot import (
    EXIT_ERROR,
    EXIT_FAILED,
    EXIT_NOT_FOUND,
    EXIT_OK,
    EXIT_TIMEOUT,
    EXIT_USAGE,
    Session,
    TaskResult,
    UsageError,
    choose_account,
    choose_region,
    is_denied,
    is_not_found,
    iso_time,
    open_session,
    parse_targets,
    polling_for,
    read_config,
)
from exporter.config.parser import Config, parse_duration

GET_SUMMARY = "poll tasks once and print their status (exit 0 ok, 3 an ID not found, 4 API error)"
WAIT_SUMMARY = (
    "poll tasks until all are final (exit 0 all succeeded, 1 one failed, 3 not found, 4 access denied, "
    "124 timeout)"
)
# A throttled answer says nothing about the task: get asks again, this many times at most.
GET_THROTTLED_RETRIES = 3
# wait gives up on a task whose keys or permissions are refused this many times in a row (revoked keys, a
# CAM policy without the action): more waiting does not mend them, and --timeout may be hours away.
DENIED_IN_A_ROW = 3
EXIT_INTERRUPTED = 130
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")

_GET_EPILOG = f"""\
A product name switches the product for the IDs after it (products: {", ".join(s.name for s in PRODUCTS)}).

examples:
  {PROG} get cdb cdb-async-1234 --region ap-guangzhou
  {PROG} get mariadb 3340 3341 --output json | jq '.tasks[].status'
  {PROG} get cdb A1 mariadb 3340 --account prod

exit status: 0 every poll answered; 3 an ID not found (wins when both); 4 any other API or transport
error; 2 bad flags, IDs, config, region, account or credentials. Every non-zero exit says why in one
line on stderr."""

_WAIT_EPILOG = f"""\
A product name switches the product for the IDs after it (products: {", ".join(s.name for s in PRODUCTS)}).
A status line goes to stderr while waiting (one line per change when stderr is not a terminal); the
summary goes to stdout. Throttling and transport errors are retried with backoff.

examples:
  {PROG} wait cdb cdb-async-1234 --region ap-guangzhou --timeout 30m
  {PROG} wait mariadb 3340 3341 --interval 5s --output json
  {PROG} wait cdb A1 A2 mariadb 3340 && echo all done

exit status: 0 every task succeeded; 1 one ended in another final status (failed, killed...); 3 an ID
not found after --not-found-grace (an ID seen before: that long after the first "not found"); 4 the keys
or their permissions refused 3 times in a row (AuthFailure.*, UnauthorizedOperation.*); 124 --timeout
passed first (when several apply: 3, then 1, then 4, then 124); 2 bad flags, IDs, config, region,
account or credentials; 130 interrupted. Every non-zero exit says why in one line on stderr."""


def _duration(value: str) -> float:
    seconds = parse_duration(value)
    if seconds is None or seconds < 0:
        raise argparse.ArgumentTypeError(f"expected a duration like 30s or 2h, got {value!r}")
    return seconds


def _positive_duration(value: str) -> float:
    seconds = _duration(value)
    if seconds <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive duration like 10s, got {value!r}")
    return seconds


def build_parser(command: str) -> argparse.ArgumentParser:
    waiting = command == "wait"
    parser = argparse.ArgumentParser(
        prog=f"{PROG} {command}",
        usage=f"{PROG} {command} PRODUCT ID [ID...] [PRODUCT ID [ID...]...] [FLAGS]",
        description=WAIT_SUMMARY if waiting else GET_SUMMARY,
        epilog=_WAIT_EPILOG if waiting else _GET_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("words", nargs="+", metavar="PRODUCT ID [ID...]", help="the tasks")
    parser.add_argument(
        "--config.file",
        dest="config_file",
        default=None,
        help="YAML config file: credentials, accounts, region, endpoints, rate limits (default config.yaml, "
        "read when present; else the environment's credentials and the published endpoints)",
    )
    parser.add_argument("--region", default=None, help="the tasks' region (default: the config's `region`)")
    parser.add_argument("--account", default=None, help="the config's account to ask as (default: the first)")
    parser.add_argument("--output", default="text", choices=("text", "json"), help="stdout format")
    if waiting:
        parser.add_argument(
            "--timeout", type=_positive_duration, default=7200.0, help="give up after this long (default 2h)"
        )
        parser.add_argument(
            "--interval",
            type=_positive_duration,
            default=10.0,
            help="poll each task this often while it runs (default 10s)",
        )
        parser.add_argument(
            "--not-found-grace",
            dest="not_found_grace",
            type=_duration,
            default=30.0,
            help="keep asking about an ID the API does not know for this long, as it may appear a few "
            "seconds after the call that returned it (default 30s)",
        )
    parser.add_argument(
        "--log.level", dest="log_level", default="warn", choices=logsetup.LEVELS, help="(default warn)"
    )
    parser.add_argument("--log.format", dest="log_format", default="logfmt", choices=("logfmt", "json"))
    add_version_flag(parser)
    return parser


def _clean(text: str | None) -> str:
    """API text made safe for a terminal: no control characters (escape sequences, newlines)."""
    return "-" if text is None or text == "" else _CONTROL.sub(" ", text)


def _table(results: Sequence[TaskResult]) -> str:
    header = ("PRODUCT", "REGION", "ID", "STATUS", "FINAL", "STARTED", "ENDED", "INFO")
    rows = [header]
    for r in results:
        observation = r.observation
        info = observation.info if observation is not None else None
        if r.error is not None and observation is None:
            info = r.error.message or None
        rows.append(
            (
                r.task.product,
                r.task.region,
                _clean(r.task.task_id),
                _clean(r.shown_status),
                "yes" if r.final else "no",
                iso_time(observation.start_time) or "-" if observation else "-",
                iso_time(observation.end_time) or "-" if observation else "-",
                _clean(info),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header) - 1)]
    lines = [
        "  ".join([*(cell.ljust(w) for cell, w in zip(row, widths, strict=False)), row[-1]]) for row in rows
    ]
    return "\n".join(line.rstrip() for line in lines) + "\n"


def _setup(command: str, argv: Sequence[str]) -> tuple[argparse.Namespace, Any]:
    args = build_parser(command).parse_intermixed_args(argv)
    logsetup.setup(args.log_level, args.log_format)
    targets = parse_targets(args.words)
    config = read_config(args.config_file)
    region = choose_region(config, args.region)
    account = choose_account(config, args.account)
    return args, (config, region, account, targets)


def _run(command: str, argv: Sequence[str]) -> int:
    try:
        args, (config, region, account, targets) = _setup(command, argv)
        if command == "get":
            return asyncio.run(_get(args, config, region, account, targets))
        return asyncio.run(_wait(args, config, region, account, targets))
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


def get(argv: Sequence[str]) -> int:
    """`get PRODUCT ID [ID...]`: one poll of each ID."""
    return _run("get", argv)


def wait(argv: Sequence[str]) -> int:
    """`wait PRODUCT ID [ID...]`: polls until every ID is final, not found, or the timeout passes."""
    return _run("wait", argv)


# --------------------------------------------------------------------------------------------------- get


async def _get_one(session: Session, result: TaskResult) -> None:
    polling = polling_for(session.config, session.config.polling.interval)
    for attempt in range(GET_THROTTLED_RETRIES + 1):
        outcome = await session.poll(result)
        if outcome.ok:
            return
        if is_not_found(result.product, outcome):
            result.not_found = True
            return
        if not result.product.is_throttling(outcome.code) or attempt == GET_THROTTLED_RETRIES:
            return
        await asyncio.sleep(min(session.backoff(result, polling), 5.0))


async def _get(
    args: argparse.Namespace, config: Config, region: str, account: str, targets: list[tuple[Product, str]]
) -> int:
    async with open_session(config, region, account) as session:
        results = [TaskResult(session.task(product, task_id)) for product, task_id in targets]
        await asyncio.gather(*(_get_one(session, r) for r in results))
    if any(r.not_found for r in results):
        code, reason = EXIT_NOT_FOUND, "not_found"
    elif any(r.error is not None for r in results):
        code, reason = EXIT_ERROR, "error"
    else:
        code, reason = EXIT_OK, "ok"
    if args.output == "json":
        document = {"tasks": [r.as_json() for r in results], "result": reason, "exit_code": code}
        sys.stdout.write(json.dumps(document, indent=2) + "\n")
    else:
        sys.stdout.write(_table(results))
    if code != EXIT_OK:
        _say_why("get", code, _get_reason(results))
    return code


def _get_reason(results: Sequence[TaskResult]) -> str:
    missing = [r for r in results if r.not_found]
    if missing:
        return f"{len(missing)} of {len(results)} not found: {_tasks(missing)}"
    failed = [r for r in results if r.error is not None]
    return f"{len(failed)} of {len(results)} polls failed: {_tasks(failed, codes=True)}"


def _tasks(results: Sequence[TaskResult], codes: bool = False, statuses: bool = False) -> str:
    """`mariadb 5, cdb A1` (with each one's error code or status), the first few of them."""
    shown = []
    for r in results[:5]:
        text = f"{r.task.product} {_clean(r.task.task_id)}"
        if codes and r.error is not None:
            text += f" ({_clean(r.error.code)})"
        if statuses:
            text += f" ({_clean(r.status)})"
        shown.append(text)
    more = f" and {len(results) - 5} more" if len(results) > 5 else ""
    return ", ".join(shown) + more


def _say_why(command: str, code: int, reason: str) -> None:
    """The one line on stderr every non-zero exit gets (the summary on stdout may be JSON, or piped)."""
    sys.stderr.write(f"{command}: {reason} (exit {code})\n")
    sys.stderr.flush()


# -------------------------------------------------------------------------------------------------- wait


class StatusLine:
    """What the wait is at, on stderr: one line rewritten in place on a terminal, else one line per change
    of any task's state (so logs and CI output stay readable). Not a log line."""

    def __init__(self, stream: TextIO, results: Sequence[TaskResult], started: float) -> None:
        self.stream = stream
        self.tty = stream.isatty()
        self.results = results
        self.started = started
        self._shown: dict[int, str] = {}
        self._drawn = False

    def _elapsed(self) -> str:
        return f"{time.monotonic() - self.started:.1f}s"

    def _done(self) -> int:
        return sum(1 for r in self.results if r.final or r.not_found or r.denied)

    def changed(self, result: TaskResult, text: str) -> None:
        if self._shown.get(id(result)) == text:
            return
        self._shown[id(result)] = text
        if self.tty:
            self.redraw()
            return
        task = result.task
        self.stream.write(
            f"[{self._elapsed()}] {task.product} {_clean(task.task_id)}: {text} "
            f"({self._done()}/{len(self.results)} done)\n"
        )
        self.stream.flush()

    def redraw(self) -> None:
        if not self.tty:
            return
        parts = [
            f"{r.task.product} {_clean(r.task.task_id)} {self._shown.get(id(r), 'waiting')}"
            for r in self.results
        ]
        line = f"waiting {self._elapsed()}: {self._done()}/{len(self.results)} done; " + ", ".join(parts)
        width = shutil.get_terminal_size((100, 20)).columns
        if len(line) > width - 1:
            line = line[: max(width - 2, 10)] + "…"
        self.stream.write("\r\x1b[K" + line)
        self.stream.flush()
        self._drawn = True

    def close(self) -> None:
        if self.tty and self._drawn:
            self.stream.write("\r\x1b[K")
            self.stream.flush()


def _state_text(result: TaskResult, in_grace: bool) -> str:
    if result.not_found:
        return "not found"
    if result.denied and result.error is not None:
        return f"{_clean(result.error.code)} {DENIED_IN_A_ROW} times in a row, given up"
    if result.error is not None:
        if in_grace and is_not_found(result.product, result.error):
            return "not found yet"
        return f"{_clean(result.error.code)}, retrying"
    return _clean(result.status)


async def _wait_one(
    session: Session, result: TaskResult, args: argparse.Namespace, line: StatusLine, started: float
) -> None:
    polling = polling_for(session.config, args.interval)
    grace_end = started + args.not_found_grace
    missing_since: float | None = None  # the first "not found" since the task was last seen
    while True:
        outcome = await session.poll(result)
        now = time.monotonic()
        deadline = grace_end
        if outcome.ok:
            missing_since, delay = None, args.interval
        elif is_not_found(result.product, outcome):
            if result.observation is not None:
                # Seen before, so it exists: one "not found" (an API replica behind, say) is not the end;
                # the grace period runs again from the first of them.
                missing_since = now if missing_since is None else missing_since
                deadline = missing_since + args.not_found_grace
            if now >= deadline:
                result.not_found = True
            # One more ask as the grace period ends, however long the interval.
            delay = min(args.interval, max(deadline - now, 0.05))
        else:
            result.denied = is_denied(outcome.code) and result.denied_in_a_row >= DENIED_IN_A_ROW
            delay = session.backoff(result, polling)
        line.changed(result, _state_text(result, now < deadline))
        if result.final or result.not_found or result.denied:
            return
        await asyncio.sleep(delay)


async def _ticker(line: StatusLine) -> None:
    while True:
        await asyncio.sleep(1.0)
        line.redraw()


async def _wait(
    args: argparse.Namespace, config: Config, region: str, account: str, targets: list[tuple[Product, str]]
) -> int:
    started = time.monotonic()
    timed_out = False
    async with open_session(config, region, account) as session:
        results = [TaskResult(session.task(product, task_id)) for product, task_id in targets]
        line = StatusLine(sys.stderr, results, started)
        ticker = asyncio.create_task(_ticker(line)) if line.tty else None
        try:
            async with asyncio.timeout(args.timeout):
                await asyncio.gather(*(_wait_one(session, r, args, line, started) for r in results))
        except TimeoutError:
            timed_out = True
        finally:
            if ticker is not None:
                ticker.cancel()
            line.close()
    if any(r.not_found for r in results):
        code, reason = EXIT_NOT_FOUND, "not_found"
    elif any(r.failed for r in results):
        code, reason = EXIT_FAILED, "failed"
    elif any(r.denied for r in results):
        code, reason = EXIT_ERROR, "denied"
    elif timed_out or not all(r.succeeded for r in results):
        code, reason = EXIT_TIMEOUT, "timeout"
    else:
        code, reason = EXIT_OK, "succeeded"
    elapsed = round(time.monotonic() - started, 3)
    if args.output == "json":
        document = {
            "tasks": [r.as_json() for r in results],
            "result": reason,
            "exit_code": code,
            "elapsed_seconds": elapsed,
        }
        sys.stdout.write(json.dumps(document, indent=2) + "\n")
    else:
        sys.stdout.write(_table(results))
        sys.stdout.write(f"result: {_summary(results, reason, args.timeout)} (exit {code})\n")
    if code != EXIT_OK:
        _say_why("wait", code, _wait_reason(results, reason, args))
    return code


def _wait_reason(results: Sequence[TaskResult], reason: str, args: argparse.Namespace) -> str:
    summary = _summary(results, reason, args.timeout)
    if reason == "not_found":
        missing = _tasks([r for r in results if r.not_found])
        return f"{summary} after --not-found-grace {args.not_found_grace:g}s: {missing}"
    if reason == "failed":
        failed = [r for r in results if r.final and not r.succeeded]
        return f"{summary}: {_tasks(failed, statuses=True)}"
    if reason == "denied":
        denied = [r for r in results if r.denied]
        return f"{summary}: {_tasks(denied, codes=True)}"
    return f"{summary}: {_tasks([r for r in results if not r.final])}"


def _summary(results: Sequence[TaskResult], reason: str, timeout: float) -> str:
    total = len(results)
    if reason == "succeeded":
        return f"all {total} succeeded"
    if reason == "not_found":
        missing = sum(1 for r in results if r.not_found)
        return f"{missing} of {total} not found"
    if reason == "failed":
        failed = sum(1 for r in results if r.failed)
        return f"{failed} of {total} ended in a failure status"
    if reason == "denied":
        denied = sum(1 for r in results if r.denied)
        return f"{denied} of {total} refused access {DENIED_IN_A_ROW} times in a row (keys or permissions)"
    pending = sum(1 for r in results if not r.final)
    return f"timed out after {timeout:g}s with {pending} of {total} not final"
