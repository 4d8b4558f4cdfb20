"""`tencentcloud-task-exporter register`: hands an operation a pipeline just started to a running exporter's
task API (`POST URL/api/v1/tasks`), so it shows on the dashboards and alerts like a watched one.

Exit statuses: 0 registered (201 new, 200 already registered), 2 unusable command line (bad flags, URL or
label, no token), 4 the exporter could not be reached or refused the task (the reason is printed).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import ssl
import sys
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from exporter import __version__
from exporter.cli import httpcall
from exporter.cli.flags import EXIT_INVALID, PROG, build_parser
from exporter.config.values import LABEL_NAME, RESERVED_LABELS, parse_duration
from exporter.daemon.core import API_TOKEN_ENV
from exporter.web.app import TASK_API_PREFIX

SUMMARY = "register an operation with a running exporter's task API (for pipelines)"
EXIT_FAILED = 4
TASKS_PATH = TASK_API_PREFIX + "tasks"
DEFAULT_TIMEOUT = "10s"
_MAX_ANSWER = 64 * 1024
# How a TLS 1.3 server that wanted a client certificate looks from here: it hangs up after the handshake.
_HANGUPS = (http.client.RemoteDisconnected, ConnectionResetError, ssl.SSLEOFError)

EPILOG = f"""\
The bearer token is read from --token-file, else from
${API_TOKEN_ENV} (as the exporter reads its own); never from the
command line, and it is never printed. The daemon's flags (--config.file, ...)
are accepted and ignored: the exporter applies its own config's default region
and account.

exit status:
  0  registered (201 new, or 200 already registered)
  2  unusable command line: a bad flag, URL or label, no token
  4  not registered: the exporter could not be reached (refused, timed out,
     TLS failed) or refused the task (4xx/5xx; its reason is printed)

examples:
  export {API_TOKEN_ENV}=...   # from the CI's secret store
  {PROG} register --url http://exporter:10123 cdb f96e4f3c-8fc96c86-2ec79ac8-cb63a7a7
  {PROG} register --url https://exporter.example --ca-file ca.pem \\
      --label pipeline=deploy-42 --label team=dba mariadb 3340 --region ap-shanghai --account batch
  {PROG} register --url http://exporter:10123 \\
      --token-file /run/secrets/token --output json redis 1201
"""


class UsageError(Exception):
    """The command line cannot be used as given (exit 2)."""


def build_register_parser() -> argparse.ArgumentParser:
    parser = build_parser("register", {"register": SUMMARY})
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = EPILOG
    for action in parser._actions:  # the daemon's flags: accepted, ignored, and kept out of the help
        if not set(action.option_strings) & {"-h", "--config.file", "--version"}:
            action.help = argparse.SUPPRESS
        elif action.dest == "config_file":
            action.help = "accepted, like every subcommand, and unused"
    parser.add_argument("product", metavar="PRODUCT", help="the product, as in the config: cdb, mariadb, ...")
    parser.add_argument("task_id", metavar="ID", help="the operation's ID (flow, task or async request ID)")
    group = parser.add_argument_group("register")
    group.add_argument(
        "--url",
        required=True,
        help="the exporter's base URL, e.g. http://exporter:10123 (a path prefix is kept); the task is "
        f"POSTed to URL{TASKS_PATH}",
    )
    group.add_argument("--region", help="the task's region (default: the exporter config's `region`)")
    group.add_argument(
        "--account", help="one of the exporter config's accounts, whose keys poll it (default: its first)"
    )
    group.add_argument(
        "--label",
        dest="labels",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a label for the task's series, repeatable; NAME is a Prometheus label name",
    )
    group.add_argument(
        "--token-file",
        metavar="PATH",
        help=f"file holding the task API's bearer token (default: ${API_TOKEN_ENV}; "
        "--tasks.api-token-file is read too when this is not given)",
    )
    group.add_argument(
        "--timeout",
        default=DEFAULT_TIMEOUT,
        metavar="DURATION",
        help=f"give up after this long, for each of connecting, the TLS handshake and the answer "
        f"(default {DEFAULT_TIMEOUT})",
    )
    group.add_argument(
        "--ca-file",
        metavar="PATH",
        help="with an https:// URL: trust the CA certificates in this PEM file instead of the system's",
    )
    group.add_argument(
        "--cert-file",
        metavar="PATH",
        help="with an https:// URL: client certificate (PEM) to present, when the exporter requires one",
    )
    group.add_argument(
        "--key-file", metavar="PATH", help="private key of --cert-file (default: the key is in that file)"
    )
    group.add_argument(
        "--output",
        choices=("text", "json"),
        default="text",
        help="text (default), or the exporter's JSON answer with `new`",
    )
    return parser


@dataclass(frozen=True)
class Target:
    host: str
    port: int | None
    path: str
    tls: ssl.SSLContext | None
    shown: str  # the URL asked, for messages (it holds no credentials)


def target(args: argparse.Namespace) -> Target:
    """Where to POST; raises UsageError."""
    try:
        parts = urllib.parse.urlsplit(args.url)
        port = parts.port
    except ValueError as exc:
        raise UsageError(f"--url: {exc}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UsageError(f"--url: expected http://HOST[:PORT] or https://HOST[:PORT], got {args.url!r}")
    if parts.username is not None or parts.password is not None:
        raise UsageError("--url: expected no user:password@ (the task API takes the bearer token only)")
    if parts.query or parts.fragment:
        raise UsageError("--url: expected the exporter's base URL, without ?query or #fragment")
    path = parts.path.rstrip("/") + TASKS_PATH
    shown = urllib.parse.urlunsplit((parts.scheme, parts.netloc, path, "", ""))
    if parts.scheme == "http":
        if args.ca_file or args.cert_file or args.key_file:
            raise UsageError("--ca-file, --cert-file and --key-file need an https:// --url")
        return Target(parts.hostname, port, path, None, shown)
    return Target(parts.hostname, port, path, _tls(args), shown)


def _tls(args: argparse.Namespace) -> ssl.SSLContext:
    if args.key_file and not args.cert_file:
        raise UsageError("--key-file needs --cert-file")
    try:
        context = ssl.create_default_context(cafile=args.ca_file or None)
        if args.cert_file:
            context.load_cert_chain(args.cert_file, args.key_file or None)
    except (OSError, ValueError, ssl.SSLError) as exc:
        raise UsageError(f"TLS settings: {httpcall.describe_failure(exc)}") from None
    return context


def read_token(args: argparse.Namespace, env: Mapping[str, str]) -> str:
    """The bearer token, as the exporter reads its own (surrounding whitespace dropped); raises UsageError
    without ever showing it."""
    name = args.token_file or args.api_token_file
    if name:
        flag = "--token-file" if args.token_file else "--tasks.api-token-file"
        try:
            token = Path(name).read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise UsageError(f"{flag} {name}: cannot read it ({httpcall.describe_failure(exc)})") from None
        if not token:
            raise UsageError(f"{flag} {name}: the file is empty")
    else:
        token = env.get(API_TOKEN_ENV, "").strip()
        if not token:
            raise UsageError(f"no API token: set {API_TOKEN_ENV} or give --token-file")
    if not token.isprintable() or any(c.isspace() for c in token):
        raise UsageError("the API token holds spaces or control characters (not shown)")
    return token


def parse_labels(words: Sequence[str]) -> dict[str, str]:
    """`NAME=VALUE` words as a mapping; raises UsageError naming the first bad one."""
    labels: dict[str, str] = {}
    for word in words:
        name, equals, value = word.partition("=")
        if not equals:
            raise UsageError(f"--label {word!r}: expected NAME=VALUE")
        if not LABEL_NAME.fullmatch(name) or name.startswith("__"):
            raise UsageError(
                f"--label {word!r}: expected a Prometheus label name ([a-zA-Z_][a-zA-Z0-9_]*, not starting "
                "__) before the =",
            )
        if name in RESERVED_LABELS:
            raise UsageError(
                f"--label {word!r}: {name} is reserved (reserved: {', '.join(sorted(RESERVED_LABELS))})"
            )
        if name in labels:
            raise UsageError(f"--label {word!r}: {name} given twice")
        labels[name] = value
    return labels


def _body(args: argparse.Namespace, labels: Mapping[str, str]) -> dict[str, object]:
    body: dict[str, object] = {"product": args.product, "id": args.task_id}
    if args.region:
        body["region"] = args.region
    if args.account:
        body["account"] = args.account
    if labels:
        body["labels"] = dict(labels)
    return body


def register(argv: Sequence[str], env: Mapping[str, str] | None = None) -> int:
    """`register --url URL PRODUCT ID [...]`: 0 registered, 2 unusable command line, 4 not registered."""
    try:
        args = build_register_parser().parse_args(argv)
    except SystemExit as exc:  # --help: 0; argparse printed why it refused the flags: 2
        return exc.code if isinstance(exc.code, int) else EXIT_INVALID
    token = ""
    try:
        timeout = parse_duration(args.timeout)
        if timeout is None or timeout <= 0:
            raise UsageError(f"--timeout: expected a duration like 10s, got {args.timeout!r}")
        where = target(args)
        labels = parse_labels(args.labels)
        token = read_token(args, os.environ if env is None else env)
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_INVALID
    # Everything printed from here on may quote the token: an error answer can echo the request's headers
    # (a proxy's 400 page, a JSON error quoting them), a failure's message the header it could not send.
    redact = httpcall.Redactor([f"Bearer {token}"])
    try:
        status, reason, raw = _post(where, token, _body(args, labels), timeout)
    except (OSError, http.client.HTTPException) as exc:  # refused, timed out, TLS failed, not HTTP
        message = redact(httpcall.describe_failure(exc))
        if where.tls is not None and not args.cert_file and isinstance(exc, _HANGUPS):
            message += " (does the exporter require a client certificate? see --cert-file)"
        print(f"error: POST {where.shown}: {message}", file=sys.stderr)
        return EXIT_FAILED
    answer = _json(raw)
    reason = redact(reason)
    if status not in (200, 201):
        print(f"error: POST {where.shown}: {status} {reason}: {_why(answer, raw, redact)}", file=sys.stderr)
        return EXIT_FAILED
    if not isinstance(answer, dict):
        print(f"error: POST {where.shown}: {status} {reason}, but the answer is not JSON", file=sys.stderr)
        return EXIT_FAILED
    new = status == 201
    if args.output == "json":
        print(redact(json.dumps({**answer, "new": new}, sort_keys=True)))
    else:
        print(redact(_summary(answer, new)))
    return 0


def _post(where: Target, token: str, body: object, timeout: float) -> tuple[int, str, bytes]:
    headers: dict[str, str | bytes] = {
        "Authorization": f"Bearer {token}".encode(),
        "Content-Type": "application/json",
        "Accept": "application/json",
        "User-Agent": f"{PROG}-register/{__version__}",
    }
    data = json.dumps(body).encode()
    return httpcall.call(
        where.host,
        where.port,
        where.tls,
        "POST",
        where.path,
        headers=headers,
        timeout=timeout,
        limit=_MAX_ANSWER,
        body=data,
    )


def _json(raw: bytes) -> object:
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None


def _why(answer: object, raw: bytes, redact: Callable[[str], str]) -> str:
    """The exporter's `error` reason; else the start of whatever answered (a proxy's page, say). Redacted
    before it is cut, so no part of a secret is left at the cut."""
    if isinstance(answer, dict) and isinstance(answer.get("error"), str):
        text = answer["error"]
    else:
        text = raw.decode("utf-8", "replace").strip()
    text = redact("".join(c if c.isprintable() else " " for c in text))[:300]
    return text or "(no reason given)"


def _summary(answer: Mapping[str, object], new: bool) -> str:
    labels = answer.get("labels")
    shown_labels = ""
    if isinstance(labels, dict) and labels:
        shown_labels = " labels " + ",".join(f"{k}={v}" for k, v in sorted(labels.items()))
    polled = (
        "polled here"
        if answer.get("polled_here", True)
        else f"polled by shard {answer.get('shard', '?')} (this replica does not poll it)"
    )
    return (
        f"registered: {answer.get('product')} {answer.get('id')} in {answer.get('region')} "
        f"(account {answer.get('account')}){shown_labels}: {'new' if new else 'already registered'}, {polled}"
    )
