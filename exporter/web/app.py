"""The HTTP side around a running Daemon: /metrics (or --web.telemetry-path), the landing and /tasks pages,
health and readiness, /-/reload and /-/config, and the task API under /api/v1/tasks.

A scrape only concatenates pre-rendered bytes; it never waits on the Tencent Cloud API.
"""

from __future__ import annotations

import argparse
import hmac
import html
import json
import time
from collections.abc import Sequence
from datetime import UTC, datetime

import yaml
from aiohttp import web
from aiohttp.typedefs import Middleware

from exporter import __version__
from exporter.catalogue.products import BY_NAME
from exporter.config.parser import CONFIG, ConfigError, parse_task, redacted
from exporter.config.validation import MAX_NESTING, key_text, nesting, shown
from exporter.daemon.core import API_TOKEN_ENV, Daemon, ReloadError
from exporter.exposition.metrics import OPENMETRICS_CONTENT_TYPE, TEXT_CONTENT_TYPE
from exporter.exposition.scrape import SCRAPES, Variant, install
from exporter.exposition.state import TaskState
from exporter.store.database import StoreError

DAEMON = web.AppKey("daemon", Daemon)
TELEMETRY_PATH = web.AppKey("telemetry_path", str)
DEFAULT_TELEMETRY_PATH = "/metrics"
# The task API authenticates with its own bearer token, also when basic auth guards everything else.
TASK_API_PREFIX = "/api/v1/"


def telemetry_path_flag(value: str) -> str:
    """--web.telemetry-path: an absolute path, not one the exporter's other pages already take."""
    if not value.startswith("/") or value == "/":
        raise argparse.ArgumentTypeError(f"expected a path starting with / (like /metrics), got {value!r}")
    if not value.isprintable() or any(c in value for c in " ?#{}%\\"):
        raise argparse.ArgumentTypeError(f"expected a plain path (no spaces, ?, #, {{, }}, %), got {value!r}")
    if "//" in value or "/./" in value or "/../" in value or value.endswith(("/.", "/..")):
        raise argparse.ArgumentTypeError(f"expected a normalised path, got {value!r}")
    if value.rstrip("/") in ("/tasks", "/-", "/api") or value.startswith(("/-/", "/api/")):
        raise argparse.ArgumentTypeError(f"{value!r} is taken by the exporter's own pages (/tasks, /-/...)")
    return value


def _relative(path: str) -> str:
    """A link to `path` from a page at the root, relative (as /metrics has always been linked) so a proxy
    serving the exporter under a prefix keeps the links working."""
    link = path.lstrip("/")
    if ":" in link.split("/", 1)[0]:
        link = "./" + link  # `a:b` would read as a URL scheme
    return html.escape(link, quote=True)


def _wants_openmetrics(request: web.Request) -> bool:
    return "application/openmetrics-text" in request.headers.get("Accept", "")


def _accepts_gzip(request: web.Request) -> bool:
    encodings = request.headers.get("Accept-Encoding", "")
    return any(part.split(";")[0].strip() == "gzip" for part in encodings.split(","))


async def metrics(request: web.Request) -> web.StreamResponse:
    daemon = request.app[DAEMON]
    variant = Variant(openmetrics=_wants_openmetrics(request), gzip=_accepts_gzip(request))
    response = web.StreamResponse(
        headers={
            "Content-Type": OPENMETRICS_CONTENT_TYPE if variant.openmetrics else TEXT_CONTENT_TYPE,
            "Vary": "Accept, Accept-Encoding",
        }
    )
    if variant.gzip:
        response.headers["Content-Encoding"] = "gzip"
    await response.prepare(request)
    # Scrapes arriving during a render of the same variant share it (exporter.exposition.scrape), so heavy
    # scraping renders and compresses once per burst instead of once per scraper and leaves the loop to
    # polling.
    await request.app[SCRAPES].stream(
        variant,
        # A snapshot of who is watched, taken when a render starts. A poll finishing between two chunks may
        # show in the later ones; a line is never torn, since each task's lines are replaced whole.
        lambda: daemon.metrics.chunks(list(daemon.store), variant.openmetrics),
        response.write,
    )
    await response.write_eof()
    return response


async def healthy(request: web.Request) -> web.Response:
    return web.Response(text="Healthy.\n")


async def ready(request: web.Request) -> web.Response:
    # The first line says which; then one line per account without keys (a degraded, still ready replica).
    ready, accounts = request.app[DAEMON].readiness()
    text = "".join(f"{line}\n" for line in ["Ready." if ready else "Not ready.", *accounts])
    return web.Response(status=200 if ready else 503, text=text)


async def landing(request: web.Request) -> web.Response:
    counts = request.app[DAEMON].store.count_by_product()
    watched = ", ".join(f"{n} {html.escape(s)}" for s, n in counts.items())
    page = f"""<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>Tencent Cloud task exporter</title></head>
<body>
<h1>Tencent Cloud task exporter</h1>
<p>Version {html.escape(__version__)}. Watching {watched} tasks.</p>
<ul>
<li><a href="{_relative(request.app[TELEMETRY_PATH])}">Metrics</a></li>
<li><a href="tasks">Watched tasks</a></li>
<li><a href="-/config">Effective configuration</a> (secrets hidden)</li>
<li><a href="-/healthy">Health</a></li>
<li><a href="-/ready">Readiness</a></li>
</ul>
</body>
</html>
"""
    return web.Response(text=page, content_type="text/html")


async def config_page(request: web.Request) -> web.Response:
    text = yaml.safe_dump(redacted(request.app[DAEMON].config), sort_keys=False, allow_unicode=True)
    return web.Response(text=text, content_type="text/plain")


async def reload(request: web.Request) -> web.Response:
    if not request.app[DAEMON].options.enable_lifecycle:
        # As Prometheus does: changing the running exporter over HTTP is opt-in (SIGHUP always works).
        return web.Response(status=403, text="Lifecycle API is not enabled (--web.enable-lifecycle).\n")
    try:
        await request.app[DAEMON].reload()
    except ReloadError as exc:
        return web.Response(status=500, text=f"failed to reload config: {exc}\n")
    return web.Response(text="Config reloaded.\n")


def _json_error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


def _authorized(request: web.Request) -> web.Response | None:
    """None when the request may use the task API, else the answer to give."""
    token = request.app[DAEMON].api_token
    if token is None:
        return _json_error(
            404, "the task API is off; enable it with --tasks.api-token-file or " + API_TOKEN_ENV
        )
    scheme, _, presented = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(presented.strip().encode(), token.encode()):
        response = _json_error(401, "a valid bearer token is required")
        response.headers["WWW-Authenticate"] = 'Bearer realm="tencentcloud-task-exporter"'
        return response
    return None


def _task_json(daemon: Daemon, state: TaskState) -> dict[str, object]:
    task = state.task
    return {
        **task.as_json(),
        "source": state.source,
        "instance_id": state.instance_id,
        "instance_name": state.instance_name,
        "task_type": state.task_type,
        "started": _iso(state.start_time),
        "ended": _iso(state.end_time),
        "status": state.status,
        "status_since": _iso(state.status_since),
        "last_poll": _iso(state.last_attempt),
        "last_success": _iso(state.last_success),
        "last_error": state.last_error,
        "info": state.info,
    }


def _iso(timestamp: float | None) -> str | None:
    return None if timestamp is None else datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="seconds")


async def list_tasks(request: web.Request) -> web.Response:
    if (denied := _authorized(request)) is not None:
        return denied
    daemon = request.app[DAEMON]
    return web.json_response({"tasks": [_task_json(daemon, s) for s in daemon.store]})


async def _read_body(request: web.Request, limit: int) -> bytes | None:
    """The request body, or None when it is larger than `limit` bytes (read no further than that)."""
    if request.content_length is not None and request.content_length > limit:
        return None
    body = bytearray()
    while len(body) <= limit:
        chunk = await request.content.read(limit + 1 - len(body))
        if not chunk:
            return bytes(body)
        body += chunk
    return None


_TASK_SHAPE = "expected a JSON object: {product, id, region?, account?, labels?}"


def _parse_json(raw: bytes) -> object:
    """The decoded body; ValueError with the reason when it is not JSON a task could be made of."""
    try:
        body = json.loads(raw)
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None
    except (ValueError, UnicodeDecodeError):
        raise ValueError(_TASK_SHAPE) from None
    if nesting(body) > MAX_NESTING:
        raise ValueError("JSON nested too deeply")
    return body


async def add_task(request: web.Request) -> web.Response:
    if (denied := _authorized(request)) is not None:
        return denied
    daemon = request.app[DAEMON]
    limits = daemon.config.limits
    raw = await _read_body(request, limits.request_body_bytes)
    if raw is None:
        return _json_error(
            413, f"request body over {limits.request_body_bytes} bytes (limits.request_body_bytes)"
        )
    try:
        body = _parse_json(raw)
    except ValueError as exc:
        return _json_error(400, str(exc))
    if not isinstance(body, dict):
        return _json_error(400, _TASK_SHAPE)
    unknown = sorted(set(body) - {"product", "id", "region", "account", "labels"})
    if unknown:
        return _json_error(400, f"unknown fields: {', '.join(key_text(k) for k in unknown[:10])}")
    product = body.get("product")
    if not isinstance(product, str) or product not in BY_NAME:
        return _json_error(400, f"product: expected one of {', '.join(BY_NAME)}, got {shown(product)}")
    entry = {k: v for k, v in body.items() if k != "product"}
    try:
        task = parse_task(
            product, entry, daemon.config.region, "request", limits, daemon.config.account_names
        )
    except ConfigError as exc:
        return _json_error(400, "; ".join(p.removeprefix("request: ") for p in exc.problems)[:1000])
    if not daemon.can_register(task.key):
        return _json_error(
            429,
            f"already {limits.registered_tasks} registered tasks (limits.registered_tasks): delete some",
        )
    try:
        new = await daemon.register(task)
    except StoreError as exc:
        # Watched from now on, and written with the next batch that succeeds; the caller should retry.
        return _json_error(503, f"registered but not yet saved to the store: {exc}")
    owned = daemon.options.shard.owns(task.product, task.task_id)
    answer = {**task.as_json(), "polled_here": owned}
    if not owned:
        answer["shard"] = daemon.options.shard.owner(task.product, task.task_id)
    return web.json_response(answer, status=201 if new else 200)


async def delete_task(request: web.Request) -> web.Response:
    if (denied := _authorized(request)) is not None:
        return denied
    daemon = request.app[DAEMON]
    product, task_id = request.match_info["product"], request.match_info["id"]
    region = request.query.get("region") or daemon.config.region
    if product not in BY_NAME or region is None:
        return _json_error(400, f"expected /api/v1/tasks/{{{'|'.join(BY_NAME)}}}/{{id}}?region=REGION")
    key = (product, region, task_id)
    try:
        removed = await daemon.unregister(key)
    except StoreError as exc:
        return _json_error(503, f"removed but not yet saved to the store: {exc}")
    if removed:
        return web.Response(status=204)
    if daemon.source(key) == CONFIG:
        return _json_error(409, "this task is watched by the config file; remove it there and reload")
    if key in daemon.discovery.found:
        return _json_error(409, "this task was discovered; it is forgotten after discovery.retention")
    return _json_error(404, "no such registered task")


_PAGE_STYLE = (
    "body{font-family:sans-serif;margin:1.5em}table{border-collapse:collapse}"
    "th,td{border:1px solid #ccc;padding:.3em .6em;text-align:left;vertical-align:top}"
    "th{background:#f3f3f3}.failed,.killed{color:#b00}.success{color:#070}"
    "td:nth-child(-n+6){white-space:nowrap}td:nth-child(3){font-family:monospace}"
)


def _shown(timestamp: float | None) -> str:
    return "" if timestamp is None else datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d %H:%M:%S")


def _running_for(state: TaskState, now: float) -> str:
    """How long the task has run: from its start time (or, lacking one, since its current status was
    first seen) to its end (or now)."""
    start = state.start_time if state.start_time is not None else state.status_since
    if start is None:
        return ""
    end = state.end_time if state.final and state.end_time is not None else now
    if state.final and state.end_time is None:
        return ""  # ended, but when is unknown
    seconds = max(0, int(end - start))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}h{rest // 60:02d}m" if hours else f"{rest // 60}m{rest % 60:02d}s"


async def tasks_page(request: web.Request) -> web.Response:
    daemon = request.app[DAEMON]
    now = time.time()
    rows = []
    for state in sorted(daemon.store, key=lambda s: s.task.key):
        task, status = state.task, state.status or "not polled yet"
        labels = ", ".join(f"{k}={v}" for k, v in task.labels)
        instance = state.instance_id or ""
        if state.instance_name:
            instance = f"{instance} ({state.instance_name})"
        cells = [
            task.product,
            task.region,
            task.account,
            task.task_id,
            status,
            instance,
            state.task_type or "",
            state.source,
            _running_for(state, now),
            _shown(state.status_since),
            _shown(state.last_attempt),
            state.last_error or "",
            state.info or "",
            labels,
        ]
        tds = "".join(f"<td>{html.escape(c)}</td>" for c in cells)
        rows.append(f'<tr class="{html.escape(state.status or "unpolled")}">{tds}</tr>')
    headings = [
        "Product",
        "Region",
        "Account",
        "Task ID",
        "Status",
        "Instance",
        "Type",
        "Source",
        "Running for",
        "Since",
        "Last poll",
        "Last error",
        "Info",
        "Labels",
    ]
    metrics_link = _relative(request.app[TELEMETRY_PATH])
    page = f"""<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>Watched tasks - Tencent Cloud task exporter</title>
<style>{_PAGE_STYLE}</style></head>
<body>
<h1>Watched tasks</h1>
<p>{len(rows)} task(s). Times are UTC. <a href="./">Home</a> · <a href="{metrics_link}">Metrics</a></p>
<table id="tasks">
<thead><tr>{"".join(f"<th>{h}</th>" for h in headings)}</tr></thead>
<tbody>
{chr(10).join(rows)}
</tbody>
</table>
</body>
</html>
"""
    return web.Response(text=page, content_type="text/html")


async def _start(app: web.Application) -> None:
    await app[DAEMON].start()


async def _stop(app: web.Application) -> None:
    await app[DAEMON].stop()


def create_app(
    daemon: Daemon,
    middlewares: Sequence[Middleware] = (),
    telemetry_path: str = DEFAULT_TELEMETRY_PATH,
) -> web.Application:
    """The exporter's routes; the metrics are served at `telemetry_path` only (/metrics is then a 404)."""
    app = web.Application(middlewares=list(middlewares))
    app[DAEMON] = daemon
    app[TELEMETRY_PATH] = telemetry_path
    install(app)  # the shared renders of the metrics, closed with the app
    app.on_startup.append(_start)
    app.on_cleanup.append(_stop)
    app.router.add_get("/", landing)
    app.router.add_get(telemetry_path, metrics)
    app.router.add_get("/-/healthy", healthy)
    app.router.add_get("/-/ready", ready)
    app.router.add_post("/-/reload", reload)
    app.router.add_get("/-/config", config_page)
    app.router.add_get("/tasks", tasks_page)
    app.router.add_get("/api/v1/tasks", list_tasks)
    app.router.add_post("/api/v1/tasks", add_task)
    app.router.add_delete("/api/v1/tasks/{product}/{id}", delete_task)
    return app
