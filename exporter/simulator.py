"""A local stand-in for the two Tencent Cloud APIs the exporter polls, for tests, benchmarks and `--demo`.

One aiohttp server answers both MariaDB `DescribeFlow` and CDB `DescribeAsyncRequestInfo` the way the real
endpoints do: TC3-HMAC-SHA256 signatures are verified from the received bytes, each action's per-second quota
is enforced, and errors come back as HTTP 200 with a Tencent error code. Tasks follow scripted status
timelines, and faults (latency, HTTP errors, broken JSON, error codes, missing fields) can be injected so the
exporter's failure handling can be exercised end to end.

The API definitions below are deliberately not shared with `exporter.services`: the simulator plays the
server, and a mistake copied into both sides would let the client and the stand-in agree on a wrong protocol.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import hashlib
import hmac
import json
import logging
import signal
import sys
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Final, TypeVar

from aiohttp import web

from exporter.signing import (
    SIGNED_HEADERS,
    Credentials,
    canonical_request,
    parse_authorization,
    signature,
    string_to_sign,
    utc_date,
)

log = logging.getLogger("exporter.simulator")  # stable even when run as __main__

Status = int | str | None
_T = TypeVar("_T")

CONTROL_PREFIX: Final = "/_sim"
_JSON: Final = "application/json"
_WINDOW: Final = 1.0  # quotas are "requests per second"


@dataclass(frozen=True)
class ApiSpec:
    service: str
    action: str
    version: str
    id_param: str
    id_type: type
    not_found: str
    default_quota: float


MARIADB: Final = ApiSpec(
    "mariadb", "DescribeFlow", "2017-03-12", "FlowId", int, "InvalidParameter.FlowNotFound", 20.0
)
CDB: Final = ApiSpec(
    "cdb",
    "DescribeAsyncRequestInfo",
    "2017-03-20",
    "AsyncRequestId",
    str,
    "InvalidParameter.InvalidAsyncRequestId",
    40.0,
)
BY_ACTION: Final[Mapping[str, ApiSpec]] = {spec.action: spec for spec in (MARIADB, CDB)}
BY_SERVICE: Final[Mapping[str, ApiSpec]] = {spec.service: spec for spec in (MARIADB, CDB)}

# Messages for codes a test may inject by name; anything else gets a generic one.
_MESSAGES: Final[Mapping[str, str]] = {
    "InternalError": "An internal error has occurred. Retry your request later.",
    "InternalError.DbOperationFailed": "Failed to query the database.",
    "InternalError.UndefinedError": "Unknown error.",
    "CdbError.TaskError": "Backend task error.",
    "RequestLimitExceeded": "The number of requests exceeds the frequency limit.",
    "ResourceUnavailable": "The resource is unavailable.",
    "UnauthorizedOperation.PermissionDenied": "You have no permission to call this API.",
    "AuthFailure.UnauthorizedOperation": "The request is not authorized by CAM.",
    "OperationDenied.UserHasNoStrategy": "This account is not authorized to access the requested resource.",
}


class ApiError(Exception):
    """An answer in Tencent's error envelope (HTTP 200, `Response.Error`)."""

    def __init__(self, code: str, message: str | None = None) -> None:
        super().__init__(code)
        self.code = code
        self.message = message or _MESSAGES.get(code, f"Simulated error {code}.")


# --------------------------------------------------------------------------------------------- tasks


@dataclass(frozen=True)
class Phase:
    """From `at` seconds (task time, before `speed` scaling) on, the task reports `status` and `info`."""

    at: float
    status: Status
    info: str | None = None


@dataclass(frozen=True)
class Faults:
    """Misbehaviour to inject; HTTP status wins over malformed JSON, which wins over an error code."""

    latency: float = 0.0
    http_status: int | None = None
    malformed: bool = False
    error_code: str | None = None
    missing_status: bool = False

    def __post_init__(self) -> None:
        if self.latency < 0:
            raise ValueError(f"latency must be >= 0, got {self.latency}")
        if self.http_status is not None and not 100 <= self.http_status <= 599:
            raise ValueError(f"http_status must be an HTTP status code, got {self.http_status}")

    def combine(self, other: Faults) -> Faults:
        """Both sets at once: latencies add up, `other` wins where both choose a response."""
        return Faults(
            latency=self.latency + other.latency,
            http_status=other.http_status or self.http_status,
            malformed=self.malformed or other.malformed,
            error_code=other.error_code or self.error_code,
            missing_status=self.missing_status or other.missing_status,
        )


_FAULT_FIELDS: Final = tuple(f.name for f in dataclasses.fields(Faults))


@dataclass(frozen=True)
class SimTask:
    service: str
    task_id: str
    phases: tuple[Phase, ...]
    latency: float = 0.0
    http_status: int | None = None
    malformed: bool = False
    error_code: str | None = None
    missing_status: bool = False

    def __post_init__(self) -> None:
        spec = BY_SERVICE.get(self.service)
        if spec is None:
            raise ValueError(f"unknown service {self.service!r}; expected one of {sorted(BY_SERVICE)}")
        if not self.phases:
            raise ValueError(f"{self.service} task {self.task_id}: needs at least one phase")
        for phase in self.phases:
            _check_status(spec, phase.status, f"{self.service} task {self.task_id}")
        _ = self.faults  # Faults.__post_init__ validates the fault fields

    @property
    def key(self) -> tuple[str, str]:
        return (self.service, self.task_id)

    @property
    def faults(self) -> Faults:
        return Faults(**{name: getattr(self, name) for name in _FAULT_FIELDS})

    def with_faults(self, faults: Faults) -> SimTask:
        return dataclasses.replace(self, **dataclasses.asdict(faults))

    def phase_at(self, elapsed: float) -> Phase:
        """The latest phase already reached; before the first one, the first one."""
        reached = [p for p in self.phases if p.at <= elapsed]
        return max(reached, key=lambda p: p.at) if reached else min(self.phases, key=lambda p: p.at)


def _check_status(spec: ApiSpec, status: object, where: str) -> None:
    if status is None:
        return
    if spec is MARIADB and (isinstance(status, bool) or not isinstance(status, int)):
        raise ValueError(f"{where}: a MariaDB flow status is an integer or None, got {status!r}")
    if spec is CDB and not isinstance(status, str):
        raise ValueError(f"{where}: a CDB async request status is a string or None, got {status!r}")


def task_from_dict(data: Mapping[str, Any]) -> SimTask:
    """Builds a task from its JSON form (the shape `task_to_dict` produces); raises ValueError."""
    unknown = set(data) - {"service", "task_id", "phases", *_FAULT_FIELDS}
    if unknown:
        raise ValueError(f"unknown task keys: {sorted(unknown)}")
    try:
        raw_phases = data["phases"]
        phases = tuple(
            Phase(at=float(p["at"]), status=p.get("status"), info=p.get("info")) for p in raw_phases
        )
        faults = faults_from_dict({k: v for k, v in data.items() if k in _FAULT_FIELDS})
        return SimTask(str(data["service"]), str(data["task_id"]), phases).with_faults(faults)
    except (KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"malformed task {dict(data)!r}: {exc!r}") from exc


def task_to_dict(task: SimTask) -> dict[str, Any]:
    return dataclasses.asdict(task)


def faults_from_dict(data: Mapping[str, Any]) -> Faults:
    unknown = set(data) - set(_FAULT_FIELDS)
    if unknown:
        raise ValueError(f"unknown fault keys: {sorted(unknown)}")
    http_status = data.get("http_status")
    error_code = data.get("error_code")
    return Faults(
        latency=float(data.get("latency", 0.0)),
        http_status=None if http_status is None else int(http_status),
        malformed=bool(data.get("malformed", False)),
        error_code=None if error_code is None else str(error_code),
        missing_status=bool(data.get("missing_status", False)),
    )


def load_scenario(path: Path) -> list[SimTask]:
    """Tasks from a JSON file holding either a list of tasks or `{"tasks": [...]}`."""
    document = json.loads(path.read_text(encoding="utf-8"))
    entries = document.get("tasks") if isinstance(document, dict) else document
    if not isinstance(entries, list):
        raise ValueError(f"{path}: expected a list of tasks or an object with a `tasks` list")
    return [task_from_dict(entry) for entry in entries]


# --------------------------------------------------------------------------------------------- stats


@dataclass
class _ActionStats:
    accepted: int = 0
    throttled: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    faults: dict[str, int] = field(default_factory=dict)
    max_in_window: int = 0
    first_accepted: float | None = None
    last_accepted: float | None = None
    # Accepted requests from every caller, to report the busiest second the server saw.
    window: deque[float] = field(default_factory=deque)

    def snapshot(self) -> dict[str, Any]:
        return {
            "accepted": self.accepted,
            "throttled": self.throttled,
            "errors": dict(self.errors),
            "faults": dict(self.faults),
            "max_in_window": self.max_in_window,
            "first_accepted": self.first_accepted,
            "last_accepted": self.last_accepted,
        }


def _slide(window: deque[float], now: float) -> None:
    while window and window[0] <= now - _WINDOW:
        window.popleft()


# --------------------------------------------------------------------------------------------- server


@dataclass(frozen=True)
class _Reply:
    status: int = 200
    body: bytes = b""
    content_type: str = _JSON
    latency: float = 0.0


@dataclass
class _TaskState:
    task: SimTask
    added_at: float


class Simulator:
    """Both APIs on one aiohttp server. All state lives on the event loop that serves it.

    `clock` drives task timelines, quotas and statistics (monotonic seconds; inject a fake one to step
    through timelines without sleeping). Signature freshness is checked against the wall clock, as the
    real service does.
    """

    def __init__(
        self,
        credentials: Sequence[Credentials],
        quotas: Mapping[str, float] | None = None,
        latency: float = 0.0,
        speed: float = 1.0,
        max_clock_skew: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        if speed <= 0:
            raise ValueError(f"speed must be > 0, got {speed}")
        unknown = set(quotas or {}) - set(BY_SERVICE)
        if unknown:
            raise ValueError(f"quotas for unknown services: {sorted(unknown)}")
        self._credentials = {c.secret_id: c for c in credentials}
        self._quotas = {
            s.service: float((quotas or {}).get(s.service, s.default_quota)) for s in BY_ACTION.values()
        }
        self._faults = Faults(latency=latency)
        self._speed = speed
        self._max_clock_skew = max_clock_skew
        self._clock = clock
        self._wall_clock = wall_clock
        self._tasks: dict[tuple[str, str], _TaskState] = {}
        self._windows: dict[tuple[str, str], deque[float]] = {}
        self._stats: dict[str, _ActionStats] = {}
        self._runner: web.AppRunner | None = None

    # ---- scenario control

    def add_task(self, task: SimTask) -> None:
        """Adds (or replaces, restarting its timeline) a task; its phase times count from now."""
        self._tasks[task.key] = _TaskState(task, self._clock())

    def add_tasks(self, tasks: Sequence[SimTask]) -> None:
        for task in tasks:
            self.add_task(task)

    def remove_task(self, service: str, task_id: str) -> bool:
        return self._tasks.pop((service, task_id), None) is not None

    def set_task_faults(self, service: str, task_id: str, faults: Faults) -> None:
        """Replaces a task's faults without restarting its timeline; KeyError if it is unknown."""
        state = self._tasks[(service, task_id)]
        state.task = state.task.with_faults(faults)

    def set_faults(self, faults: Faults) -> None:
        """Replaces the faults applied to every API request."""
        self._faults = faults

    def set_latency(self, seconds: float) -> None:
        self._faults = dataclasses.replace(self._faults, latency=seconds)

    @property
    def faults(self) -> Faults:
        return self._faults

    def reset_stats(self) -> None:
        self._stats.clear()

    def stats(self) -> dict[str, Any]:
        """A JSON-able snapshot; times are `clock` readings, so rates come from their differences."""
        return {
            "now": self._clock(),
            "speed": self._speed,
            "quotas": dict(self._quotas),
            "faults": dataclasses.asdict(self._faults),
            "tasks": len(self._tasks),
            "actions": {action: s.snapshot() for action, s in sorted(self._stats.items())},
        }

    # ---- serving

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/", self._handle_api)
        app.router.add_get(f"{CONTROL_PREFIX}/stats", self._handle_stats)
        app.router.add_post(f"{CONTROL_PREFIX}/stats/reset", self._handle_reset_stats)
        app.router.add_post(f"{CONTROL_PREFIX}/tasks", self._handle_add_tasks)
        app.router.add_delete(f"{CONTROL_PREFIX}/tasks/{{service}}/{{task_id}}", self._handle_remove_task)
        app.router.add_post(f"{CONTROL_PREFIX}/faults", self._handle_faults)
        return app

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Starts listening (port 0: the OS picks a free one) and returns the base URL."""
        if self._runner is not None:
            raise RuntimeError("simulator already started")
        # A short shutdown timeout: requests held by injected latency must not stall stop().
        runner = web.AppRunner(self.app(), access_log=None, shutdown_timeout=0.5)
        await runner.setup()
        try:
            await web.TCPSite(runner, host, port).start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        bound_host, bound_port = runner.addresses[0][:2]
        return (
            f"http://[{bound_host}]:{bound_port}"
            if ":" in bound_host
            else f"http://{bound_host}:{bound_port}"
        )

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def _handle_api(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        reply = self._answer(request.headers, request.query_string, body)
        if reply.latency > 0:
            await asyncio.sleep(reply.latency)
        return web.Response(status=reply.status, body=reply.body, content_type=reply.content_type)

    def _answer(self, headers: Mapping[str, str], query: str, body: bytes) -> _Reply:
        """The reply to one API request; `headers` must look names up case-insensitively.

        Injected faults stand for a misbehaving backend, so they only hit requests the gateway let through
        (authenticated, within quota, well-formed); latency stands for the network and delays every reply.
        """
        action = headers.get("X-TC-Action", "")
        stats = self._stats_for(action)
        latency, faults = self._faults.latency, Faults()
        try:
            spec, credentials = self._authenticate(headers, query, body)
            self._admit(spec, credentials.secret_id, stats)
            task_id = _task_id(spec, body)
            state = self._tasks.get((spec.service, task_id))
            faults = self._faults.combine(state.task.faults) if state else self._faults
            latency = faults.latency
            reply = self._describe(spec, task_id, state, faults, stats)
        except ApiError as error:
            _count(stats.errors, error.code)
            reply = _error_reply(error)
        if faults.malformed and reply.content_type == _JSON:
            _count(stats.faults, "malformed")
            reply = dataclasses.replace(reply, body=reply.body[: len(reply.body) // 2])
        return dataclasses.replace(reply, latency=latency)

    def _stats_for(self, action: str) -> _ActionStats:
        return self._stats.setdefault(action, _ActionStats())

    def _authenticate(
        self, headers: Mapping[str, str], query: str, body: bytes
    ) -> tuple[ApiSpec, Credentials]:
        """Common parameters, then the signature, checked as the docs for Signature v3 describe."""
        spec = BY_ACTION.get(_required(headers, "X-TC-Action", "Action"))
        if spec is None:
            raise ApiError(
                "InvalidAction", f"The requested action `{headers['X-TC-Action']}` does not exist."
            )
        version = _required(headers, "X-TC-Version", "Version")
        if version != spec.version:
            raise ApiError(
                "NoSuchVersion",
                f"The requested version `{version}` of service `{spec.service}` does not exist.",
            )
        _required(headers, "X-TC-Region", "Region")
        raw_timestamp = _required(headers, "X-TC-Timestamp", "Timestamp")
        if not raw_timestamp.isdigit():
            raise ApiError(
                "InvalidParameterValue", f"The value `{raw_timestamp}` of parameter `Timestamp` is not valid."
            )
        timestamp = int(raw_timestamp)

        parsed = parse_authorization(headers.get("Authorization", ""))
        if parsed is None:
            raise ApiError(
                "AuthFailure.InvalidAuthorization", "The request `Authorization` header is invalid."
            )
        signed = parsed.signed_headers.split(";")
        if "content-type" not in signed or "host" not in signed:
            raise ApiError(
                "AuthFailure.InvalidAuthorization", "`SignedHeaders` must include `content-type;host`."
            )
        if parsed.service != spec.service:
            raise ApiError("AuthFailure.InvalidAuthorization", "`Service` in Credential not valid.")
        if parsed.date != utc_date(timestamp):
            raise ApiError(
                "AuthFailure.InvalidAuthorization", "`Date` in Credential does not match X-TC-Timestamp."
            )
        credentials = self._credentials.get(parsed.secret_id)
        if credentials is None:
            raise ApiError(
                "AuthFailure.SecretIdNotFound", "The SecretId is not found, please ensure that it exists."
            )
        if abs(self._wall_clock() - timestamp) > self._max_clock_skew:
            raise ApiError(
                "AuthFailure.SignatureExpire",
                f"Signature expired: X-TC-Timestamp {timestamp} is more than "
                f"{self._max_clock_skew:g}s away from the server time.",
            )
        canonical = _canonical(parsed.signed_headers, headers, query, body)
        expected = signature(
            credentials.secret_key,
            timestamp,
            spec.service,
            string_to_sign(timestamp, spec.service, canonical),
        )
        if not hmac.compare_digest(expected, parsed.signature):
            raise ApiError(
                "AuthFailure.SignatureFailure",
                "The provided credentials could not be validated. Please check your signature is correct.",
            )
        if not hmac.compare_digest(headers.get("X-TC-Token", ""), credentials.token):
            raise ApiError("AuthFailure.TokenFailure", "The security token is invalid or missing.")
        return spec, credentials

    def _admit(self, spec: ApiSpec, secret_id: str, stats: _ActionStats) -> None:
        """Sliding one-second window of accepted requests per (secret id, action)."""
        now = self._clock()
        quota = self._quotas[spec.service]
        window = self._windows.setdefault((secret_id, spec.action), deque())
        _slide(window, now)
        if len(window) >= quota:
            stats.throttled += 1
            raise ApiError(
                "RequestLimitExceeded",
                f"Your current request rate exceeds the limit of {quota:g} requests per second "
                f"for {spec.action}. Please reduce the frequency of calls.",
            )
        window.append(now)
        stats.accepted += 1
        stats.first_accepted = now if stats.first_accepted is None else stats.first_accepted
        stats.last_accepted = now
        _slide(stats.window, now)
        stats.window.append(now)
        stats.max_in_window = max(stats.max_in_window, len(stats.window))

    def _describe(
        self, spec: ApiSpec, task_id: str, state: _TaskState | None, faults: Faults, stats: _ActionStats
    ) -> _Reply:
        if faults.http_status is not None:
            _count(stats.faults, "http_status")
            return _Reply(
                faults.http_status, f"{faults.http_status} simulated failure\n".encode(), "text/plain"
            )
        if faults.error_code is not None:
            _count(stats.faults, "error_code")
            raise ApiError(faults.error_code)
        if state is None:
            raise ApiError(spec.not_found, f"The {spec.id_param} `{task_id}` was not found.")
        phase = state.task.phase_at((self._clock() - state.added_at) * self._speed)
        response: dict[str, Any] = {"Status": phase.status}
        if spec is CDB:
            response["Info"] = phase.info
        if faults.missing_status:
            _count(stats.faults, "missing_status")
            del response["Status"]
        response["RequestId"] = str(uuid.uuid4())
        return _Reply(body=json.dumps({"Response": response}).encode())

    # ---- control endpoints

    async def _handle_stats(self, request: web.Request) -> web.StreamResponse:
        return web.json_response(self.stats())

    async def _handle_reset_stats(self, request: web.Request) -> web.StreamResponse:
        self.reset_stats()
        return web.json_response({"ok": True})

    async def _handle_add_tasks(self, request: web.Request) -> web.StreamResponse:
        try:
            document = await request.json()
            entries = document.get("tasks") if isinstance(document, dict) else document
            if not isinstance(entries, list):
                raise ValueError("expected a JSON list of tasks or an object with a `tasks` list")
            tasks = [task_from_dict(entry) for entry in entries]
        except ValueError as exc:  # json.JSONDecodeError is a ValueError
            return web.json_response({"error": str(exc)}, status=400)
        self.add_tasks(tasks)
        return web.json_response({"added": len(tasks)})

    async def _handle_remove_task(self, request: web.Request) -> web.StreamResponse:
        removed = self.remove_task(request.match_info["service"], request.match_info["task_id"])
        return web.json_response({"removed": removed}, status=200 if removed else 404)

    async def _handle_faults(self, request: web.Request) -> web.StreamResponse:
        """Body: fault fields, plus `service` and `task_id` to target one task instead of every request."""
        try:
            document = await request.json()
            if not isinstance(document, dict):
                raise ValueError("expected a JSON object")
            service, task_id = document.pop("service", None), document.pop("task_id", None)
            faults = faults_from_dict(document)
            if service is None and task_id is None:
                self.set_faults(faults)
            else:
                self.set_task_faults(str(service), str(task_id), faults)
        except KeyError:
            return web.json_response({"error": "no such task"}, status=404)
        except (ValueError, TypeError) as exc:
            return web.json_response({"error": str(exc)}, status=400)
        return web.json_response({"ok": True})


def _required(headers: Mapping[str, str], header: str, parameter: str) -> str:
    value = headers.get(header, "").strip()
    if not value:
        raise ApiError("MissingParameter", f"The request is missing a required parameter `{parameter}`.")
    return value


def _canonical(signed_headers: str, headers: Mapping[str, str], query: str, body: bytes) -> str:
    content_type, host = headers.get("Content-Type", ""), headers.get("Host", "")
    if signed_headers == SIGNED_HEADERS:
        return canonical_request("POST", host, content_type, body, query)
    # Clients may sign extra headers (the docs allow it, values lowercased); rebuild the canonical form.
    lines = "".join(f"{name}:{headers.get(name, '').strip().lower()}\n" for name in signed_headers.split(";"))
    return f"POST\n/\n{query}\n{lines}\n{signed_headers}\n{hashlib.sha256(body).hexdigest()}"


def _task_id(spec: ApiSpec, body: bytes) -> str:
    try:
        params = json.loads(body) if body.strip() else {}
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError("InvalidParameter", "The request body is not valid JSON.") from exc
    if not isinstance(params, dict):
        raise ApiError("InvalidParameter", "The request body must be a JSON object.")
    for name in params:
        if name != spec.id_param:
            raise ApiError("UnknownParameter", f"The parameter `{name}` is not recognized.")
    if spec.id_param not in params:
        raise ApiError("MissingParameter", f"The request is missing a required parameter `{spec.id_param}`.")
    value = params[spec.id_param]
    if isinstance(value, bool) or not isinstance(value, spec.id_type):
        expected = "Integer" if spec.id_type is int else "String"
        raise ApiError(
            "InvalidParameter", f"The value type of parameter `{spec.id_param}` must be {expected}."
        )
    return str(value)


def _error_reply(error: ApiError) -> _Reply:
    envelope = {
        "Response": {
            "Error": {"Code": error.code, "Message": error.message},
            "RequestId": str(uuid.uuid4()),
        }
    }
    return _Reply(body=json.dumps(envelope).encode())


def _count(counter: dict[str, int], key: str) -> None:
    counter[key] = counter.get(key, 0) + 1


# --------------------------------------------------------------------------------------------- thread


class SimulatorThread:
    """Runs a Simulator on its own event loop in a background thread, for synchronous code and benchmarks.

    Every method hops onto that loop, so the simulator's state is only ever touched from one thread.
    """

    def __init__(
        self, simulator: Simulator, host: str = "127.0.0.1", port: int = 0, timeout: float = 10.0
    ) -> None:
        self.simulator = simulator
        self._host, self._port, self._timeout = host, port, timeout
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._url: str | None = None

    @property
    def url(self) -> str:
        if self._url is None:
            raise RuntimeError("simulator thread is not running")
        return self._url

    def __enter__(self) -> SimulatorThread:
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=self._run_loop, args=(loop,), name="simulator", daemon=True)
        self._loop, self._thread = loop, thread
        thread.start()
        try:
            future = asyncio.run_coroutine_threadsafe(self.simulator.start(self._host, self._port), loop)
            self._url = future.result(self._timeout)
        except BaseException:
            self._shutdown()
            raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._shutdown()

    def _shutdown(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        try:
            if loop.is_running():
                asyncio.run_coroutine_threadsafe(self.simulator.stop(), loop).result(self._timeout)
        finally:
            if not loop.is_closed():
                loop.call_soon_threadsafe(loop.stop)
            thread.join(self._timeout)
            self._loop = self._thread = self._url = None

    @staticmethod
    def _run_loop(loop: asyncio.AbstractEventLoop) -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    def _call(self, fn: Callable[[], _T]) -> _T:
        if self._loop is None:
            raise RuntimeError("simulator thread is not running")

        async def run() -> _T:
            return fn()

        return asyncio.run_coroutine_threadsafe(run(), self._loop).result(self._timeout)

    def stats(self) -> dict[str, Any]:
        return self._call(self.simulator.stats)

    def reset_stats(self) -> None:
        self._call(self.simulator.reset_stats)

    def add_task(self, task: SimTask) -> None:
        self._call(lambda: self.simulator.add_task(task))

    def remove_task(self, service: str, task_id: str) -> bool:
        return self._call(lambda: self.simulator.remove_task(service, task_id))

    def set_latency(self, seconds: float) -> None:
        self._call(lambda: self.simulator.set_latency(seconds))

    def set_faults(self, faults: Faults) -> None:
        self._call(lambda: self.simulator.set_faults(faults))

    def set_task_faults(self, service: str, task_id: str, faults: Faults) -> None:
        self._call(lambda: self.simulator.set_task_faults(service, task_id, faults))


# --------------------------------------------------------------------------------------------- CLI


def _listen_address(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {value!r}")
    return host.strip("[]") or "127.0.0.1", int(port)


def _quota(value: str) -> tuple[str, float]:
    service, sep, rate = value.partition("=")
    try:
        if not sep or service not in BY_SERVICE:
            raise ValueError
        return service, float(rate)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected SERVICE=RATE with SERVICE in {sorted(BY_SERVICE)}"
        ) from None


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m exporter.simulator",
        description="Serve simulated MariaDB DescribeFlow and CDB DescribeAsyncRequestInfo APIs.",
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
    # Imported here: the demo scenario is built from this module's types.
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


if __name__ == "__main__":
    sys.exit(main())
