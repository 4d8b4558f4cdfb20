"""The HTTP side: /metrics, a landing page, health and readiness, around a running Daemon.

A scrape only concatenates pre-rendered text; it never waits on the Tencent Cloud API.
"""

from __future__ import annotations

import asyncio
import gzip
import html

from aiohttp import web

from exporter import __version__
from exporter.daemon import Daemon
from exporter.metrics import OPENMETRICS_CONTENT_TYPE, TEXT_CONTENT_TYPE

DAEMON = web.AppKey("daemon", Daemon)
# Larger bodies are compressed off the event loop so a big scrape cannot stall polling.
_GZIP_INLINE_LIMIT = 256 * 1024


def _wants_openmetrics(request: web.Request) -> bool:
    return "application/openmetrics-text" in request.headers.get("Accept", "")


def _accepts_gzip(request: web.Request) -> bool:
    encodings = request.headers.get("Accept-Encoding", "")
    return any(part.split(";")[0].strip() == "gzip" for part in encodings.split(","))


async def metrics(request: web.Request) -> web.Response:
    openmetrics = _wants_openmetrics(request)
    body = request.app[DAEMON].render(openmetrics)
    content_type = OPENMETRICS_CONTENT_TYPE if openmetrics else TEXT_CONTENT_TYPE
    headers = {"Content-Type": content_type, "Vary": "Accept, Accept-Encoding"}
    if _accepts_gzip(request):
        if len(body) > _GZIP_INLINE_LIMIT:
            body = await asyncio.get_running_loop().run_in_executor(None, gzip.compress, body, 1)
        else:
            body = gzip.compress(body, 1)
        headers["Content-Encoding"] = "gzip"
    return web.Response(body=body, headers=headers)


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
<li><a href="-/healthy">Health</a></li>
<li><a href="-/ready">Readiness</a></li>
</ul>
</body>
</html>
"""
    return web.Response(text=page, content_type="text/html")


async def _start(app: web.Application) -> None:
    await app[DAEMON].start()


async def _stop(app: web.Application) -> None:
    await app[DAEMON].stop()


def create_app(daemon: Daemon) -> web.Application:
    app = web.Application()
    app[DAEMON] = daemon
    app.on_startup.append(_start)
    app.on_cleanup.append(_stop)
    app.router.add_get("/", landing)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/-/healthy", healthy)
    app.router.add_get("/-/ready", ready)
    return app
