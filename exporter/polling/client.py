"""The HTTP client for the Tencent Cloud API: one signed JSON POST, every outcome classified.

A call never raises for anything the network or the API can do: it returns an Outcome whose `code` is None on
success, the API's `Response.Error.Code`, or one of the `Transport.*` codes below.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from exporter import __version__
from exporter.catalogue.listapis import ListApi, Page
from exporter.catalogue.products import (
    NOT_FOUND,
    InvalidResponse,
    Observation,
    Product,
    TaskNotFound,
    api_text,
)
from exporter.credentials.bodies import ACCEPT_ENCODING, AnswerTooLarge, AnswerUnreadable, read_limited
from exporter.credentials.signing import Credentials, sign_headers
from exporter.polling.ratelimit import Ticket

# Stable codes for failures that never reached a Tencent Cloud error answer (docs/metrics-and-alerts.md).
TIMEOUT = "Transport.Timeout"
CONNECTION_ERROR = "Transport.ConnectionError"
HTTP_STATUS = "Transport.HTTPStatus"
INVALID_RESPONSE = "Transport.InvalidResponse"
# An answer over its size limit (as sent or once inflated): cut off unread, the task polled again later.
RESPONSE_TOO_LARGE = "Transport.ResponseTooLarge"
# No request was sent: the credential source (metadata service, STS) could not provide keys.
CREDENTIALS_UNAVAILABLE = "Exporter.CredentialsUnavailable"
# A bug or an input nobody foresaw raised inside one poll; counted, logged with its traceback, polled again.
INTERNAL_ERROR = "Exporter.InternalError"

_MAX_MESSAGE = 300

# The most one answer may weigh, as sent and once inflated (docs/metrics-and-alerts.md). A status answer names
# one task and weighs a few kilobytes; a list page holds at most 100 items of a few kilobytes each. Both are
# several times what real answers weigh (the simulator's fullest page fits a quarter: test_answer_limits),
# and low enough that the 16 pages a sweep may have in flight hold 32 MiB at most.
STATUS_ANSWER_BYTES = 256 * 1024
LIST_ANSWER_BYTES = 2 * 1024 * 1024


@dataclass(frozen=True)
class Outcome:
    code: str | None
    observation: Observation | None = None
    message: str = ""
    request_id: str = ""
    duration: float = 0.0

    @property
    def ok(self) -> bool:
        return self.code is None


def _envelope(status: int, body: bytes) -> tuple[dict[str, Any] | None, Outcome | None]:
    """The `Response` object of one HTTP answer, or the Outcome saying why there is none (an error)."""
    if status != 200:
        return None, Outcome(HTTP_STATUS, message=f"HTTP status {status}")
    try:
        document = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        return None, Outcome(INVALID_RESPONSE, message=f"body is not JSON: {exc}"[:_MAX_MESSAGE])
    except RecursionError:
        return None, Outcome(INVALID_RESPONSE, message="body is JSON nested too deeply")
    response = document.get("Response") if isinstance(document, dict) else None
    if not isinstance(response, dict):
        return None, Outcome(INVALID_RESPONSE, message="body has no Response object")
    request_id = response.get("RequestId")
    request_id = api_text(request_id, 100) if isinstance(request_id, str) else ""
    error = response.get("Error")
    if error is not None:
        code = error.get("Code") if isinstance(error, dict) else None
        if not isinstance(code, str) or not code:
            return None, Outcome(
                INVALID_RESPONSE, message="Response.Error has no Code", request_id=request_id
            )
        message = error.get("Message")
        text = message[:_MAX_MESSAGE] if isinstance(message, str) else ""
        return None, Outcome(
            api_text(code, _MAX_MESSAGE), message=api_text(text, _MAX_MESSAGE), request_id=request_id
        )
    return response, Outcome(None, request_id=request_id)


def classify(status: int, body: bytes, product: Product) -> Outcome:
    """Turns one HTTP answer into an Outcome; pure, so it is tested on arbitrary bytes."""
    response, outcome = _envelope(status, body)
    if response is None or outcome is None:
        return outcome or Outcome(INVALID_RESPONSE)
    try:
        observation = product.parse(response)
    except InvalidResponse as exc:
        return Outcome(INVALID_RESPONSE, message=str(exc), request_id=outcome.request_id)
    except TaskNotFound as exc:
        return Outcome(NOT_FOUND, message=str(exc), request_id=outcome.request_id)
    return Outcome(None, observation, request_id=outcome.request_id)


def classify_page(status: int, body: bytes, product: Product, listing: ListApi) -> PageOutcome:
    """One list API answer as a page of listed operations, or the error; pure like classify."""
    response, outcome = _envelope(status, body)
    if response is None or outcome is None:
        failed = outcome or Outcome(INVALID_RESPONSE)
        return PageOutcome(failed.code, message=failed.message, request_id=failed.request_id)
    try:
        page = listing.page(response, product.id_kind)
    except InvalidResponse as exc:
        return PageOutcome(INVALID_RESPONSE, message=str(exc), request_id=outcome.request_id)
    return PageOutcome(None, page, request_id=outcome.request_id)


@dataclass(frozen=True)
class PageOutcome:
    """One page of a list API: `code` is None with the page, or the error as in Outcome."""

    code: str | None
    page: Page | None = None
    message: str = ""
    request_id: str = ""
    duration: float = 0.0


def api_session() -> aiohttp.ClientSession:
    """The HTTP session API calls go over (the daemon's, and a one-shot command's); the caller closes it.

    No connection cap: the callers bound concurrency themselves (per-task slots), and a hidden lower cap would
    throttle below the quota. Proxies come from ApiClient._proxy, read once, not trust_env per request."""
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0, keepalive_timeout=30),
        trust_env=False,
        headers={"User-Agent": f"tencentcloud-task-exporter/{__version__}"},
        trace_configs=[_send_time_trace()],
    )


async def _body_sent(
    session: aiohttp.ClientSession, context: Any, params: aiohttp.TraceRequestChunkSentParams
) -> None:
    ticket = context.trace_request_ctx
    if isinstance(ticket, Ticket):
        ticket.left()


def _send_time_trace() -> aiohttp.TraceConfig:
    """Tells a request's Ticket when its body is written: aiohttp calls this hook in the same step as the
    socket write (on Python 3.11 the write runs in a task of its own, one loop turn after the post), so the
    token bucket counts the request from when it really left, a stall in between included."""
    trace = aiohttp.TraceConfig()
    trace.on_request_chunk_sent.append(_body_sent)
    return trace


class ApiClient:
    """Calls the APIs over one keep-alive session; owned and closed by the caller."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        timeout: float,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._session = session
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._wall_clock = wall_clock
        self._proxies: dict[str, str | None] = {}

    def _proxy(self, endpoint: str) -> str | None:
        """HTTP(S)_PROXY / NO_PROXY for this endpoint, read once. The session's own trust_env would look
        for ~/.netrc in a worker thread on every request, which measured as 44% of the CPU per request."""
        if endpoint not in self._proxies:
            proxies = urllib.request.getproxies_environment()
            host = urlsplit(endpoint).hostname or ""
            bypass = bool(proxies) and bool(urllib.request.proxy_bypass(host))
            self._proxies[endpoint] = None if bypass else proxies.get(urlsplit(endpoint).scheme)
        return self._proxies[endpoint]

    def set_timeout(self, timeout: float) -> None:
        self._timeout = aiohttp.ClientTimeout(total=timeout)

    async def describe(
        self,
        product: Product,
        endpoint: str,
        region: str,
        credentials: Credentials,
        task_id: str,
        ticket: Ticket | None = None,
    ) -> Outcome:
        started = time.perf_counter()
        answer = await self._post(
            product.api_service,
            product.action,
            product.version,
            endpoint,
            region,
            credentials,
            product.payload(task_id),
            STATUS_ANSWER_BYTES,
            ticket,
        )
        outcome = answer if isinstance(answer, Outcome) else classify(*answer, product)
        return dataclasses.replace(outcome, duration=time.perf_counter() - started)

    async def list_page(
        self,
        product: Product,
        endpoint: str,
        region: str,
        credentials: Credentials,
        payload: dict[str, Any],
        ticket: Ticket | None = None,
    ) -> PageOutcome:
        """One page of the product's list API (`product.listing`, which must be set)."""
        listing = product.listing
        if listing is None:
            raise ValueError(f"{product.name} has no list API")
        started = time.perf_counter()
        answer = await self._post(
            product.api_service,
            listing.action,
            listing.version,
            endpoint,
            region,
            credentials,
            payload,
            LIST_ANSWER_BYTES,
            ticket,
        )
        if isinstance(answer, Outcome):
            outcome = PageOutcome(answer.code, message=answer.message)
        else:
            outcome = classify_page(*answer, product, listing)
        return dataclasses.replace(outcome, duration=time.perf_counter() - started)

    async def _post(
        self,
        service: str,
        action: str,
        version: str,
        endpoint: str,
        region: str,
        credentials: Credentials,
        payload: dict[str, Any],
        limit: int,
        ticket: Ticket | None = None,
    ) -> tuple[int, bytes] | Outcome:
        """The HTTP status and body (at most `limit` bytes, as sent and inflated) of one signed call, or the
        transport failure as an Outcome.

        `ticket` is the token bucket's count of this request: nothing here awaits before the post, and the
        session's trace hook moves the count to when the body is written (api_session)."""
        body = json.dumps(payload, separators=(",", ":")).encode("utf-8")
        headers = sign_headers(
            credentials,
            service=service,
            host=urlsplit(endpoint).netloc,
            action=action,
            version=version,
            region=region,
            timestamp=int(self._wall_clock()),
            payload=body,
        )
        headers["Accept-Encoding"] = ACCEPT_ENCODING
        try:
            async with self._session.post(
                endpoint + "/",
                data=body,
                headers=headers,
                timeout=self._timeout,
                proxy=self._proxy(endpoint),
                auto_decompress=False,  # inflated by read_limited, within the limit
                trace_request_ctx=ticket,
            ) as response:
                return response.status, await read_limited(response, limit)
        except AnswerTooLarge as exc:
            return Outcome(RESPONSE_TOO_LARGE, message=str(exc)[:_MAX_MESSAGE])
        except AnswerUnreadable as exc:
            return Outcome(INVALID_RESPONSE, message=str(exc)[:_MAX_MESSAGE])
        except TimeoutError:
            return Outcome(TIMEOUT, message=f"no answer within {self._timeout.total:g}s")
        except aiohttp.ClientPayloadError as exc:
            return Outcome(INVALID_RESPONSE, message=f"truncated body: {exc}"[:_MAX_MESSAGE])
        except (aiohttp.ClientError, OSError) as exc:
            return Outcome(CONNECTION_ERROR, message=f"{type(exc).__name__}: {exc}"[:_MAX_MESSAGE])
        except asyncio.CancelledError:
            raise
