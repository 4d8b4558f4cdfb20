"""The request-time half of the web config: an aiohttp middleware enforcing the client certificate's
allowed SANs, the rate limit, basic auth (bcrypt, with a cache of successes) and the response headers.

`exporter.web.config` validates the file into a WebConfig; this module only reads it. Given a function instead
of a WebConfig, the middleware asks it for the config in force on every request (`exporter.web.reload` swaps
in a new one when the file changes), so a reload applies to the next request, on open connections too, as
the toolkit's handler re-reads its file for every request.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import collections
import hashlib
import hmac
import ipaddress
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import bcrypt
from aiohttp import hdrs, web
from aiohttp.typedefs import Handler, Middleware

from exporter.web.model import WebConfig

# The logger keeps its name from before the split, so existing logging configuration still applies.
log = logging.getLogger("exporter.webconfig")

REALM = "tencentcloud-task-exporter"
WWW_AUTHENTICATE = f'Basic realm="{REALM}"'
# bcrypt only ever uses the first 72 bytes of a password (Go's implementation and htpasswd likewise).
_BCRYPT_MAX_PASSWORD = 72


class _RateLimit:
    """A token bucket: `burst` requests at once, then one per `interval` (the toolkit's rate.Limiter)."""

    def __init__(self, interval: float, burst: int) -> None:
        self._interval = interval
        self._burst = float(burst)
        self._tokens = float(burst)
        self._last = time.monotonic()

    def allow(self) -> bool:
        now = time.monotonic()
        self._tokens = min(self._burst, self._tokens + (now - self._last) / self._interval)
        self._last = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False


def _bcrypt_check(password: bytes, hashed: bytes) -> bool:
    try:
        return bcrypt.checkpw(password[:_BCRYPT_MAX_PASSWORD], hashed)
    except ValueError:
        return False


class _BasicAuth:
    """Checks `Authorization: Basic` credentials against bcrypt hashes without blocking the event loop.

    bcrypt is slow on purpose (~60 ms at cost 10), and Prometheus scrapes every few seconds with the same
    credentials, so successful checks are cached:

    - Only successes are cached, so the cache never turns a wrong password into a fast "no" to probe with,
      and never grows from failed guesses; entries can only be added by someone who knows a password.
    - The key is an HMAC-SHA256 of user, password and stored hash under a random per-process key. A hit
      therefore requires presenting the very same user and password (a SHA-256 collision aside). Nothing in
      the cache reveals a password: unlike an unkeyed fast hash, entries cannot be brute-forced without the
      process's key, and they die with the process. Dict lookup timing reveals nothing either, since nobody
      outside the process can compute the keys being looked up.
    - The cache holds at most `_CACHE_SIZE` entries (least recently used evicted), and the users and hashes
      of one instance never change: a reload that changes them makes a new instance (new key, empty cache),
      so an entry never outlives the hash it was checked against.

    Misses run bcrypt in a worker thread, one at a time (like the toolkit): a flood of wrong passwords then
    costs one core, not all of them, and cached scrapes are not queued behind it. Unknown users are checked
    against a dummy hash of the highest configured cost so their timing matches known users'.
    """

    _CACHE_SIZE = 64

    def __init__(self, users: tuple[tuple[str, bytes], ...]) -> None:
        self._secret = secrets.token_bytes(32)
        self._users = [(self._mac(name.encode()), hashed) for name, hashed in users]
        cost = max(int(hashed[4:6]) for _, hashed in users)
        # A well-formed hash that no password matches; checking against it costs the same as a real one.
        self._dummy = bcrypt.gensalt(rounds=cost) + b"." * 31
        self._cache: collections.OrderedDict[bytes, None] = collections.OrderedDict()
        self._lock = asyncio.Lock()

    def _mac(self, *parts: bytes) -> bytes:
        mac = hmac.new(self._secret, digestmod=hashlib.sha256)
        for part in parts:
            mac.update(len(part).to_bytes(8, "big"))
            mac.update(part)
        return mac.digest()

    def _lookup(self, user: bytes) -> bytes | None:
        wanted, found = self._mac(user), None
        for name, hashed in self._users:  # every entry compared, in constant time: no early exit
            if hmac.compare_digest(name, wanted):
                found = hashed
        return found

    async def check(self, header: str | None) -> bool:
        credentials = _parse_basic(header)
        if credentials is None:
            return False
        user, password = credentials
        hashed = self._lookup(user)
        key = self._mac(user, password, hashed or b"")
        if hashed is not None and key in self._cache:
            self._cache.move_to_end(key)
            return True
        async with self._lock:
            if hashed is not None and key in self._cache:  # a concurrent request just checked the same
                return True
            ok = await asyncio.to_thread(_bcrypt_check, password, hashed or self._dummy)
        if ok and hashed is not None:
            self._cache[key] = None
            while len(self._cache) > self._CACHE_SIZE:
                self._cache.popitem(last=False)
            return True
        return False


def _parse_basic(header: str | None) -> tuple[bytes, bytes] | None:
    if not header:
        return None
    scheme, _, encoded = header.strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True)
    except (binascii.Error, ValueError):
        return None
    user, sep, password = decoded.partition(b":")
    return (user, password) if sep else None


def _subject_alt_names(peercert: object) -> set[str]:
    names: set[str] = set()
    if not isinstance(peercert, dict):
        return names
    for entry in peercert.get("subjectAltName", ()):
        if not (isinstance(entry, tuple) and len(entry) == 2):
            continue
        kind, value = entry
        if kind in ("DNS", "email", "URI"):
            names.add(str(value))
        elif kind == "IP Address":
            names.add(_normal_ip(str(value).strip()))
    return names


def _normal_ip(text: str) -> str:
    # ssl spells IPv6 addresses in full upper case; Go (and an operator) in the short form.
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return text


def _plain(status: int, reason: str, headers: Mapping[str, str]) -> web.Response:
    return web.Response(status=status, text=f"{status}: {reason}\n", headers=headers)


class _Rules:
    """What one WebConfig asks of every request, prepared once per config.

    The rate limiter and the basic auth checker (with its cache) carry over from the previous config's rules
    when their settings did not change, so a reload that only rotates a certificate resets neither.
    """

    def __init__(self, config: WebConfig, previous: _Rules | None = None) -> None:
        self.config = config
        self.headers = dict(config.headers)
        self.allowed_sans = (
            {_normal_ip(san) for san in config.tls.client_allowed_sans} if config.tls else set[str]()
        )
        self.rate = (config.rate_limit_interval, config.rate_limit_burst)
        self.limiter: _RateLimit | None
        if previous is not None and previous.rate == self.rate:
            self.limiter = previous.limiter
        else:
            self.limiter = _RateLimit(*self.rate) if config.rate_limit_interval else None
        self.auth: _BasicAuth | None
        if previous is not None and previous.config.basic_auth_users == config.basic_auth_users:
            self.auth = previous.auth
        else:
            self.auth = _BasicAuth(config.basic_auth_users) if config.basic_auth_users else None


def middleware(config: WebConfig | Callable[[], WebConfig], bearer_paths: tuple[str, ...] = ()) -> Middleware:
    """An aiohttp middleware enforcing the config on every request, whatever the path.

    In order: the client certificate's SAN (403), the rate limit (429), basic auth (401 with a
    `WWW-Authenticate` challenge); then the configured headers are added to every response, errors included.
    Put it first in `web.Application(middlewares=...)` so nothing runs before it.

    `config` is either the WebConfig to enforce or a function returning the one in force, called on every
    request (it must be cheap: an attribute read).

    A request under one of `bearer_paths` that carries a bearer token is not asked for basic auth: both
    would need the one `Authorization` header, and the handler there checks the token (a secret of its own).
    """
    current: Callable[[], WebConfig] = config if callable(config) else (lambda: config)
    rules = _Rules(current())

    @web.middleware
    async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
        nonlocal rules
        if current() is not rules.config:
            rules = _Rules(current(), rules)
        # This request keeps the rules it started with, whatever a reload does while it waits on bcrypt.
        ruled = rules
        headers = ruled.headers
        if ruled.allowed_sans:
            peercert = request.transport.get_extra_info("peercert") if request.transport else None
            if not _subject_alt_names(peercert) & ruled.allowed_sans:
                log.debug("rejected a client certificate without an allowed SAN", extra=_fields(request))
                response = _plain(403, "Forbidden", headers)
                response.force_close()
                return response
        if ruled.limiter is not None and not ruled.limiter.allow():
            return _plain(429, "Too Many Requests", headers)
        authorization = request.headers.get(hdrs.AUTHORIZATION)
        bearer = authorization is not None and authorization.split(" ", 1)[0].lower() == "bearer"
        if bearer and request.path.startswith(bearer_paths):
            pass  # the handler checks the bearer token
        elif ruled.auth is not None and not await ruled.auth.check(authorization):
            log.debug("rejected a request without valid basic auth credentials", extra=_fields(request))
            return _plain(401, "Unauthorized", {**headers, hdrs.WWW_AUTHENTICATE: WWW_AUTHENTICATE})
        try:
            served = await handler(request)
        except web.HTTPException as exc:  # 404, 405 and friends
            exc.headers.update(headers)
            raise
        if headers and not served.prepared:
            served.headers.update(headers)
        return served

    return guard


def header_hook(
    config: WebConfig | Callable[[], WebConfig],
) -> Callable[[web.Request, web.StreamResponse], Awaitable[None]]:
    """An `app.on_response_prepare` handler setting the configured headers on every response as it is sent.

    The middleware adds them only to a response its handler returns unsent; one the handler streams itself
    (/metrics) is sent before the middleware sees it. The toolkit sets them before any handler runs, so
    every response has them: append this to the app's `on_response_prepare` before the app starts.
    `config` is the WebConfig or a function returning the one in force, as for middleware().
    """
    current: Callable[[], WebConfig] = config if callable(config) else (lambda: config)

    async def add_headers(request: web.Request, response: web.StreamResponse) -> None:
        response.headers.update(current().headers)

    return add_headers


def _fields(request: web.Request) -> dict[str, Any]:
    # Only where the request came from and what it asked for: never its headers.
    return {"fields": {"remote": request.remote, "path": request.path}}


def middlewares(config: WebConfig, bearer_paths: tuple[str, ...] = ()) -> list[Middleware]:
    """What `create_app(..., middlewares=...)` needs for this config; empty when nothing is to be enforced."""
    if config.headers or config.basic_auth_users or config.rate_limit_interval:
        return [middleware(config, bearer_paths)]
    if config.tls is not None and config.tls.client_allowed_sans:
        return [middleware(config, bearer_paths)]
    return []
