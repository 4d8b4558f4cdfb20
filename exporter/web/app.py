"""The HTTP side around a running Daemon: /metrics (or --web.telemetry-path), the landing and /tasks pages
(rendered by `pages` from the snapshots of `board`),
health and readiness, /-/reload and /-/config, and the task API under /api/v1/tasks.

A scrape only concatenates pre-rendered bytes; it never waits on the Tencent Cloud API.
"""

from __future__ import annotations

import argparse
import hmac
import html
import json
from collections.abc import Sequence

import yaml
from aiohttp import web
from aiohttp.typedefs import Middleware

from exporter.catalogue.products import BY_NAME
from exporter.config.parser import CONFIG, ConfigError, parse_task, redacted
from exporter.config.validation import MAX_NESTING, key_text, nesting, shown
from exporter.daemon.core import API_TOKEN_ENV, Daemon, ReloadError
from exporter.exposition.metrics import OPENMETRICS_CONTENT_TYPE, TEXT_CONTENT_TYPE
from exporter.exposition.scrape import SCRAPES, Variant, install
from exporter.store.database import StoreError
from exporter.web import assets, pages
from exporter.web.board import BadQuery, Board, Query

DAEMON = web.AppKey("daemon", Daemon)
TELEMETRY_PATH = web.AppKey("telemetry_path", str)
BOARD = web.AppKey("board", Board)
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


def _page(body: bytes, content_type: str = "text/html") -> web.Response:
    response = web.Response(body=body, content_type=content_type, charset="utf-8")
    # Rendered from a snapshot a few seconds old at most: no cache should keep it longer.
    response.headers["Cache-Control"] = "no-cache"
    if content_type == "text/html":
        response.headers["Content-Security-Policy"] = pages.CONTENT_SECURITY_POLICY
    return response


def _bad_query(exc: BadQuery, as_json: bool) -> web.Response:
    if as_json:
        return _json_error(400, str(exc))
    return web.Response(status=400, text=f"400: {exc}\n")


async def _wait_turn(request: web.Request, as_json: bool) -> web.Response | None:
    """None once it is this page's turn (`Board.pace`), else the 503 to answer."""
    if await request.app[BOARD].pace.turn():
        return None
    reason = "too many page requests; try again in a few seconds"
    response = _json_error(503, reason) if as_json else web.Response(status=503, text=f"503: {reason}\n")
    response.headers["Retry-After"] = "5"
    return response


async def landing(request: web.Request) -> web.Response:
    if (busy := await _wait_turn(request, False)) is not None:
        return busy
    link = _relative(request.app[TELEMETRY_PATH])
    body = await request.app[BOARD].rendered(
        "landing", Query(), lambda snap, _: pages.landing_page(snap, link)
    )
    return _page(body)


async def tasks_page(request: web.Request) -> web.Response:
    """The board: HTML, or with ?format=json the same page as JSON (what the page's script refreshes from)."""
    as_json = request.query.get("format") == "json"
    try:
        query = Query.parse(request.query)
    except BadQuery as exc:
        return _bad_query(exc, as_json)
    if (busy := await _wait_turn(request, as_json)) is not None:
        return busy
    board = request.app[BOARD]
    if as_json:
        return _page(await board.rendered("json", query, pages.tasks_json), "application/json")
    link = _relative(request.app[TELEMETRY_PATH])
    body = await board.rendered("html", query, lambda snap, q: pages.tasks_page(snap, q, link))
    return _page(body)


async def static(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    if name not in _STATIC:
        return web.Response(status=404, text="404: Not Found\n")
    body, content_type = _STATIC[name]
    response = web.Response(text=body, content_type=content_type)
    response.headers["Cache-Control"] = "max-age=300"
    return response


_STATIC = {"board.css": (assets.STYLESHEET, "text/css"), "board.js": (assets.SCRIPT, "text/javascript")}


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


async def list_tasks(request: web.Request) -> web.Response:
    """Every task, or those the board's filters (`phase`, `product`, ...) select; `page` for one page of them.

    Served from the board's snapshot, so asking often costs little: a registration through this API shows at
    once (it starts a new snapshot), a poll's result within SNAPSHOT_SECONDS."""
    if (denied := _authorized(request)) is not None:
        return denied
    try:
        query = Query.parse(request.query)
    except BadQuery as exc:
        return _json_error(400, str(exc))
    if (busy := await _wait_turn(request, True)) is not None:
        return busy
    board = request.app[BOARD]
    if "page" in request.query:
        return _page(await board.rendered("json", query, pages.tasks_json), "application/json")
    await board.encode((await board.snapshot()).rows)
    return _page(await board.rendered("api", query, pages.all_tasks_json), "application/json")


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
        request.app[BOARD].invalidate()
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
        request.app[BOARD].invalidate()
    except StoreError as exc:
        return _json_error(503, f"removed but not yet saved to the store: {exc}")
    if removed:
        return web.Response(status=204)
    if daemon.source(key) == CONFIG:
        return _json_error(409, "this task is watched by the config file; remove it there and reload")
    if key in daemon.discovery.found:
        return _json_error(409, "this task was discovered; it is forgotten after discovery.retention")
    return _json_error(404, "no such registered task")


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
    # The store is replaced when the daemon starts: the board asks for the current one each time.
    app[BOARD] = Board(lambda: daemon.store)
    install(app)  # the shared renders of the metrics, closed with the app
    app.on_startup.append(_start)
    app.on_cleanup.append(_stop)
    app.router.add_get("/", landing)
    app.router.add_get(telemetry_path, metrics)
    app.router.add_get("/-/healthy", healthy)
    app.router.add_get("/-/ready", ready)
    app.router.add_post("/-/reload", reload)
    app.router.add_get("/-/config", config_page)
    app.router.add_get("/-/static/{name}", static)
    app.router.add_get("/tasks", tasks_page)
    app.router.add_get("/api/v1/tasks", list_tasks)
    app.router.add_post("/api/v1/tasks", add_task)
    app.router.add_delete("/api/v1/tasks/{product}/{id}", delete_task)
    return app
