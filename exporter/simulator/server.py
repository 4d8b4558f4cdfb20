"""The simulator's aiohttp server: every product's status and list actions, plus `/_sim` endpoints to steer
it."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from aiohttp import web

from exporter.catalogue.products import AUDIT_TRAIL, BY_NAME, Product
from exporter.credentials.signing import Credentials, ParsedAuthorization
from exporter.simulator import audit, gateway, instancetasks, joblists, listing
from exporter.simulator.answers import TaskView, shape_of
from exporter.simulator.errors import ApiError, request_id
from exporter.simulator.gateway import Quotas
from exporter.simulator.lateness import Lateness
from exporter.simulator.replies import Reply, delivered, refused
from exporter.simulator.scenario import Faults, SimTask, faults_from_dict, task_from_dict
from exporter.simulator.stats import Accounts, AccountStats, ActionStats, accepted_report, count

CONTROL_PREFIX: Final = "/_sim"


@dataclass
class _TaskState:
    task: SimTask
    added_at: float  # `clock`: drives the timeline
    added_wall: float  # `wall_clock`: anchors the times the answers show
    serial: int  # the order tasks were given in: the IDs a list shows beside the task's own


class Simulator:
    """Every product of the catalogue on one aiohttp server. All state lives on the loop that serves it.

    `clock` drives task timelines, quotas and statistics (monotonic seconds; inject a fake one to step
    through timelines without sleeping). Signature freshness and the StartTime/EndTime the answers show are
    wall-clock time (`wall_clock`), as on the real service. `quotas` overrides the catalogue's per-product
    rate limits (requests per second) of the status actions, `list_quotas` those of the list actions
    (PostgreSQL's list action is its status action, whose one quota both kinds of request spend).
    `allow_lateness` (by default: when `clock` is the real one) lets the quotas allow for the simulator's own
    loop holds, which bunch requests a client spaced out (lateness.py).

    `credentials` are the accounts whose keys sign requests (one secret id each); quotas are counted per
    secret id, and a task with an `owner` is only seen by that account. `region` makes the simulator one
    regional endpoint (`cdb.ap-shanghai.tencentcloudapi.com`): a request for another region is refused
    with `UnsupportedRegion`; None serves every region. Each account's accept times are kept for the last
    `history_seconds`, for `accepted_in`.
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
        list_quotas: Mapping[str, float] | None = None,
        region: str | None = None,
        history_seconds: float = 120.0,
        audit_quota: float | None = None,
        allow_lateness: bool | None = None,
    ) -> None:
        if speed <= 0:
            raise ValueError(f"speed must be > 0, got {speed}")
        if region is not None and (not isinstance(region, str) or not region.strip()):
            raise ValueError(f"region must be a region name or None, got {region!r}")
        self._credentials: dict[str, Credentials] = {}
        for given in credentials:
            if self._credentials.setdefault(given.secret_id, given) != given:
                raise ValueError(f"two different keys for secret id {given.secret_id!r}")
        self._region = region
        self._accounts = Accounts(history_seconds)
        self._quotas = Quotas(quotas, list_quotas)
        self._audit = audit.AuditService(audit_quota)  # CloudAudit's DescribeEvents (audit.py)
        # Its loop's recent holds, which its quotas allow for (lateness.py); by default only on the real
        # clock: with a scripted one, a request's time is the test's and the quota judges it strictly.
        self._lateness = Lateness()
        self._real_clock = clock is time.monotonic if allow_lateness is None else allow_lateness
        self._ticker: asyncio.Task[None] | None = None
        self._faults = Faults(latency=latency)
        self._action_faults: dict[tuple[str, str], Faults] = {}
        self._sweep_faults: dict[tuple[str, str], Faults] = {}  # only a sweep's requests (set_action_faults)
        self._serial = 0
        self._speed = speed
        self._max_clock_skew = max_clock_skew
        self._clock = clock
        self._wall_clock = wall_clock
        self._tasks: dict[tuple[str, str], _TaskState] = {}
        self._stats: dict[str, ActionStats] = {}
        self._served: dict[
            str, tuple[str, str]
        ] = {}  # stats key -> (product, action), for the by-product view
        self._runner: web.AppRunner | None = None

    # ---- scenario control

    def add_task(self, task: SimTask) -> None:
        """Adds (or replaces, restarting its timeline) a task; its phase times count from now."""
        self._serial += 1
        self._tasks[task.key] = _TaskState(task, self._clock(), self._wall_clock(), self._serial)

    def add_tasks(self, tasks: Sequence[SimTask]) -> None:
        for task in tasks:
            self.add_task(task)

    def remove_task(self, product: str, task_id: str) -> bool:
        return self._tasks.pop((product, task_id), None) is not None

    def set_task_faults(self, product: str, task_id: str, faults: Faults) -> None:
        """Replaces a task's faults without restarting its timeline; KeyError if it is unknown."""
        state = self._tasks[(product, task_id)]
        state.task = state.task.with_faults(faults)

    def set_faults(self, faults: Faults) -> None:
        """Replaces the faults applied to every API request."""
        self._faults = faults

    def set_action_faults(
        self, product: str, action: str, faults: Faults, *, sweeps_only: bool = False
    ) -> None:
        """Faults for every request to one action of one product (its status or list action), on top of the
        global ones; `Faults()` clears them. KeyError when the product has no such action.

        PostgreSQL's list action is its status action, so faults set on it hit both kinds of request, as
        SQL Server's instance task list does; `sweeps_only` keeps them to a sweep's requests
        (`gateway.is_sweep_request`), so status polling through the same action goes on untouched.
        """
        spec = BY_NAME.get(product)
        actions = {spec.action} if spec is not None else set()
        if spec is not None and spec.listing is not None:
            actions.add(spec.listing.action)
            if spec.listing.instances is not None:
                actions.add(spec.listing.instances.action)
        if product == AUDIT_TRAIL.service:
            actions.add(AUDIT_TRAIL.action)
        if action not in actions:
            raise KeyError(f"{product!r} has no action {action!r}")
        table = self._sweep_faults if sweeps_only else self._action_faults
        if faults == Faults():
            table.pop((product, action), None)
        else:
            table[(product, action)] = faults

    def set_latency(self, seconds: float) -> None:
        self._faults = dataclasses.replace(self._faults, latency=seconds)

    @property
    def faults(self) -> Faults:
        return self._faults

    @property
    def region(self) -> str | None:
        return self._region

    @property
    def secret_ids(self) -> tuple[str, ...]:
        """The accounts whose keys this simulator accepts."""
        return tuple(self._credentials)

    def reset_stats(self) -> None:
        self._stats.clear()
        self._served.clear()
        self._accounts.clear()
        self._lateness.reset()

    def accepted_in(self, secret_id: str, product: str, action: str, start: float, end: float) -> int:
        """Requests of the account `secret_id` to `product`'s `action` that its quota let through at
        `start <= t <= end` (`clock` readings within the last `history_seconds`)."""
        return self._accounts.accepted_in(secret_id, product, action, start, end)

    def stats(self) -> dict[str, Any]:
        """A JSON-able snapshot; times are `clock` readings, so rates come from their differences.

        `actions` is keyed by action for MariaDB and CDB (as it always was) and `product:Action` for the
        other products (requests no product offers: `<credential scope>:<action>`); `services` holds the
        same counters as `services[product][action]` for every product.
        `accounts[secret_id]["product:Action"]` holds one account's counters of one action
        (`AccountStats.snapshot`); `region` is the one region this simulator serves (None: every region).
        """
        by_product: dict[str, dict[str, Any]] = {}
        for key, (product, action) in sorted(self._served.items()):
            by_product.setdefault(product, {})[action] = self._stats[key].snapshot()
        return {
            "now": self._clock(),
            "speed": self._speed,
            "quotas": dict(self._quotas.rates),
            # The list actions with a quota of their own (PostgreSQL's spends its status quota).
            "list_quotas": dict(self._quotas.list_rates),
            "audit_quota": self._audit.quota,  # CloudAudit's DescribeEvents, per account
            # How much its quotas allowed for its own loop's holds (lateness.py): the largest slack used, and
            # the requests let through only thanks to it.
            "lateness": {"max_slack_s": self._lateness.max_slack, "lenient": self._lateness.lenient},
            "faults": dataclasses.asdict(self._faults),
            "action_faults": {
                f"{product}:{action}": dataclasses.asdict(faults)
                for (product, action), faults in sorted(self._action_faults.items())
            },
            "tasks": len(self._tasks),
            "actions": {key: s.snapshot() for key, s in sorted(self._stats.items())},
            # Keyed by product; still called `services`, as the README documents it for scripts reading it.
            "services": by_product,
            "region": self._region,
            "accounts": self._accounts.snapshot(),
        }

    # ---- serving

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/", self._handle_api)
        app.router.add_get(f"{CONTROL_PREFIX}/stats", self._handle_stats)
        app.router.add_post(f"{CONTROL_PREFIX}/stats/reset", self._handle_reset_stats)
        app.router.add_get(f"{CONTROL_PREFIX}/stats/accepted", self._handle_accepted)
        app.router.add_post(f"{CONTROL_PREFIX}/tasks", self._handle_add_tasks)
        app.router.add_delete(f"{CONTROL_PREFIX}/tasks/{{product}}/{{task_id}}", self._handle_remove_task)
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
        if self._real_clock:
            self._ticker = asyncio.ensure_future(self._lateness.run())
        bound_host, bound_port = runner.addresses[0][:2]
        return (
            f"http://[{bound_host}]:{bound_port}"
            if ":" in bound_host
            else f"http://{bound_host}:{bound_port}"
        )

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        ticker, self._ticker = self._ticker, None
        if ticker is not None:
            ticker.cancel()
            await asyncio.gather(ticker, return_exceptions=True)
        if runner is not None:
            await runner.cleanup()

    async def _handle_api(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        reply = self._answer(request.headers, request.query_string, body)
        if reply.latency > 0:
            await asyncio.sleep(reply.latency)
        return web.Response(status=reply.status, body=reply.body, content_type=reply.content_type)

    def _answer(self, headers: Mapping[str, str], query: str, body: bytes) -> Reply:
        """The reply to one API request; `headers` must look names up case-insensitively.

        Injected faults stand for a misbehaving backend, so they only hit requests the gateway let through
        (authenticated, within quota, well-formed); latency stands for the network and delays every reply.
        Global faults, then the action's, then the task's (status requests) apply.

        Requests signed with a known secret id are counted in that account's stats too (their errors even
        when the signature is wrong); a request for another region than this simulator's is refused before
        it spends quota.
        """
        routed = gateway.route(headers)
        if audit.is_audit_request(routed.authorization):
            return self._audit_answer(headers, query, body, routed.authorization)
        stats = self._stats_for(routed)
        claimed = routed.authorization.secret_id if routed.authorization is not None else ""
        account = self._account(claimed, routed)
        latency, faults = self._faults.latency, Faults()
        try:
            product, credentials = gateway.authenticate(
                headers, query, body, routed, self._credentials, self._wall_clock(), self._max_clock_skew
            )
            account = self._account(credentials.secret_id, routed)
            assert account is not None  # authenticated: a known secret id and a product's action
            region = headers.get("X-TC-Region", "").strip()
            if self._region is not None and region != self._region:
                account.wrong_region += 1
                raise ApiError(
                    "UnsupportedRegion",
                    f"The region `{region}` is not supported by this endpoint, which serves {self._region}.",
                )
            listing_api = routed.listing is not None
            self._quotas.admit(
                product,
                credentials.secret_id,
                self._clock(),
                stats,
                listing=listing_api,
                account=account,
                instances=routed.instances,
                lateness=self._lateness if self._real_clock else None,
            )
            params = gateway.read_params(body)
            action_faults = self._faults.combine(
                self._action_faults.get((product.name, routed.action), Faults())
            )
            if gateway.is_list_request(routed, params):
                faults = action_faults
                if gateway.is_sweep_request(routed, params):
                    faults = faults.combine(self._sweep_faults.get((product.name, routed.action), Faults()))
                latency = faults.latency
                reply = self._list(
                    product, params, region, faults, stats, credentials.secret_id, routed.instances
                )
            else:
                task_id = gateway.read_task_id(product, params)
                state = self._tasks.get((product.name, task_id))
                state = self._visible(state, region, account, credentials.secret_id)
                faults = action_faults.combine(state.task.faults) if state else action_faults
                latency = faults.latency
                reply = self._describe(product, task_id, state, faults, stats)
        except ApiError as error:
            reply = refused(error, stats, account)
        return delivered(reply, faults, stats, latency)

    def _audit_answer(
        self, headers: Mapping[str, str], query: str, body: bytes, authorization: ParsedAuthorization | None
    ) -> Reply:
        """A request to CloudAudit's DescribeEvents (audit.py): authenticated and counted as a product's, in
        a quota of its own; faults set on ("cloudaudit", "DescribeEvents") or globally apply."""
        service, action = AUDIT_TRAIL.service, AUDIT_TRAIL.action
        stats = self._stats.setdefault(audit.STATS_KEY, ActionStats())
        self._served[audit.STATS_KEY] = (service, action)
        latency, faults, account = self._faults.latency, Faults(), None
        try:
            credentials = audit.authenticate(
                headers,
                query,
                body,
                authorization,
                self._credentials,
                self._wall_clock(),
                self._max_clock_skew,
            )
            account = self._accounts.entry(credentials.secret_id, service, action, self._audit.quota)
            self._audit.admit(
                credentials.secret_id,
                self._clock(),
                stats,
                account,
                self._lateness if self._real_clock else None,
            )
            params = gateway.read_params(body)
            faults = self._faults.combine(self._action_faults.get((service, action), Faults()))
            latency = faults.latency
            reply = self._injected(faults, stats)
            if reply is None:
                region = headers.get("X-TC-Region", "").strip()
                tasks = self._audited(credentials.secret_id, region)
                response = self._audit.answer(params, tasks, self._wall_clock())
                if faults.missing_status:
                    count(stats.faults, "missing_status")
                    del response["ListOver"]  # what every page needs, as Status for a status parser
                response["RequestId"] = request_id()
                reply = Reply(body=json.dumps({"Response": response}).encode())
        except ApiError as error:
            reply = refused(error, stats, account)
        return delivered(reply, faults, stats, latency)

    def _audited(self, caller: str, region: str) -> list[audit.Audited]:
        """The tasks whose starting call the account's audit trail holds: audited products' tasks it may
        see that have begun (a task without a region is taken to be in the request's)."""
        now = self._clock()
        return [
            audit.Audited(
                BY_NAME[s.task.product],
                s.task.task_id,
                s.task.region or region,
                s.added_wall + s.task.started / self._speed,
                s.serial,
                s.task.task_type,
                s.task.instance_id,
            )
            for s in self._tasks.values()
            if BY_NAME[s.task.product].audit_events
            and s.task.owner in ("", caller)
            and (now - s.added_at) * self._speed >= s.task.started
        ]

    def _stats_for(self, routed: gateway.Route) -> ActionStats:
        if routed.product is not None:
            self._served[routed.stats_key] = (routed.product.name, routed.action)
        return self._stats.setdefault(routed.stats_key, ActionStats())

    def _account(self, secret_id: str, routed: gateway.Route) -> AccountStats | None:
        """The stats of a known account's requests to a product's action (the one whose quota they spend)."""
        product = routed.product
        if product is None or secret_id not in self._credentials:
            return None
        action, quota = self._quotas.bucket(
            product, listing=routed.listing is not None, instances=routed.instances
        )
        return self._accounts.entry(secret_id, product.name, action, quota)

    @staticmethod
    def _visible(
        state: _TaskState | None, region: str, account: AccountStats, secret_id: str
    ) -> _TaskState | None:
        """The task as the account sees it in `region`: another account's task, or one of another region,
        is unknown (counted as `foreign`, `wrong_region`)."""
        if state is None:
            return None
        task = state.task
        if task.owner and task.owner != secret_id:
            account.foreign += 1
            return None
        if task.region is not None and task.region != region:
            account.wrong_region += 1
            return None
        return state

    @staticmethod
    def _injected(faults: Faults, stats: ActionStats) -> Reply | None:
        """The reply an injected HTTP status stands for; an injected error code is raised."""
        if faults.http_status is not None:
            count(stats.faults, "http_status")
            return Reply(
                faults.http_status, f"{faults.http_status} simulated failure\n".encode(), "text/plain"
            )
        if faults.error_code is not None:
            count(stats.faults, "error_code")
            raise ApiError(faults.error_code)
        return None

    def _describe(
        self, product: Product, task_id: str, state: _TaskState | None, faults: Faults, stats: ActionStats
    ) -> Reply:
        injected = self._injected(faults, stats)
        if injected is not None:
            return injected
        shape = shape_of(product)
        if state is None:
            response = shape.not_found(product, task_id)
        else:
            if faults.missing_status:
                count(stats.faults, "missing_status")
            response = shape.answer(self._view(product, state), with_status=not faults.missing_status)
        response["RequestId"] = request_id()
        return Reply(body=json.dumps({"Response": response}).encode())

    def _list(
        self,
        product: Product,
        params: Mapping[str, Any],
        region: str,
        faults: Faults,
        stats: ActionStats,
        caller: str | None = None,
        instances: bool = False,
    ) -> Reply:
        """The product's list answer over its tasks listed in `region` (a task without one: in every one)
        that the account `caller` may see: its own and those without an owner (None: every task)."""
        injected = self._injected(faults, stats)
        if injected is not None:
            return injected
        now = self._clock()
        tasks = [
            listing.Listable(
                self._view(product, state, now),
                state.serial,
                began=(now - state.added_at) * self._speed >= state.task.started,
            )
            for state in self._tasks.values()
            if state.task.product == product.name
            and state.task.region in (None, region)
            and (caller is None or state.task.owner in ("", caller))
        ]
        assert product.listing is not None  # routed here for its list action
        request = listing.ListRequest(params, tasks, region, self._wall_clock())
        if product.listing.instances is not None:
            response = instancetasks.answer(instances, request)
        else:
            response = joblists.answer(product.listing, request)
        if faults.missing_status:
            # What every list parser needs, as Status is for a status parser.
            count(stats.faults, "missing_status")
            del response["TotalCount"]
        response["RequestId"] = request_id()
        return Reply(body=json.dumps({"Response": response}).encode())

    def _view(self, product: Product, state: _TaskState, now: float | None = None) -> TaskView:
        task = state.task
        now = self._clock() if now is None else now
        phase = task.phase_at((now - state.added_at) * self._speed)
        return TaskView(
            product,
            task,
            phase,
            started_at=state.added_wall + task.started / self._speed,
            phase_began_at=state.added_wall + phase.at / self._speed,
        )

    # ---- control endpoints

    async def _handle_stats(self, request: web.Request) -> web.StreamResponse:
        return web.json_response(self.stats())

    async def _handle_accepted(self, request: web.Request) -> web.StreamResponse:
        """One account's requests to one action accepted in an interval (`stats.accepted_report`)."""
        try:
            return web.json_response(accepted_report(self._accounts, request.query, self._clock()))
        except KeyError as missing:
            return web.json_response({"error": f"missing query parameter {missing}"}, status=400)
        except ValueError as exc:
            return web.json_response({"error": str(exc)}, status=400)

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
        removed = self.remove_task(request.match_info["product"], request.match_info["task_id"])
        return web.json_response({"removed": removed}, status=200 if removed else 404)

    async def _handle_faults(self, request: web.Request) -> web.StreamResponse:
        """Body: fault fields, plus `product` and `task_id` to target one task, or `product` and `action` to
        target one action (with `"sweeps_only": true`, only a sweep's requests to it), instead of every
        request."""
        target = "task"
        try:
            document = await request.json()
            if not isinstance(document, dict):
                raise ValueError("expected a JSON object")
            product, task_id = document.pop("product", None), document.pop("task_id", None)
            action, sweeps_only = document.pop("action", None), document.pop("sweeps_only", False) is True
            faults = faults_from_dict(document)
            if action is not None:
                if task_id is not None:
                    raise ValueError("target either a `task_id` or an `action`, not both")
                target = "action"
                self.set_action_faults(str(product), str(action), faults, sweeps_only=sweeps_only)
            elif product is None and task_id is None:
                self.set_faults(faults)
            else:
                self.set_task_faults(str(product), str(task_id), faults)
        except KeyError:
            return web.json_response({"error": f"no such {target}"}, status=404)
        except (ValueError, TypeError) as exc:
            return web.json_response({"error": str(exc)}, status=400)
        return web.json_response({"ok": True})
