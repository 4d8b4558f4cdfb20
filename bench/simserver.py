"""The simulator as its own process for the benchmark, with an exactly known epoch.

`exporter.simulator.Simulator` stamps each task with its clock reading when the task is added. Here the clock
is held still while the whole workload is added, so every timeline starts at the same instant, and that
instant is printed with the wall-clock time read next to it: a phase at `at` seconds begins at wall time
`epoch_wall + at`, which is what detection latency is measured from. Everything else is the stock simulator
(signatures, per-second quotas, latency, the /_sim control endpoints).

For the discovery benchmark (`bench.discovery`) four more switches, all off by default:

- `--allow-lateness` lets the quotas allow for the simulator's own loop holds
  (`exporter/simulator/lateness.py`);
- `--list-quota PRODUCT=RATE` sets a list action's quota (the catalogue's published one otherwise);
- `--record` keeps, for every API request, when it arrived and was answered (wall clock), its action, the
  task ID (status requests) or Offset (list requests) and its error code, served as
  `GET /_sim/bench/requests?since=N` (entries N onwards) so windows can be cut to the millisecond; and
  `POST /_sim/bench/load` with `{"path": FILE}` adds the tasks of a scenario file at once (5,000 tasks are
  more than the 1 MiB a request body to `/_sim/tasks` may hold, and sent in parts a sweep could list half)
  and answers how many it added and when (`at`, wall time: every request logged from then on sees them);
- `--list-cache` serves the start-time lists without a lookback of their own (CDB's DescribeTasks, TDSQL-C's)
  from a whole list built once (per product, region and filter) and kept until tasks are added (60 s at most
  for a list whose items are not built again on each page),
  each page cut from it by its time window (compared as `YYYY-MM-DD hh:mm:ss` text) and paging. The stock
  simulator builds every item of the list for each page, about 55 ms a page at 5,000 CDB tasks: the
  simulator, not the exporter, was the bottleneck of a 50-page sweep, and each page held its event loop long
  enough to bunch the status requests behind it into throttling. `/_sim/bench/load` builds the lists of the
  tasks it adds at once. The items of a page served from the cache are built again from their tasks as they
  are now (CDB's, whose ID field is known), so a status that changes shows at once, as in the stock
  simulator; requests with injected faults (latency apart) get the stock answer.

Accounts: the keys in TENCENTCLOUD_SECRET_ID / TENCENTCLOUD_SECRET_KEY (when set), plus any
`--credentials ID:KEY[:TOKEN]` (repeatable) and `--accounts-file` (as `python -m exporter.simulator` takes
them); at least one is needed. Quotas are counted per secret id. `--region R` makes the process one regional
endpoint: requests for another region are refused (`UnsupportedRegion`), counted per account in the
`accounts` of `/_sim/stats`.

Prints one JSON line on stdout once listening, then serves until SIGTERM/SIGINT or `--max-runtime` seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import re
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from aiohttp import web

from exporter.catalogue.listapis import ListApi
from exporter.catalogue.products import BY_NAME, PRODUCTS, Product
from exporter.credentials.signing import Credentials
from exporter.simulator import Faults, SimTask, Simulator, listing, load_scenario
from exporter.simulator.cli import add_account_arguments, load_accounts
from exporter.simulator.errors import request_id
from exporter.simulator.stats import ActionStats

# The ID parameter of each status action (a list request is logged with its Offset instead).
_ID_PARAMS = {s.action: s.id_param for s in PRODUCTS}
_CACHED_ANSWERS = 8  # distinct list requests kept at once (a sweep asks one, with every page)
# A cached list whose items are not built again on each page is built again after this long, so that
# statuses move on. Building a whole list of 5,000 CDB operations holds the simulator's loop for 60 to 120 ms,
# and the status requests that reached it meanwhile were read at once, as more in one second than the
# exporter sent in any: CDB's items are built again on each page, so its lists are not built again.
_CACHE_SECONDS = 60.0
_TIME_TEXT = re.compile(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}")
_WHOLE_LIST = 10**9  # a Limit past every list, for building a whole answer at once
# The field naming each item's task, by list action, for items built again as their tasks are now.
_ITEM_IDS = {("cdb", "DescribeTasks"): "AsyncRequestId"}


class HeldClock:
    """time.monotonic, except while `held` is set."""

    def __init__(self) -> None:
        self.held: float | None = None

    def __call__(self) -> float:
        return time.monotonic() if self.held is None else self.held


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclasses.dataclass(frozen=True)
class _Answer:
    """A whole list answer: its items, the rest of its fields (TotalCount), and the stock reply it came in."""

    generation: int
    built: float  # time.monotonic()
    items: list[Any]
    rest: dict[str, Any]
    reply: Any


class BenchSimulator(Simulator):
    """The stock simulator, plus the request log (`record`) and the list-answer cache (`list_cache`)."""

    def __init__(self, *args: Any, record: bool = False, list_cache: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.record, self.list_cache = record, list_cache
        self.requests: list[tuple[float, float, str, object, str | None]] = []
        self._generation = 0  # bumped by every task added: a cached answer is of one generation
        # By product, region, caller (whose tasks it lists) and parameters but paging.
        self._answers: dict[tuple[str, str, str | None, str], _Answer] = {}
        # The items of a cached answer within one time window, by (answer, begin, end): a sweep's pages.
        self._windows: dict[tuple[int, int, float, object, object], list[Any]] = {}

    def add_task(self, task: SimTask) -> None:
        super().add_task(task)
        self._generation += 1

    def remove_task(self, product: str, task_id: str) -> bool:
        self._generation += 1
        return super().remove_task(product, task_id)

    def app(self) -> web.Application:
        app = super().app()
        if self.record:
            app.middlewares.append(self._log_request)
            app.router.add_get("/_sim/bench/requests", self._handle_requests)
            app.router.add_post("/_sim/bench/load", self._handle_load)
        return app

    @web.middleware
    async def _log_request(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.method != "POST" or request.path != "/":
            return await handler(request)
        arrived = time.time()
        body = await request.read()  # cached: the handler reads the same bytes
        response = await handler(request)
        action = request.headers.get("X-TC-Action", "")
        key: object = None
        try:
            params = json.loads(body) if body else {}
            if isinstance(params, dict):
                key = params.get(_ID_PARAMS.get(action, ""), params.get("Offset"))
        except ValueError:
            pass
        code = None
        payload = getattr(response, "body", None)
        if isinstance(payload, bytes) and b'"Error"' in payload[:200]:
            try:
                code = json.loads(payload)["Response"]["Error"]["Code"]
            except (ValueError, KeyError, TypeError):
                code = "unreadable"
        self.requests.append((arrived, time.time(), action, key, code))
        return response

    async def _handle_requests(self, request: web.Request) -> web.StreamResponse:
        since = int(request.query.get("since", "0"))
        return web.json_response({"next": len(self.requests), "requests": self.requests[since:]})

    async def _handle_load(self, request: web.Request) -> web.StreamResponse:
        """Reading the file and building the lists run in a thread: the loop goes on answering meanwhile
        (each holds the GIL for at most the switch interval, 5 ms), so requests are not bunched behind it."""
        try:
            tasks = await asyncio.to_thread(load_scenario, Path((await request.json())["path"]))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            return web.json_response({"error": str(exc)}, status=400)
        self.add_tasks(tasks)
        # A request logged as arrived from now on is answered with these tasks: the request log's clock.
        added_at = time.time()
        await asyncio.to_thread(self.warm, tasks)
        return web.json_response({"added": len(tasks), "at": added_at})

    def _list(
        self,
        product: Product,
        params: Mapping[str, Any],
        region: str,
        faults: Faults,
        stats: ActionStats,
        caller: str | None = None,
        instances: bool = False,
    ) -> Any:
        api = _cacheable(product) if self.list_cache else None
        if api is None or api.window is None or instances:
            return super()._list(product, params, region, faults, stats, caller, instances)
        offset, limit = params.get("Offset", 0), params.get("Limit", 20)
        begin, end = (params.get(name) for name in api.window)
        pageable = all(isinstance(v, int) and not isinstance(v, bool) for v in (offset, limit))
        well_formed = (
            pageable
            and offset >= 0
            and 1 <= limit <= listing.MAX_LIMIT
            and all(t is None or (isinstance(t, str) and _TIME_TEXT.fullmatch(t)) for t in (begin, end))
        )
        if not (well_formed and dataclasses.replace(faults, latency=0.0) == Faults()):
            return super()._list(product, params, region, faults, stats, caller)
        rest = {k: v for k, v in params.items() if k not in ("Offset", "Limit", *api.window)}
        whole = self._whole(product, region, rest, stats, caller)
        if not isinstance(whole, _Answer):
            return whole  # the stock error answer
        # `YYYY-MM-DD hh:mm:ss` texts sort as the times do; the bounds are inclusive, in whole seconds. The
        # pages of one sweep share a window: filtered once, not for each page (at 50,000 operations, filtering
        # the whole list for each of 500 pages made the simulator the bottleneck of the sweep).
        window = (id(whole), whole.generation, whole.built, begin, end)  # built: an id may be reused
        items = self._windows.get(window)
        if items is None:
            items = [
                item
                for item in whole.items
                if (begin is None or item["StartTime"] >= begin) and (end is None or item["StartTime"] <= end)
            ]
            if len(self._windows) >= _CACHED_ANSWERS:
                self._windows.pop(next(iter(self._windows)))
            self._windows[window] = items
        page = {
            **whole.rest,
            "TotalCount": len(items),
            api.items_field: self._as_now(product, api, region, items[offset : offset + limit]),
            "RequestId": request_id(),
        }
        return dataclasses.replace(whole.reply, body=json.dumps({"Response": page}).encode())

    def _as_now(
        self, product: Product, api: ListApi, region: str, items: list[dict[str, Any]]
    ) -> list[dict[str, Any]]:
        """A page's cached items built again from their tasks as they are now (status, progress, end
        time): 100 items a page, not the whole list."""
        id_field = _ITEM_IDS.get((product.name, api.action))
        if id_field is None or not items:
            return items
        now = self._clock()
        states = [self._tasks.get((product.name, str(item.get(id_field)))) for item in items]
        if any(state is None for state in states):
            return items
        tasks = [
            listing.Listable(self._view(product, state, now), state.serial, began=True)
            for state in states
            if state is not None
        ]
        request = listing.ListRequest({"Offset": 0, "Limit": len(tasks)}, tasks, region, self._wall_clock())
        fresh = listing.answer(api, request)[api.items_field]
        by_id = {item[id_field]: item for item in fresh}
        return [by_id.get(item[id_field], item) for item in items]

    def _whole(
        self, product: Product, region: str, rest: dict[str, Any], stats: ActionStats, caller: str | None
    ) -> Any:
        """The whole list `rest` asks for (no time window, no paging) of the tasks `caller` sees, from the
        cache when it is fresh."""
        assert product.listing is not None
        key = (product.name, region, caller, json.dumps(rest, sort_keys=True))
        cached, now = self._answers.get(key), time.monotonic()
        # Items built again as now on every page (_as_now) never go stale: only an added task renews the list.
        refreshed = (product.name, product.listing.action) in _ITEM_IDS
        if (
            cached is not None
            and cached.generation == self._generation
            and (refreshed or now - cached.built < _CACHE_SECONDS)
        ):
            return cached
        saved, listing.MAX_LIMIT = listing.MAX_LIMIT, _WHOLE_LIST  # type: ignore[misc]
        try:
            reply = super()._list(
                product, {**rest, "Offset": 0, "Limit": _WHOLE_LIST}, region, Faults(), stats, caller
            )
        finally:
            listing.MAX_LIMIT = saved  # type: ignore[misc]
        response = json.loads(reply.body)["Response"]
        if reply.status != 200 or "Error" in response:
            return reply
        items = response.pop(product.listing.items_field) or []
        response.pop("RequestId", None)
        # list() copies the keys at once: `warm` runs in a thread while the loop may read the cache.
        for stale in list(self._answers)[: max(0, len(self._answers) + 1 - _CACHED_ANSWERS)]:
            self._answers.pop(stale, None)
        self._answers[key] = _Answer(self._generation, now, items, response, reply)
        return self._answers[key]

    def warm(self, tasks: Sequence[SimTask]) -> None:
        """Builds the unfiltered lists of the products and regions in `tasks` now, not at a first page, as
        each account sees them."""
        for product, region in sorted({(t.product, t.region) for t in tasks if t.region is not None}):
            if self.list_cache and _cacheable(BY_NAME[product]) is not None:
                for secret_id in self.secret_ids:
                    self._whole(BY_NAME[product], region, {}, ActionStats(), secret_id)


def _cacheable(product: Product) -> ListApi | None:
    """A start-time list without a lookback of the simulator's own (CDB, TDSQL-C): its window is a filter."""
    api = product.listing
    return api if api is not None and api.window is not None and api.max_lookback is None else None


async def serve(args: argparse.Namespace) -> None:
    clock = HeldClock()
    quotas = {"mariadb": args.quota_mariadb, "cdb": args.quota_cdb}
    simulator = BenchSimulator(
        accounts(args),
        quotas=quotas,
        latency=args.latency,
        clock=clock,
        # The held clock is real time but while the workload is added. --allow-lateness: the quotas allow
        # for the simulator's own holds (exporter/simulator/lateness.py), reported in its stats.
        allow_lateness=args.allow_lateness,
        list_quotas=dict(args.list_quota),
        record=args.record,
        list_cache=args.list_cache,
        region=args.region,
    )
    tasks = load_scenario(Path(args.tasks))
    url = await simulator.start(args.host, 0)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        clock.held = time.monotonic()
        epoch_wall = time.time()
        simulator.add_tasks(tasks)
        epoch_mono, clock.held = clock.held, None
        line = {
            "msg": "listening",
            "url": url,
            "epoch_wall": epoch_wall,
            "epoch_mono": epoch_mono,
            "region": simulator.region,
        }
        print(json.dumps(line), flush=True)
        try:
            await asyncio.wait_for(stop.wait(), args.max_runtime)
        except TimeoutError:
            print(json.dumps({"msg": "max runtime reached"}), file=sys.stderr, flush=True)
    finally:
        await simulator.stop()


def accounts(args: argparse.Namespace) -> list[Credentials]:
    """The environment's keys (when set), then `--credentials`, then `--accounts-file`'s."""
    found = []
    secret_id, secret_key = (
        os.environ.get("TENCENTCLOUD_SECRET_ID"),
        os.environ.get("TENCENTCLOUD_SECRET_KEY"),
    )
    if secret_id and secret_key:
        found.append(Credentials(secret_id, secret_key))
    found.extend(args.credentials)
    if args.accounts_file is not None:
        try:
            found.extend(load_accounts(Path(args.accounts_file)))
        except (OSError, ValueError) as exc:
            raise SystemExit(f"--accounts-file: {exc}") from None
    if not found:
        raise SystemExit(
            "no accounts: set TENCENTCLOUD_SECRET_ID and TENCENTCLOUD_SECRET_KEY, or give --credentials "
            "or --accounts-file"
        )
    return found


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.simserver")
    parser.add_argument("--tasks", required=True, help="JSON list of simulator tasks")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--latency", type=float, default=0.1)
    parser.add_argument("--quota-mariadb", type=float, default=20.0)
    parser.add_argument("--quota-cdb", type=float, default=40.0)
    parser.add_argument("--max-runtime", type=float, default=3600.0, help="stop by itself after this long")
    parser.add_argument(
        "--list-quota",
        type=_list_quota,
        action="append",
        default=[],
        metavar="PRODUCT=RATE",
        help="a list action's quota, req/s (default: the catalogue's)",
    )
    parser.add_argument("--record", action="store_true", help="log every API request (/_sim/bench/requests)")
    parser.add_argument("--list-cache", action="store_true", help="build each list answer once, page from it")
    # Off by default: the lateness ticker wakes the (favoured) simulator 100 times a second, and on 2 cores
    # that alone held the exporter's loop 27 ms during gzip scrapes of 10,000 tasks (5 ms without it), which
    # the main benchmark measures; the discovery benchmark, which counts throttled requests, turns it on.
    parser.add_argument(
        "--allow-lateness",
        action="store_true",
        help="quotas allow for the simulator's own loop holds (exporter/simulator/lateness.py)",
    )
    add_account_arguments(parser)
    asyncio.run(serve(parser.parse_args()))


def _list_quota(text: str) -> tuple[str, float]:
    product, sep, rate = text.partition("=")
    if not sep or product not in BY_NAME:
        raise argparse.ArgumentTypeError(f"expected PRODUCT=RATE with a product key, got {text!r}")
    try:
        return product, float(rate)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of requests per second, got {rate!r}") from None


if __name__ == "__main__":
    main()
