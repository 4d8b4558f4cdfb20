"""The board and the landing page over HTTP (a real aiohttp server), tasks put in the daemon's real store:
phases, paging, filters, sorting, durations, escaping, and what the task API's JSON gains from the board."""

from __future__ import annotations

import asyncio
import html
import time
from collections.abc import Callable

import pytest
from aiohttp.test_utils import TestClient

from exporter.catalogue.products import (
    CDB,
    MARIADB,
    NOT_FOUND,
    PRODUCTS,
    REDIS,
    UNKNOWN,
    Observation,
    Phase,
)
from exporter.config.parser import API, WatchedTask, parse_config
from exporter.credentials.chain import StaticProvider
from exporter.credentials.signing import Credentials
from exporter.daemon.core import API_TOKEN_ENV, Daemon
from exporter.exposition.state import TaskState
from exporter.web.app import BOARD, create_app
from exporter.web.board import PAGE_ROWS, Board, Pace, Query, Snapshot
from exporter.web.pages import CONTENT_SECURITY_POLICY
from exporter.web.phases import PHASES, phase_of

REGION = "ap-guangzhou"
HOSTILE = '<img src=x onerror="alert(1)">&amp;"\'</td>'
Client = TestClient  # type: ignore[type-arg]


def _state(product: str, status: str | None, error: str | None = None) -> TaskState:
    state = TaskState(WatchedTask(product, "1", REGION))
    if status is not None:
        state.observe(Observation(status), 1000.0)
    if error is not None:
        state.fail(error, 1001.0)
    return state


def test_every_status_of_every_product_has_exactly_one_phase() -> None:
    for product in PRODUCTS:
        for status in product.statuses:
            phase = phase_of(_state(product.name, status))
            assert phase in PHASES, (product.name, status)
            if status == product.success_status:
                assert phase == "succeeded"
            elif status in product.final_statuses:
                assert phase == "failed", (product.name, status)
            elif status == UNKNOWN:
                assert phase == "unknown"
            else:
                assert phase in ("pending", "running", "ongoing", "unknown"), (product.name, status)
        assert phase_of(_state(product.name, None)) == "unknown"
        assert phase_of(_state(product.name, "no-such-word")) == "unknown"
        for code in (*product.not_found_codes, NOT_FOUND):
            assert phase_of(_state(product.name, None, code)) == "not_found"
            # Seen finished, then forgotten by the API (retention): it finished, and stays so.
            assert phase_of(_state(product.name, product.success_status, code)) == "succeeded"
        assert phase_of(_state(product.name, None, "InternalError")) == "unknown"


def test_statuses_not_started_are_pending_and_others_running() -> None:
    assert phase_of(_state(CDB.name, "initial")) == "pending"
    assert phase_of(_state(REDIS.name, "preparing")) == "pending"
    assert phase_of(_state(CDB.name, "undefined")) == "pending"  # the SDK: created, waiting for its window
    assert phase_of(_state(CDB.name, "paused")) == "running"  # CDB's paused is not final


async def _client(aiohttp_client: Callable[..., object], token: str | None = None) -> tuple[Client, Daemon]:
    config = parse_config({"region": REGION}, "c.yaml", {})
    env = {API_TOKEN_ENV: token} if token else {}
    daemon = Daemon(config, StaticProvider(Credentials("id", "key"), "test"), env=env)
    client = await aiohttp_client(create_app(daemon))  # type: ignore[misc]
    return client, daemon  # type: ignore[return-value]


def _put(
    daemon: Daemon,
    product: str,
    task_id: str,
    status: str | None,
    *,
    account: str = "default",
    labels: tuple[tuple[str, str], ...] = (),
    info: str | None = None,
    times: tuple[float | None, float | None] = (None, None),
    seen: float | None = None,
) -> TaskState:
    """A task in the daemon's store as a poll would leave it (not scheduled: nothing polls it here)."""
    state = daemon.store.add(WatchedTask(product, task_id, REGION, labels, account, API))
    if status is not None:
        observation = Observation(status, info=info, start_time=times[0], end_time=times[1])
        daemon.store.observe(state, observation, seen if seen is not None else time.time())
    return state


async def _json(client: Client, query: str) -> dict[str, object]:
    response = await client.get(f"/tasks?format=json&{query}")
    assert response.status == 200, await response.text()
    return await response.json()  # type: ignore[no-any-return]


def _ids(page: dict[str, object]) -> list[str]:
    return [t["id"] for t in page["tasks"]]  # type: ignore[attr-defined,index]


async def test_tasks_are_paged_and_a_bad_page_is_a_400(aiohttp_client: Callable[..., object]) -> None:
    client, daemon = await _client(aiohttp_client)
    for n in range(1, 2 * PAGE_ROWS + 51):
        _put(daemon, MARIADB.name, str(n), "running")
    first = await _json(client, "sort=id&order=asc")
    assert (first["total"], first["pages"], first["page"]) == (2 * PAGE_ROWS + 50, 3, 1)
    assert _ids(first) == [str(n) for n in range(1, PAGE_ROWS + 1)]
    last = await _json(client, "sort=id&order=asc&page=3")
    assert _ids(last) == [str(n) for n in range(2 * PAGE_ROWS + 1, 2 * PAGE_ROWS + 51)]
    beyond = await _json(client, "page=99")
    assert beyond["page"] == 3  # past the end: the last page
    page = await (await client.get("/tasks?page=2")).text()
    assert page.count("<tr class=") == PAGE_ROWS
    assert 'rel="prev" href="tasks"' in page
    assert 'rel="next" href="tasks?page=3"' in page
    for bad in ("page=0", "page=x", "phase=done", "sort=nope", "order=up", "q=" + "x" * 201):
        response = await client.get(f"/tasks?{bad}")
        assert response.status == 400, bad
        answer = await client.get(f"/tasks?format=json&{bad}")
        assert answer.status == 400
        assert "error" in await answer.json()


async def test_filters_from_the_address_bar_select_exactly_the_matching_rows(
    aiohttp_client: Callable[..., object],
) -> None:
    client, daemon = await _client(aiohttp_client)
    failure = sorted(CDB.failure_statuses)[0]
    _put(daemon, CDB.name, "c-ok", CDB.success_status, account="prod")
    _put(daemon, CDB.name, "c-bad", failure, account="prod", labels=(("team", "dba"),))
    _put(daemon, CDB.name, "c-bad-2", failure, account="staging")
    _put(daemon, REDIS.name, "7", sorted(REDIS.failure_statuses)[0], account="prod")
    _put(daemon, MARIADB.name, "8", "running", account="prod", info=None)
    assert sorted(_ids(await _json(client, "phase=failed"))) == ["7", "c-bad", "c-bad-2"]
    assert _ids(await _json(client, f"phase=failed&product={CDB.name}&account=prod")) == ["c-bad"]
    assert _ids(await _json(client, "q=TEAM=DBA")) == ["c-bad"]  # labels, case-insensitive
    assert _ids(await _json(client, f"cloud_region={REGION}&phase=running")) == ["8"]
    assert _ids(await _json(client, "cloud_region=elsewhere")) == []
    page = await (await client.get(f"/tasks?phase=failed&product={CDB.name}&q=bad")).text()
    assert page.count('<tr class="phase-failed">') == 2
    # The form shows the filters it was given, so the next change keeps them.
    assert '<option value="failed" selected>' in page
    assert f'<option value="{CDB.name}" selected>' in page
    assert 'name="q" value="bad"' in page
    empty = await (await client.get("/tasks?q=nothing-matches")).text()
    assert "No task matches these filters." in empty


async def test_sorting_by_a_column_and_the_header_links_keep_the_filters(
    aiohttp_client: Callable[..., object],
) -> None:
    client, daemon = await _client(aiohttp_client)
    for n, (start, end) in enumerate(((0.0, 50.0), (0.0, 10.0), (0.0, 30.0)), 1):
        _put(daemon, MARIADB.name, str(n), "success", times=(1000.0 + start, 1000.0 + end))
    assert _ids(await _json(client, "sort=duration")) == ["1", "3", "2"]  # longest first by default
    assert _ids(await _json(client, "sort=duration&order=asc")) == ["2", "3", "1"]
    page = await (await client.get("/tasks?phase=succeeded&sort=duration&order=asc")).text()
    assert 'href="tasks?phase=succeeded&amp;sort=duration"' in page  # the other order, same filter
    assert 'aria-sort="ascending"' in page


async def test_durations_of_finished_tasks_and_running_time_of_the_others(
    aiohttp_client: Callable[..., object],
) -> None:
    client, daemon = await _client(aiohttp_client)
    now = time.time()
    _put(daemon, REDIS.name, "1", REDIS.success_status, times=(now - 3725.0, now - 5.0))
    _put(daemon, REDIS.name, "2", "running", times=(now - 125.0, None))
    _put(daemon, MARIADB.name, "3", "success")  # finished, times unknown
    rows = {t["id"]: t for t in (await _json(client, ""))["tasks"]}  # type: ignore[attr-defined]
    assert rows["1"]["duration_seconds"] == 3720.0
    assert rows["1"]["running_since"] is None
    assert rows["2"]["duration_seconds"] is None
    assert rows["2"]["running_since"] is not None
    assert rows["3"]["duration_seconds"] is None
    assert rows["3"]["running_since"] is None
    page = await (await client.get("/tasks")).text()
    assert "<td>1h02m</td>" in page
    assert page.count('class="running">running 2m0') == 1  # only the one still running
    assert page.count("running ") == 1


async def test_every_text_shown_is_escaped(aiohttp_client: Callable[..., object]) -> None:
    client, daemon = await _client(aiohttp_client)
    _put(daemon, CDB.name, "x1", sorted(CDB.failure_statuses)[0], labels=(("note", HOSTILE),), info=HOSTILE)
    for path in ("/tasks", "/", f"/tasks?q={HOSTILE[:20]}"):
        response = await client.get(path)
        page = await response.text()
        assert "<img" not in page, path
        assert "</td>'" not in page, path
        assert response.headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY
    assert html.escape(HOSTILE) in await (await client.get("/tasks")).text()
    data = await _json(client, "")
    assert data["tasks"][0]["info"] == HOSTILE  # type: ignore[index]  # JSON carries it as text


async def test_landing_counts_phases_per_product_and_lists_failures_newest_first(
    aiohttp_client: Callable[..., object],
) -> None:
    client, daemon = await _client(aiohttp_client)
    failure = sorted(CDB.failure_statuses)[0]
    _put(daemon, CDB.name, "older", failure, seen=time.time() - 600)
    _put(daemon, CDB.name, "newer", failure, seen=time.time() - 60)
    _put(daemon, CDB.name, "fine", CDB.success_status)
    _put(daemon, MARIADB.name, "9", "running", seen=time.time() - 7200)  # unchanged for two hours
    gone = _put(daemon, MARIADB.name, "10", None)
    gone.fail(MARIADB.not_found_codes[0], time.time())
    page = await (await client.get("/")).text()
    assert f'<a href="tasks?product={CDB.name}&amp;phase=failed">2</a>' in page
    assert f'<a href="tasks?product={CDB.name}&amp;phase=succeeded">1</a>' in page
    assert f'<a href="tasks?product={MARIADB.name}&amp;phase=not_found">1</a>' in page
    attention = page.split('id="attention"', 1)[1]
    order = [attention.index(f">{task_id}</a>") for task_id in ("newer", "older", "9", "10")]
    assert order == sorted(order)
    assert "looks stuck" in attention
    assert ">fine</a>" not in attention


async def test_an_ongoing_status_is_never_stuck_however_long_it_lasts(
    aiohttp_client: Callable[..., object],
) -> None:
    client, daemon = await _client(aiohttp_client)
    product, ongoing = next((p, s) for p in PRODUCTS for s, phase in p.phases if phase is Phase.ONGOING)
    running = next(s for s, phase in product.phases if phase is Phase.RUNNING)
    _put(daemon, product.name, "steady", ongoing, seen=time.time() - 30 * 86400)  # a month replicating
    _put(daemon, product.name, "paused", running, seen=time.time() - 7200)
    page = await (await client.get("/")).text()
    assert f'<a href="tasks?product={product.name}&amp;phase=ongoing">1</a>' in page
    attention = page.split('id="attention"', 1)[1]
    assert ">paused</a>" in attention
    assert ">steady</a>" not in attention


async def test_unknown_ids_show_as_not_found_not_as_unpolled(aiohttp_client: Callable[..., object]) -> None:
    client, daemon = await _client(aiohttp_client)
    _put(daemon, REDIS.name, "404", None).fail(REDIS.not_found_codes[0], time.time())
    _put(daemon, REDIS.name, "405", None)
    page = await (await client.get("/tasks?sort=id&order=asc")).text()
    rows = page.split("<tbody>", 1)[1].split("</tr>")
    assert 'class="badge">not found<' in rows[0]
    assert "not polled yet" not in rows[0]
    assert 'class="badge">unknown<' in rows[1]
    assert "not polled yet" in rows[1]


async def test_pages_come_from_a_snapshot_and_registrations_show_at_once(
    aiohttp_client: Callable[..., object],
) -> None:
    client, _daemon = await _client(aiohttp_client, token="tok")
    auth = {"Authorization": "Bearer tok"}
    first = await (await client.get("/tasks")).read()
    assert await (await client.get("/tasks")).read() == first  # the same bytes, cut once
    board = client.app[BOARD]
    assert (await board.snapshot()) is (await board.snapshot())  # shared until it is SNAPSHOT_SECONDS old
    added = await client.post("/api/v1/tasks", json={"product": MARIADB.name, "id": 77}, headers=auth)
    assert added.status == 201
    listed = await (await client.get("/api/v1/tasks", headers=auth)).json()
    assert [t["id"] for t in listed["tasks"]] == ["77"]
    assert listed["tasks"][0]["phase"] == "unknown"
    assert "77" in (await (await client.get("/tasks")).text())
    assert b"77" not in first
    paged = await (await client.get("/api/v1/tasks?page=1&phase=unknown", headers=auth)).json()
    assert (paged["total"], paged["pages"]) == (1, 1)
    assert (await client.get("/api/v1/tasks?page=x", headers=auth)).status == 400
    assert (await client.get("/api/v1/tasks?page=1")).status == 401


@pytest.mark.parametrize(("name", "kind"), [("board.css", "text/css"), ("board.js", "text/javascript")])
async def test_the_pages_assets_are_served(
    aiohttp_client: Callable[..., object], name: str, kind: str
) -> None:
    client, _ = await _client(aiohttp_client)
    response = await client.get(f"/-/static/{name}")
    assert response.status == 200
    assert response.headers["Content-Type"].startswith(kind)
    assert (await client.get("/-/static/nope.js")).status == 404


async def test_pages_beyond_the_pace_wait_and_then_are_refused(aiohttp_client: Callable[..., object]) -> None:
    client, _ = await _client(aiohttp_client)
    client.app[BOARD].pace = Pace(rate=1.0, patience=0.0)  # one page a second, nobody waits
    statuses = [(await client.get(path)).status for path in ("/", "/tasks", "/tasks?format=json")]
    # A burst of one second's pages (one, and the next second's slot, taken at once), then no more.
    assert statuses == [200, 200, 503]
    refused = await client.get("/tasks?format=json")
    assert refused.status == 503
    assert refused.headers["Retry-After"] == "5"
    assert "too many page requests" in (await refused.json())["error"]
    assert (await client.get("/-/static/board.js")).status == 200  # the assets are not paced
    assert (await client.get("/metrics")).status == 200


async def test_requests_for_the_same_page_share_one_render() -> None:
    board = Board(list)  # no tasks: what matters is how often the page is rendered
    renders: list[Query] = []

    def render(snapshot: Snapshot, query: Query) -> bytes:
        renders.append(query)
        return b"page"

    bodies = await asyncio.gather(*(board.rendered("html", Query(), render) for _ in range(8)))
    assert bodies == [b"page"] * 8
    assert renders == [Query()]
    await board.rendered("html", Query(phase="failed"), render)  # another query is another render
    assert len(renders) == 2
