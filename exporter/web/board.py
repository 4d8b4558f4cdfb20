"""The board's data: a snapshot of every watched task as plain rows, and the filtered, sorted pages of it.

A snapshot is built at most once per `SNAPSHOT_SECONDS` however many clients ask (they share the build), and
incrementally: a task's row is made again only when its state changed (every change renders the task's
exposition lines anew, so their identity tells), and the build yields to the event loop between chunks so
polling never waits on it. Each page a query asks for is then cut from the snapshot and kept until the next
one, so clients reloading the same page get the same bytes for the price of a dictionary lookup.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from exporter.catalogue.products import BY_NAME
from exporter.config.parser import Key
from exporter.exposition.state import TaskState
from exporter.web.phases import (
    FAILED,
    NOT_FOUND_PHASE,
    ONGOING,
    PENDING,
    PHASES,
    RUNNING,
    UNKNOWN_PHASE,
    phase_of,
)

SNAPSHOT_SECONDS = 2.0  # how stale a page may be; also what a client hammering it can cost at most
PAGE_ROWS = 200  # rows per page of /tasks: enough to scroll, small enough to render in a millisecond
MAX_QUERY_TEXT = 200  # characters of `q` and of each filter value
STUCK_SECONDS = 3600.0  # an unfinished status unchanged this long "looks stuck" on the landing page
STUCK_ERRORS = 3  # ... as does one whose last polls failed this many times in a row
ATTENTION_ROWS = 25  # failed or stuck operations the landing page lists
# Pages served a second, all clients together, and how long a request may wait for its turn: however fast
# clients ask, answering them costs at most this many renders of the HTTP response a second, and the event
# loop stays with polling. A person's board refreshes every few seconds: this is dozens of viewers.
PAGES_PER_SECOND = 25.0
PAGE_WAIT_SECONDS = 10.0
_CHUNK = 200  # rows made between two yields to the event loop: a few milliseconds of work
_CACHED_PAGES = 64
_FINISHED = frozenset(PHASES) - {PENDING, RUNNING, ONGOING, UNKNOWN_PHASE, NOT_FOUND_PHASE}


def iso(timestamp: float | None) -> str | None:
    return None if timestamp is None else datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="seconds")


# Not frozen: a frozen dataclass's __init__ costs twice as much, 20,000 times the first snapshot. Slots: one
# object per row for the garbage collector to track, not two (its full collections stall the event loop).
@dataclass(eq=False, slots=True)
class Row:
    """One task as the board shows it, made of references to what its state held (no copies, no formatting:
    a snapshot of 20,000 tasks allocates little); its text and JSON are made when first asked for. Never
    changed once made."""

    key: Key
    phase: str
    status: str | None
    account: str
    labels: tuple[tuple[str, str], ...]
    source: str
    task_type: str | None
    instance_id: str | None
    instance_name: str | None
    started: float | None
    ended: float | None
    duration: float | None  # finished with both times known: seconds it took
    running_since: float | None  # unfinished: since when it has run (start time, else status first seen)
    since: float | None  # its current status first seen
    last_poll: float | None
    last_success: float | None
    last_error: str | None
    info: str | None
    consecutive_errors: int
    # What the row was made from: the task's state and its exposition lines then, which every change of the
    # state replaces (so the row is current while they are the same object).
    state: TaskState | None = None
    lines: tuple[bytes, ...] = ()
    _text: str | None = None
    _encoded: bytes | None = None

    @property
    def product(self) -> str:
        return self.key[0]

    @property
    def region(self) -> str:
        return self.key[1]

    @property
    def task_id(self) -> str:
        return self.key[2]

    @property
    def instance(self) -> str:
        if not self.instance_name:
            return self.instance_id or ""
        return f"{self.instance_id or ''} ({self.instance_name})".strip()

    def current(self, state: TaskState) -> bool:
        return self.state is state and self.lines is state.lines

    @property
    def text(self) -> str:
        """Everything `q` searches, lower-cased (made on first use)."""
        if self._text is None:
            self._text = self._words()
        return self._text

    def _words(self) -> str:
        words = [*self.key, self.account, self.status or "", self.phase, self.task_type or "", self.instance]
        words += [self.last_error or "", self.info or "", self.source]
        words += [f"{k}={v}" for k, v in self.labels]
        return "\n".join(words).lower()

    @property
    def json(self) -> dict[str, object]:
        """The task as the task API (and the board's refreshes) show it."""
        product, region, task_id = self.key
        return {
            "product": product,
            "id": task_id,
            "region": region,
            "account": self.account,
            "labels": dict(self.labels),
            "source": self.source,
            "instance_id": self.instance_id,
            "instance_name": self.instance_name,
            "task_type": self.task_type,
            "started": iso(self.started),
            "ended": iso(self.ended),
            "status": self.status,
            "status_since": iso(self.since),
            "last_poll": iso(self.last_poll),
            "last_success": iso(self.last_success),
            "last_error": self.last_error,
            "info": self.info,
            "phase": self.phase,
            "duration_seconds": self.duration,
            "running_since": iso(self.running_since),
        }

    @property
    def encoded(self) -> bytes:
        """`json` as UTF-8 JSON: made once per change of the task, however often it is served."""
        if self._encoded is None:
            self._encoded = json.dumps(self.json, ensure_ascii=False).encode("utf-8", "replace")
        return self._encoded

    def stuck(self, now: float) -> bool:
        if self.phase in _FINISHED or self.phase == NOT_FOUND_PHASE:
            return False
        # An ongoing status (a sync job replicating) is meant to last: only failing polls make it stuck.
        unchanged = self.phase != ONGOING and self.since is not None and now - self.since > STUCK_SECONDS
        return unchanged or self.consecutive_errors >= STUCK_ERRORS


def make_row(state: TaskState) -> Row:
    phase = phase_of(state)
    finished = phase in _FINISHED or state.final
    start, end = state.start_time, state.end_time
    duration = end - start if finished and start is not None and end is not None and end >= start else None
    task = state.task
    return Row(
        key=task.key,
        phase=phase,
        status=state.status,
        account=task.account,
        labels=task.labels,
        source=state.source,
        task_type=state.task_type,
        instance_id=state.instance_id,
        instance_name=state.instance_name,
        started=start,
        ended=end,
        duration=duration,
        running_since=None if finished else (start if start is not None else state.status_since),
        since=state.status_since,
        last_poll=state.last_attempt,
        last_success=state.last_success,
        last_error=state.last_error,
        info=state.info,
        consecutive_errors=state.consecutive_errors,
        state=state,
        lines=state.lines,
    )


# Sortable columns: the query's `sort` value and the key a row sorts by (None last, whichever the order).
SORTS: Mapping[str, Callable[[Row], object]] = {
    "product": lambda r: r.product,
    "account": lambda r: r.account,
    "region": lambda r: r.region,
    "id": lambda r: (len(r.task_id), r.task_id),  # integer IDs in numeric order
    "phase": lambda r: PHASES.index(r.phase),
    "type": lambda r: r.task_type or "",
    "started": lambda r: r.started,
    "duration": lambda r: r.duration,
    "changed": lambda r: r.since,
    "last_poll": lambda r: r.last_poll,
}
DEFAULT_SORT = "changed"
# Sorted newest (or longest) first unless the query says otherwise.
NEWEST_FIRST = frozenset({"changed", "started", "last_poll", "duration"})


class BadQuery(ValueError):
    """A query the board cannot answer; the message says which parameter and why."""


@dataclass(frozen=True)
class Query:
    """What a page of the board shows: the filters, the order and the page, all from the address bar."""

    phase: str = ""
    product: str = ""
    account: str = ""
    region: str = ""
    q: str = ""
    sort: str = DEFAULT_SORT
    desc: bool = True
    page: int = 1

    FILTERS = ("phase", "product", "account", "cloud_region", "q")

    @classmethod
    def parse(cls, params: Mapping[str, str]) -> Query:
        values = {}
        for name in cls.FILTERS:
            value = params.get(name, "").strip()
            if len(value) > MAX_QUERY_TEXT:
                raise BadQuery(f"{name}: at most {MAX_QUERY_TEXT} characters")
            values["region" if name == "cloud_region" else name] = value
        if values["phase"] and values["phase"] not in PHASES:
            raise BadQuery(f"phase: expected one of {', '.join(PHASES)}")
        sort = params.get("sort", DEFAULT_SORT) or DEFAULT_SORT
        if sort not in SORTS:
            raise BadQuery(f"sort: expected one of {', '.join(SORTS)}")
        order = params.get("order", "") or ("desc" if sort in NEWEST_FIRST else "asc")
        if order not in ("asc", "desc"):
            raise BadQuery("order: expected asc or desc")
        raw_page = params.get("page", "1") or "1"
        if not (raw_page.isascii() and raw_page.isdigit()) or not 1 <= int(raw_page) <= 1_000_000:
            raise BadQuery("page: expected a whole number from 1")
        return cls(sort=sort, desc=order == "desc", page=int(raw_page), **values)

    def matches(self, row: Row) -> bool:
        return (
            (not self.phase or row.phase == self.phase)
            and (not self.product or row.product == self.product)
            and (not self.account or row.account == self.account)
            and (not self.region or row.region == self.region)
            and (not self.q or self.q.lower() in row.text)
        )

    def params(self, **changes: object) -> dict[str, str]:
        """The address bar's parameters of this query with `changes`, defaults left out."""
        values: dict[str, object] = {
            "phase": self.phase,
            "product": self.product,
            "account": self.account,
            "cloud_region": self.region,
            "q": self.q,
            "sort": self.sort,
            "order": "desc" if self.desc else "asc",
            "page": self.page,
        }
        values.update(changes)
        default_order = "desc" if values["sort"] in NEWEST_FIRST else "asc"
        defaults = {"sort": DEFAULT_SORT, "order": default_order, "page": 1}
        return {k: str(v) for k, v in values.items() if v not in ("", None) and defaults.get(k) != v}


@dataclass(frozen=True)
class Page:
    rows: tuple[Row, ...]
    total: int  # rows matching the filters
    page: int
    pages: int


@dataclass
class Snapshot:
    rows: tuple[Row, ...]
    built: float  # unix time
    _orders: dict[tuple[str, bool], list[Row]] = field(default_factory=dict)

    def ordered(self, sort: str, desc: bool) -> list[Row]:
        order = self._orders.get((sort, desc))
        if order is None:
            key = SORTS[sort]
            known = [r for r in self.rows if key(r) is not None]
            known.sort(key=key, reverse=desc)  # type: ignore[arg-type]
            order = self._orders[sort, desc] = known + [r for r in self.rows if key(r) is None]
        return order

    def page(self, query: Query) -> Page:
        matching = [r for r in self.ordered(query.sort, query.desc) if query.matches(r)]
        pages = max(1, -(-len(matching) // PAGE_ROWS))
        page = min(query.page, pages)
        start = (page - 1) * PAGE_ROWS
        return Page(tuple(matching[start : start + PAGE_ROWS]), len(matching), page, pages)

    def counts(self) -> dict[str, Counter[str]]:
        """Tasks by product, then by phase."""
        counts: dict[str, Counter[str]] = {}
        for row in self.rows:
            counts.setdefault(row.product, Counter())[row.phase] += 1
        return {p: counts[p] for p in BY_NAME if p in counts}

    def attention(self) -> list[Row]:
        """Failed, not found or stuck operations, newest status change first."""
        wanted = [r for r in self.rows if r.phase in (FAILED, NOT_FOUND_PHASE) or r.stuck(self.built)]
        wanted.sort(key=lambda r: r.since or 0.0, reverse=True)  # never seen (not found) last
        return wanted[:ATTENTION_ROWS]

    def values(self, which: Callable[[Row], str]) -> list[str]:
        return sorted({which(r) for r in self.rows})


class Pace:
    """Spaces out the pages served: each takes the next free slot `1/rate` seconds after the last one (with a
    burst of `rate` slots), waiting for it; None instead when that slot is more than `patience` away."""

    def __init__(self, rate: float = PAGES_PER_SECOND, patience: float = PAGE_WAIT_SECONDS) -> None:
        self._spacing, self._burst, self._patience = 1.0 / rate, 1.0, patience
        self._next = 0.0  # monotonic time of the next free slot

    async def turn(self) -> bool:
        now = time.monotonic()
        slot = max(self._next, now - self._burst)
        if slot - now > self._patience:
            return False
        self._next = slot + self._spacing
        if slot > now:
            await asyncio.sleep(slot - now)
        return True


class Board:
    """Snapshots of the tasks `states()` lists, and the pages rendered from them (by `render`)."""

    def __init__(self, states: Callable[[], Iterable[TaskState]], interval: float = SNAPSHOT_SECONDS) -> None:
        self._states = states
        self._interval = interval
        self._rows: dict[Key, Row] = {}
        self._snapshot: Snapshot | None = None
        self._fresh_until = 0.0
        self._building: asyncio.Future[Snapshot] | None = None
        self._pages: OrderedDict[tuple[object, ...], bytes] = OrderedDict()
        self.pace = Pace()

    def invalidate(self) -> None:
        """The next request builds a new snapshot (after a registration, so the caller sees it at once)."""
        self._fresh_until = 0.0

    async def snapshot(self) -> Snapshot:
        if self._snapshot is not None and time.monotonic() < self._fresh_until:
            return self._snapshot
        if self._building is None:
            self._building = asyncio.ensure_future(self._build())
        building = self._building
        try:
            return await asyncio.shield(building)
        finally:
            if building.done() and self._building is building:
                self._building = None

    async def _build(self) -> Snapshot:
        started = time.monotonic()
        states = list(self._states())  # the store may change while this yields; this list does not
        rows: list[Row] = []
        # Rows of unchanged tasks are kept as they are: a new snapshot allocates only the rows that changed
        # and a few containers, so building one every few seconds does not feed the garbage collector.
        cache: dict[Key, Row] = {}
        for index, state in enumerate(states):
            if index and index % _CHUNK == 0:
                await asyncio.sleep(0)  # let polling and other requests run between chunks
            key = state.task.key
            row = self._rows.get(key)
            if row is None or not row.current(state):
                row = make_row(state)
                row.text  # noqa: B018  # made now, in this chunk, rather than by the first search
            cache[key] = row
            rows.append(row)
        self._rows = cache
        snapshot = Snapshot(tuple(rows), time.time())
        self._snapshot, self._pages = snapshot, OrderedDict()
        self._fresh_until = started + self._interval
        return snapshot

    async def rendered(self, kind: str, query: Query, render: Callable[[Snapshot, Query], bytes]) -> bytes:
        """The bytes `render` makes of the current snapshot for `query`, kept for the snapshot's life."""
        snapshot = await self.snapshot()
        cache_key = (kind, query)
        body = self._pages.get(cache_key) if snapshot is self._snapshot else None
        if body is None:
            # On the event loop, in one go: a page of 20,000 tasks sorts, filters and renders in about 15 ms,
            # once per snapshot and query. A thread would not spare the loop: measured with 8 readers, it
            # took turns with the loop at the interpreter lock, 30 wake-ups in 30 s over 20 ms late (1 so).
            body = render(snapshot, query)
            if snapshot is self._snapshot:
                self._pages[cache_key] = body
                while len(self._pages) > _CACHED_PAGES:
                    self._pages.popitem(last=False)
        return body

    async def encode(self, rows: Sequence[Row]) -> None:
        """Makes the JSON of each row that has none yet, yielding to the event loop between chunks (the
        task API's full list: 20,000 rows would otherwise be a few hundred milliseconds in one go)."""
        for index, row in enumerate(rows):
            if index and index % _CHUNK == 0:
                await asyncio.sleep(0)
            row.encoded  # noqa: B018  # made and kept by the row
