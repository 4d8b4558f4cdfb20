"""The board's stylesheet and script, served at /-/static/ (in Python: the package needs no data files).

The script only refreshes what the server already rendered: every few seconds it fetches the same page of the
board as JSON (`tasks?format=json&...`, the address bar's filters) and rebuilds the table's rows with text
nodes only, so nothing it shows is ever read as markup; the filters, the page and the scroll position stay.
"""

from __future__ import annotations

REFRESH_SECONDS = 3

STYLESHEET = """\
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:.8em 1.2em;color:#1b1b1b;font-size:14px}
header{display:flex;align-items:baseline;gap:1.5em;flex-wrap:wrap}
h1{font-size:1.35em;margin:.2em 0}h2{font-size:1.1em;margin:1.2em 0 .4em}
table{border-collapse:separate;border-spacing:0;width:100%}
th,td{border-bottom:1px solid #d8d8d8;padding:.3em .45em;text-align:left;vertical-align:top;
overflow-wrap:break-word}
thead th{background:#eceff3;border-bottom:2px solid #b8bec7}
#tasks{table-layout:fixed}#tasks td{overflow-wrap:anywhere}
#tasks thead th{position:sticky;top:0;z-index:1}
th a{color:inherit;text-decoration:none}th a:hover{text-decoration:underline}
col.c0{width:6%}col.c1{width:6%}col.c2{width:9%}col.c3{width:13%}col.c4{width:9%}
col.c5{width:11%}col.c6{width:9%}col.c7{width:8%}col.c8{width:10%}col.c9{width:19%}
#tasks td:nth-child(4){font-family:ui-monospace,Menlo,Consolas,monospace;font-size:.92em}
.badge{display:inline-block;padding:0 .45em;border-radius:.3em;font-weight:600;font-size:.85em;
background:#757575;color:#fff;white-space:nowrap}
.phase-failed .badge{background:#c62828}tr.phase-failed td{background:#fdecea}
.phase-not_found .badge{background:#6a1b9a}tr.phase-not_found td{background:#f4ecf7}
.phase-unknown .badge{background:#616161}
.phase-running .badge{background:#1565c0}
.phase-pending .badge{background:#f9a825;color:#1b1b1b}
.phase-ongoing .badge{background:#00838f}
.phase-succeeded .badge{background:#2e7d32}
th.phase-failed{color:#c62828}th.phase-not_found{color:#6a1b9a}th.phase-running{color:#1565c0}
th.phase-succeeded{color:#2e7d32}th.phase-ongoing{color:#00838f}
.status,.instance,.polled,.source{color:#5a5a5a;font-size:.88em}
.instance,.polled,.error,.info{display:block}
.error{color:#b71c1c}.running{color:#0d47a1;white-space:nowrap}
code{background:#f1f1f1;padding:0 .2em;margin-right:.3em;font-size:.9em}
#filters{display:flex;flex-wrap:wrap;gap:.5em 1.1em;align-items:center;margin:.6em 0}
#filters input[type=search]{width:16em}
#phases{width:auto}#phases td.n{text-align:right;min-width:4.5em}
#attention td:nth-child(4){font-family:ui-monospace,Menlo,Consolas,monospace}
tr.empty td{color:#5a5a5a;font-style:italic}
"""

SCRIPT = """\
(function () {
  "use strict";
  var table = document.getElementById("tasks");
  if (!table || !window.fetch || !window.URLSearchParams) { return; }
  var REFRESH_MS = @REFRESH_MS@;
  var tbody = table.tBodies[0], summary = document.getElementById("summary");
  var pager = document.getElementById("pager"), columns = table.tHead.rows[0].cells.length;

  function node(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) { e.className = cls; }
    if (text !== undefined && text !== null) { e.textContent = String(text); }
    return e;
  }
  function two(n) { return n < 10 ? "0" + n : String(n); }
  function span(seconds) {
    var s = Math.max(0, Math.floor(seconds)), d = Math.floor(s / 86400), h = Math.floor(s % 86400 / 3600);
    var m = Math.floor(s % 3600 / 60);
    if (d) { return d + "d" + two(h) + "h"; }
    if (h) { return h + "h" + two(m) + "m"; }
    return m ? m + "m" + two(s % 60) + "s" : (s % 60) + "s";
  }
  function clock(iso) { return iso ? iso.slice(5, 19).replace("T", " ") : ""; }
  function seconds(iso) { return Date.parse(iso) / 1000; }

  function row(t, now) {
    var tr = node("tr", "phase-" + t.phase), cells = [];
    for (var i = 0; i < 10; i++) { cells.push(node("td")); tr.appendChild(cells[i]); }
    cells[0].textContent = t.product; cells[1].textContent = t.account;
    cells[2].textContent = t.region; cells[3].textContent = t.id;
    var status = t.status !== null ? t.status : (t.phase === "not_found" ? "" : "not polled yet");
    cells[4].appendChild(node("span", "badge", t.phase.replace("_", " ")));
    cells[4].appendChild(document.createTextNode(" "));
    cells[4].appendChild(node("span", "status", status));
    cells[5].appendChild(document.createTextNode((t.task_type || "") + " "));
    var instance = t.instance_id || "";
    if (t.instance_name) { instance = (instance + " (" + t.instance_name + ")").trim(); }
    cells[5].appendChild(node("span", "instance", instance));
    cells[6].textContent = clock(t.started);
    if (t.duration_seconds !== null) {
      cells[7].textContent = span(t.duration_seconds);
    } else if (t.running_since && t.phase !== "not_found") {
      cells[7].appendChild(node("span", "running", "running " + span(now - seconds(t.running_since))));
    }
    cells[8].textContent = clock(t.status_since);
    if (t.last_poll) {
      cells[8].appendChild(document.createTextNode(" "));
      cells[8].appendChild(node("span", "polled", "polled " + t.last_poll.slice(11, 19)));
    }
    if (t.last_error) { cells[9].appendChild(node("span", "error", t.last_error)); }
    if (t.info) { cells[9].appendChild(node("span", "info", t.info)); }
    Object.keys(t.labels || {}).forEach(function (k) {
      cells[9].appendChild(node("code", "", k + "=" + t.labels[k]));
    });
    cells[9].appendChild(node("span", "source", t.source));
    return tr;
  }

  function link(query, page, rel, text) {
    var q = new URLSearchParams(query);
    if (page > 1) { q.set("page", page); } else { q.delete("page"); }
    var a = node("a", "", text), s = q.toString();
    a.href = "tasks" + (s ? "?" + s : ""); a.rel = rel;
    return a;
  }

  function render(data) {
    var now = seconds(data.generated), body = document.createDocumentFragment();
    data.tasks.forEach(function (t) { body.appendChild(row(t, now)); });
    if (!data.tasks.length) {
      var empty = node("tr", "empty"), td = node("td", "", "No task matches these filters.");
      td.colSpan = columns; empty.appendChild(td); body.appendChild(empty);
    }
    tbody.replaceChildren(body);
    summary.textContent = data.total + " of " + data.watched + " task(s) match \\u00b7 " + data.page_rows +
      " a page \\u00b7 as of " + data.generated.slice(0, 19).replace("T", " ") + " UTC";
    var parts = [];
    if (data.page > 1) { parts.push(link(data.query, data.page - 1, "prev", "previous page")); }
    parts.push(document.createTextNode("page " + data.page + " of " + data.pages));
    if (data.page < data.pages) { parts.push(link(data.query, data.page + 1, "next", "next page")); }
    pager.replaceChildren();
    parts.forEach(function (p, i) {
      if (i) { pager.appendChild(document.createTextNode(" \\u00b7 ")); }
      pager.appendChild(p);
    });
    refreshes += 1;
    document.body.setAttribute("data-refreshed", data.generated);
    document.body.setAttribute("data-refreshes", String(refreshes));
  }

  var busy = false, refreshes = 0;
  function refresh() {
    if (busy) { return; }
    busy = true;
    var query = new URLSearchParams(window.location.search);
    query.set("format", "json");
    fetch("tasks?" + query.toString(), {cache: "no-store", credentials: "same-origin"})
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (data) { if (data) { render(data); } })
      .catch(function () { /* the next refresh tries again; the page keeps what it shows */ })
      .then(function () { busy = false; });
  }
  window.setInterval(refresh, REFRESH_MS);
  document.addEventListener("visibilitychange", function () { if (!document.hidden) { refresh(); } });
})();
""".replace("@REFRESH_MS@", str(REFRESH_SECONDS * 1000))
