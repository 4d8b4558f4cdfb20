"""The HTTP side around a running Daemon: /metrics, the landing and /tasks pages, health and readiness,
/-/reload and /-/config, and the task API under /api/v1/tasks.

A scrape only concatenates pre-rendered bytes; it never waits on the Tencent Cloud API.
"""

from __future__ import annotations

import asyncio
import hmac
import html
import zlib
from collections.abc import Sequence
from datetime import UTC, datetime

import yaml
from aiohttp import web
from aiohttp.typedefs import Middleware

from exporter import __version__
from exporter.config import ConfigError, parse_task, redacted
from exporter.daemon import API_TOKEN_ENV, Daemon, ReloadError
from exporter.metrics import OPENMETRICS_CONTENT_TYPE, TEXT_CONTENT_TYPE
from exporter.services import BY_NAME
from exporter.state import TaskState

DAEMON = web.AppKey("daemon", Daemon)


def _wants_openmetrics(request: web.Request) -> bool:
    return "application/openmetrics-text" in request.headers.get("Accept", "")


def _accepts_gzip(request: web.Request) -> bool:
    encodings = request.headers.get("Accept-Encoding", "")
    return any(part.split(";")[0].strip() == "gzip" for part in encodings.split(","))


async def metrics(request: web.Request) -> web.StreamResponse:
    daemon = request.app[DAEMON]
    openmetrics = _wants_openmetrics(request)
    # A snapshot of who is watched. A poll finishing between two chunks may show in the later ones; a line
    # is never torn, since each task's lines are replaced whole.
    states = list(daemon.store)
    response = web.StreamResponse(
        headers={
            "Content-Type": OPENMETRICS_CONTENT_TYPE if openmetrics else TEXT_CONTENT_TYPE,
            "Vary": "Accept, Accept-Encoding",
        }
    )
    compressor = None
    if _accepts_gzip(request):
        response.headers["Content-Encoding"] = "gzip"
        compressor = zlib.compressobj(1, zlib.DEFLATED, 31)  # wbits 31: a gzip container
    await response.prepare(request)
    loop = asyncio.get_running_loop()
    for chunk in daemon.metrics.chunks(states, openmetrics):
        if compressor is not None:
            # zlib releases the GIL: compression runs beside the event loop, not on it.
            chunk = await loop.run_in_executor(None, compressor.compress, chunk)
        if chunk:
            await response.write(chunk)
        await asyncio.sleep(0)  # let polls and other requests run between chunks
    if compressor is not None:
        await response.write(compressor.flush())
    await response.write_eof()
    return response


async def healthy(request: web.Request) -> web.Response:
    return web.Response(text="Healthy.\n")


async def ready(request: web.Request) -> web.Response:
    if request.app[DAEMON].ready:
        return web.Response(text="Ready.\n")
    return web.Response(status=503, text="Not ready.\n")


async def landing(request: web.Request) -> web.Response:
    counts = request.app[DAEMON].store.count_by_service()
    watched = ", ".join(f"{n} {html.escape(s)}" for s, n in counts.items())
    page = f"""<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>Tencent Cloud task exporter</title></head>
<body>
<h1>Tencent Cloud task exporter</h1>
<p>Version {html.escape(__version__)}. Watching {watched} tasks.</p>
<ul>
<li><a href="metrics">Metrics</a></li>
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
        "service": task.service,
        "id": task.task_id,
        "region": task.region,
        "labels": dict(task.labels),
        "source": daemon.source(task.key),
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


async def add_task(request: web.Request) -> web.Response:
    if (denied := _authorized(request)) is not None:
        return denied
    daemon = request.app[DAEMON]
    try:
        body = await request.json()
    except ValueError:
        return _json_error(400, "expected a JSON object: {service, id, region?, labels?}")
    if not isinstance(body, dict):
        return _json_error(400, "expected a JSON object: {service, id, region?, labels?}")
    unknown = sorted(set(body) - {"service", "id", "region", "labels"})
    if unknown:
        return _json_error(400, f"unknown fields: {', '.join(map(str, unknown))}")
    service = body.get("service")
    if not isinstance(service, str) or service not in BY_NAME:
        return _json_error(400, f"service: expected one of {', '.join(BY_NAME)}, got {service!r}"[:300])
    entry = {k: v for k, v in body.items() if k != "service"}
    try:
        task = parse_task(service, entry, daemon.config.region, "request")
    except ConfigError as exc:
        return _json_error(400, "; ".join(p.removeprefix("request: ") for p in exc.problems)[:1000])
    try:
        new = await daemon.register(task)
    except OSError as exc:
        # Watched from now on, and saved with the next change that can be written; the caller should retry.
        return _json_error(503, f"registered but not yet saved to the state file: {exc.strerror}")
    owned = daemon.options.shard.owns(task.service, task.task_id)
    answer: dict[str, object] = {
        "service": task.service,
        "id": task.task_id,
        "region": task.region,
        "labels": dict(task.labels),
        "polled_here": owned,
    }
    if not owned:
        answer["shard"] = daemon.options.shard.owner(task.service, task.task_id)
    return web.json_response(answer, status=201 if new else 200)


async def delete_task(request: web.Request) -> web.Response:
    if (denied := _authorized(request)) is not None:
        return denied
    daemon = request.app[DAEMON]
    service, task_id = request.match_info["service"], request.match_info["id"]
    region = request.query.get("region") or daemon.config.region
    if service not in BY_NAME or region is None:
        return _json_error(400, "expected /api/v1/tasks/{mariadb|cdb}/{id}?region=REGION")
    key = (service, region, task_id)
    try:
        removed = await daemon.unregister(key)
    except OSError as exc:
        return _json_error(503, f"removed but not yet saved to the state file: {exc.strerror}")
    if removed:
        return web.Response(status=204)
    if daemon.source(key) == "config":
        return _json_error(409, "this task is watched by the config file; remove it there and reload")
    return _json_error(404, "no such registered task")


_PAGE_STYLE = (
    "body{font-family:sans-serif;margin:1.5em}table{border-collapse:collapse}"
    "th,td{border:1px solid #ccc;padding:.3em .6em;text-align:left;vertical-align:top}"
    "th{background:#f3f3f3}.failed,.killed{color:#b00}.success{color:#070}"
    "td:nth-child(-n+6){white-space:nowrap}td:nth-child(3){font-family:monospace}"
)


def _shown(timestamp: float | None) -> str:
    return "" if timestamp is None else datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d %H:%M:%S")


async def tasks_page(request: web.Request) -> web.Response:
    daemon = request.app[DAEMON]
    rows = []
    for state in sorted(daemon.store, key=lambda s: s.task.key):
        task, status = state.task, state.status or "not polled yet"
        labels = ", ".join(f"{k}={v}" for k, v in task.labels)
        cells = [
            task.service,
            task.region,
            task.task_id,
            status,
            _shown(state.status_since),
            _shown(state.last_attempt),
            state.last_error or "",
            state.info or "",
            labels,
        ]
        tds = "".join(f"<td>{html.escape(c)}</td>" for c in cells)
        rows.append(f'<tr class="{html.escape(state.status or "unpolled")}">{tds}</tr>')
    headings = [
        "Service",
        "Region",
        "Task ID",
        "Status",
        "Since",
        "Last poll",
        "Last error",
        "Info",
        "Labels",
    ]
    page = f"""<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>Watched tasks - Tencent Cloud task exporter</title>
<style>{_PAGE_STYLE}</style></head>
<body>
<h1>Watched tasks</h1>
<p>{len(rows)} task(s). Times are UTC. <a href="./">Home</a> · <a href="metrics">Metrics</a></p>
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


def create_app(daemon: Daemon, middlewares: Sequence[Middleware] = ()) -> web.Application:
    app = web.Application(middlewares=list(middlewares))
    app[DAEMON] = daemon
    app.on_startup.append(_start)
    app.on_cleanup.append(_stop)
    app.router.add_get("/", landing)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/-/healthy", healthy)
    app.router.add_get("/-/ready", ready)
    app.router.add_post("/-/reload", reload)
    app.router.add_get("/-/config", config_page)
    app.router.add_get("/tasks", tasks_page)
    app.router.add_get("/api/v1/tasks", list_tasks)
    app.router.add_post("/api/v1/tasks", add_task)
    app.router.add_delete("/api/v1/tasks/{service}/{id}", delete_task)
    return app
