"""The pages: the landing page (counts by phase, what needs attention) and the board at /tasks, rendered from
a board snapshot (`exporter.web.board`) as HTML that works without JavaScript, and as the JSON its script
refreshes from. Every text shown is escaped here; the script only ever sets text, never markup.
"""

from __future__ import annotations

import html
import json
from collections.abc import Mapping
from datetime import UTC, datetime
from urllib.parse import urlencode

from exporter import __version__
from exporter.catalogue.products import BY_NAME
from exporter.web.board import NEWEST_FIRST, PAGE_ROWS, Query, Row, Snapshot, iso
from exporter.web.phases import NOT_FOUND_PHASE, PHASES

# The board's columns: heading, the sort it orders by (None: not sortable).
COLUMNS: tuple[tuple[str, str | None], ...] = (
    ("Product", "product"),
    ("Account", "account"),
    ("Region", "region"),
    ("Task ID", "id"),
    ("Phase", "phase"),
    ("Type · instance", "type"),
    ("Started", "started"),
    ("Duration", "duration"),
    ("Changed", "changed"),
    ("Details", None),
)
# Pages may load scripts, styles and data from the exporter only: a label that slipped through escaping could
# still not run anything.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; "
    "form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)
STYLESHEET = "-/static/board.css"
SCRIPT = "-/static/board.js"


def esc(value: object) -> str:
    return html.escape(str(value), quote=True)


def clock(timestamp: float | None) -> str:
    """A time on the board, UTC: month, day and time of day, short enough to keep the columns narrow."""
    if timestamp is None:
        return ""
    return datetime.fromtimestamp(timestamp, UTC).strftime("%m-%d %H:%M:%S")


def full_clock(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d %H:%M:%S")


def span(seconds: float) -> str:
    """A duration as a person reads it: 42s, 5m07s, 3h05m, 2d04h."""
    whole = max(0, int(seconds))
    days, rest = divmod(whole, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d{hours:02d}h"
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def phase_label(phase: str) -> str:
    return phase.replace("_", " ")


def _head(title: str) -> str:
    return (
        '<!doctype html>\n<html lang="en">\n<head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{esc(title)}</title>"
        f'<link rel="stylesheet" href="{STYLESHEET}"></head>\n'
    )


def _href(params: Mapping[str, str]) -> str:
    return esc("tasks" + ("?" + urlencode(params) if params else ""))


def duration_cell(row: Row, now: float) -> str:
    if row.duration is not None:
        return esc(span(row.duration))
    if row.running_since is not None and row.phase not in (NOT_FOUND_PHASE,):
        return f'<span class="running">running {esc(span(now - row.running_since))}</span>'
    return ""


def task_row(row: Row, now: float) -> str:
    """One task as a row of the board; board.js builds the same from the row's JSON."""
    status = (
        row.status if row.status is not None else ("" if row.phase == NOT_FOUND_PHASE else "not polled yet")
    )
    details = []
    if row.last_error:
        details.append(f'<span class="error">{esc(row.last_error)}</span>')
    if row.info:
        details.append(f'<span class="info">{esc(row.info)}</span>')
    if row.labels:
        details.append(" ".join(f"<code>{esc(k)}={esc(v)}</code>" for k, v in row.labels))
    details.append(f'<span class="source">{esc(row.source)}</span>')
    cells = (
        esc(row.product),
        esc(row.account),
        esc(row.region),
        esc(row.task_id),
        f'<span class="badge">{esc(phase_label(row.phase))}</span> <span class="status">{esc(status)}</span>',
        f'{esc(row.task_type or "")} <span class="instance">{esc(row.instance)}</span>',
        esc(clock(row.started)),
        duration_cell(row, now),
        f'{esc(clock(row.since))} <span class="polled">polled {esc(clock(row.last_poll)[6:])}</span>'
        if row.last_poll is not None
        else esc(clock(row.since)),
        " ".join(details),
    )
    return f'<tr class="phase-{esc(row.phase)}">' + "".join(f"<td>{c}</td>" for c in cells) + "</tr>"


def _select(name: str, label: str, current: str, values: list[str], shown: Mapping[str, str]) -> str:
    options = ['<option value="">any</option>']
    for value in values if current in values or not current else [*values, current]:
        selected = " selected" if value == current else ""
        options.append(f'<option value="{esc(value)}"{selected}>{esc(shown.get(value, value))}</option>')
    return f'<label>{esc(label)} <select name="{esc(name)}">{"".join(options)}</select></label>'


def _filters(snapshot: Snapshot, query: Query) -> str:
    phases = {p: phase_label(p) for p in PHASES}
    controls = [
        _select("phase", "Phase", query.phase, list(PHASES), phases),
        _select("product", "Product", query.product, list(BY_NAME), {}),
        _select("account", "Account", query.account, snapshot.values(lambda r: r.account), {}),
        _select("cloud_region", "Region", query.region, snapshot.values(lambda r: r.region), {}),
        f'<label>Search <input type="search" name="q" value="{esc(query.q)}" maxlength="200"'
        ' placeholder="ID, label, message..."></label>',
    ]
    hidden = {"sort": query.sort, "order": "desc" if query.desc else "asc"}
    controls += [f'<input type="hidden" name="{k}" value="{esc(v)}">' for k, v in hidden.items()]
    controls.append('<button type="submit">Filter</button> <a href="tasks">Clear</a>')
    return f'<form id="filters" method="get" action="tasks">{" ".join(controls)}</form>'


def _headings(query: Query) -> str:
    cells = []
    for title, sort in COLUMNS:
        if sort is None:
            cells.append(f"<th>{esc(title)}</th>")
            continue
        current = sort == query.sort
        desc = not query.desc if current else sort in NEWEST_FIRST
        mark = (" ▼" if query.desc else " ▲") if current else ""
        params = query.params(sort=sort, order="desc" if desc else "asc", page=1)
        aria = (' aria-sort="descending"' if query.desc else ' aria-sort="ascending"') if current else ""
        cells.append(
            f'<th{aria}><a href="{_href(params)}" data-sort="{esc(sort)}">{esc(title)}{mark}</a></th>'
        )
    return "".join(cells)


def _pager(query: Query, page: int, pages: int) -> str:
    links = []
    if page > 1:
        links.append(f'<a rel="prev" href="{_href(query.params(page=page - 1))}">previous page</a>')
    links.append(f"page {page} of {pages}")
    if page < pages:
        links.append(f'<a rel="next" href="{_href(query.params(page=page + 1))}">next page</a>')
    return " · ".join(links)


def tasks_page(snapshot: Snapshot, query: Query, metrics_link: str) -> bytes:
    page = snapshot.page(query)
    now = snapshot.built
    rows = [task_row(r, now) for r in page.rows] or [
        f'<tr class="empty"><td colspan="{len(COLUMNS)}">No task matches these filters.</td></tr>'
    ]
    summary = (
        f"{page.total} of {len(snapshot.rows)} task(s) match · {PAGE_ROWS} a page · "
        f"as of {full_clock(snapshot.built)} UTC"
    )
    body = f"""<body class="board">
<header><h1>Watched tasks</h1>
<nav><a href="./">Home</a> · <a href="{metrics_link}">Metrics</a></nav></header>
{_filters(snapshot, query)}
<p id="summary" aria-live="polite">{esc(summary)}</p>
<table id="tasks">
<colgroup>{"".join(f'<col class="c{i}">' for i in range(len(COLUMNS)))}</colgroup>
<thead><tr>{_headings(query)}</tr></thead>
<tbody>
{chr(10).join(rows)}
</tbody>
</table>
<p id="pager">{_pager(query, page.page, page.pages)}</p>
<script src="{SCRIPT}" defer></script>
</body>
</html>
"""
    return (_head("Watched tasks - Tencent Cloud task exporter") + body).encode("utf-8", "replace")


def tasks_json(snapshot: Snapshot, query: Query) -> bytes:
    """A page of the board as JSON: each task as the task API shows it, with the page's place in the whole."""
    page = snapshot.page(query)
    head = {
        "generated": iso(snapshot.built),
        "total": page.total,
        "watched": len(snapshot.rows),
        "page": page.page,
        "pages": page.pages,
        "page_rows": PAGE_ROWS,
        "query": query.params(),
    }
    prefix = json.dumps(head)[:-1].encode() + b', "tasks": ['
    return prefix + b",".join(r.encoded for r in page.rows) + b"]}"


def all_tasks_json(snapshot: Snapshot, query: Query) -> bytes:
    """Every task matching the query's filters, unpaged (the task API's list)."""
    ordered = snapshot.ordered(query.sort, query.desc) if query != Query() else snapshot.rows
    return b'{"tasks": [' + b",".join(r.encoded for r in ordered if query.matches(r)) + b"]}"


def landing_page(snapshot: Snapshot, metrics_link: str) -> bytes:
    counts = snapshot.counts()
    heads = "".join(f'<th class="phase-{p}">{esc(phase_label(p))}</th>' for p in PHASES)
    lines = []
    for product, by_phase in counts.items():
        cells = []
        for phase in PHASES:
            n = by_phase.get(phase, 0)
            link = _href({"product": product, "phase": phase})
            cells.append(
                f'<td class="n phase-{phase}">' + (f'<a href="{link}">{n}</a>' if n else "0") + "</td>"
            )
        total = sum(by_phase.values())
        cells.append(f'<td class="n"><a href="{_href({"product": product})}">{total}</a></td>')
        lines.append(f"<tr><th>{esc(product)}</th>{''.join(cells)}</tr>")
    if not lines:
        lines.append(f'<tr class="empty"><td colspan="{len(PHASES) + 2}">No task is watched yet.</td></tr>')
    attention = []
    for row in snapshot.attention():
        why = "looks stuck" if row.stuck(snapshot.built) else phase_label(row.phase)
        link = _href({"product": row.product, "cloud_region": row.region, "q": row.task_id})
        error = row.last_error or row.info or ""
        attention.append(
            f'<tr class="phase-{esc(row.phase)}"><td>{esc(row.product)}</td><td>{esc(row.account)}</td>'
            f'<td>{esc(row.region)}</td><td><a href="{link}">{esc(row.task_id)}</a></td>'
            f'<td><span class="badge">{esc(why)}</span> '
            f'<span class="status">{esc(row.status or "")}</span></td>'
            f"<td>{esc(clock(row.since))}</td><td>{esc(error)}</td></tr>"
        )
    if not attention:
        attention.append('<tr class="empty"><td colspan="7">Nothing has failed or looks stuck.</td></tr>')
    body = f"""<body class="landing">
<header><h1>Tencent Cloud task exporter</h1>
<nav><a href="tasks">Watched tasks</a> · <a href="{metrics_link}">Metrics</a></nav></header>
<p>Version {esc(__version__)}. Watching {len(snapshot.rows)} task(s);
as of {esc(full_clock(snapshot.built))} UTC.</p>
<h2>Operations by phase</h2>
<table id="phases"><thead><tr><th>Product</th>{heads}<th>all</th></tr></thead>
<tbody>{"".join(lines)}</tbody></table>
<h2>Failed or looks stuck</h2>
<p>Newest first: failed, not found, or unfinished with a status unchanged for an hour or polls failing.
<a href="{_href({"phase": "failed"})}">All failed</a> ·
<a href="{_href({"phase": "not_found"})}">All not found</a></p>
<table id="attention"><thead><tr><th>Product</th><th>Account</th><th>Region</th><th>Task ID</th><th>Phase</th>
<th>Since</th><th>Message</th></tr></thead>
<tbody>{"".join(attention)}</tbody></table>
<h2>More</h2>
<ul>
<li><a href="{metrics_link}">Metrics</a></li>
<li><a href="tasks">Watched tasks</a></li>
<li><a href="-/config">Effective configuration</a> (secrets hidden)</li>
<li><a href="-/healthy">Health</a></li>
<li><a href="-/ready">Readiness</a></li>
</ul>
</body>
</html>
"""
    return (_head("Tencent Cloud task exporter") + body).encode("utf-8", "replace")


__all__ = ["COLUMNS", "CONTENT_SECURITY_POLICY", "all_tasks_json", "landing_page", "tasks_json", "tasks_page"]
