"""The board in a real browser: Debian's chromium, headless, over the DevTools protocol (tests/browser.py),
against the real daemon polling the simulator. Screenshots of `/` and `/tasks` at 1,400 px are kept as
artefacts in the session's temporary folder (their path is printed).

One daemon and simulator serve the module, one browser each test; the module takes about 15 s, most of it
waiting for the board's own refresh (every 3 seconds): keeping the scroll position, and showing a status
change without a reload.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from exporter.catalogue.products import CDB, MARIADB
from exporter.simulator import Simulator, SimulatorThread
from exporter.simulator.scenario import Phase, SimTask
from tests.browser import Chromium
from tests.helpers import CREDS, ENV, DaemonProcess, require_binary, wait_for, write_config

pytestmark = pytest.mark.slow
HOSTILE = '<img src=x onerror="window.pwned=1">'
RUNNING_FLOWS = [str(7000 + n) for n in range(40)]  # enough rows that the page scrolls
FAILED_CDB = ["board-failed-1", "board-failed-2"]
CHANGING = "board-changing"
SHOTS = Path(tempfile.gettempdir()) / "tencentcloud-task-exporter-screenshots"


def keep(png: bytes, name: str) -> None:
    """A screenshot kept as an artefact of the run, in the system's temporary folder."""
    SHOTS.mkdir(exist_ok=True)
    (SHOTS / name).write_bytes(png)
    print(f"screenshot: {SHOTS / name}")


@dataclass
class Stage:
    sim: SimulatorThread
    daemon: DaemonProcess

    def board(self, query: str = "") -> dict[str, object]:
        status, body = self.daemon.get("/tasks?format=json&" + query)
        assert status == 200
        return json.loads(body)  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def stage(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stage]:
    require_binary("chromium")
    with SimulatorThread(Simulator([CREDS])) as sim:
        for flow in RUNNING_FLOWS:
            sim.add_task(SimTask(MARIADB.name, flow, (Phase(0, 2),)))
        for request in FAILED_CDB:
            sim.add_task(SimTask(CDB.name, request, (Phase(0, "FAILED", info="disk full"),)))
        sim.add_task(SimTask(CDB.name, CHANGING, (Phase(0, "RUNNING"),)))
        sim.add_task(SimTask(CDB.name, "board-ok", (Phase(0, "SUCCESS"),)))
        watch = {
            MARIADB.watch_key: [*RUNNING_FLOWS, "7999"],  # 7999: an ID the API does not know
            CDB.watch_key: [
                *FAILED_CDB,
                CHANGING,
                {"id": "board-ok", "labels": {"note": HOSTILE}},
            ],
        }
        config = write_config(tmp_path_factory.mktemp("board") / "config.yaml", sim.url, watch)
        with DaemonProcess(["--config.file", str(config)], env=ENV) as daemon:
            here = Stage(sim, daemon)
            wait_for(
                lambda: (
                    here.board("phase=unknown")["total"] == 0 and here.board("phase=not_found")["total"] == 1
                ),
                15,
                "every task polled once",
            )
            yield here


@pytest.fixture
async def browser() -> AsyncIterator[Chromium]:
    async with Chromium(require_binary("chromium")) as chromium:
        yield chromium


ROWS = "[...document.querySelectorAll('#tasks tbody tr')]"


async def test_the_board_fits_1400_px_and_its_header_stays_in_view(stage: Stage, browser: Chromium) -> None:
    await browser.goto(stage.daemon.url + "/tasks")
    assert await browser.evaluate(f"{ROWS}.length") == len(RUNNING_FLOWS) + 5
    width = await browser.evaluate(
        "[document.documentElement.scrollWidth, document.documentElement.clientWidth]"
    )
    assert width[0] <= width[1], f"scrolls sideways at 1,400 px: {width}"
    keep(await browser.screenshot(), "tasks-1400.png")
    await browser.evaluate("window.scrollTo(0, 900)")
    top = await browser.evaluate("document.querySelector('#tasks thead th').getBoundingClientRect().top")
    assert await browser.evaluate("window.scrollY") > 0
    assert abs(top) < 1, f"the header scrolled away (top {top})"
    scrolled = await browser.evaluate("window.scrollY")
    await browser.until("Number(document.body.getAttribute('data-refreshes')) >= 1", within=8)
    assert await browser.evaluate("window.scrollY") == scrolled  # the refresh kept the scroll position
    await browser.goto(stage.daemon.url + "/")
    counts = await browser.evaluate("document.querySelector('#phases').innerText")
    assert "failed" in counts
    attention = await browser.evaluate("document.querySelector('#attention tbody').innerText")
    assert all(task_id in attention for task_id in (*FAILED_CDB, "7999"))
    keep(await browser.screenshot(), "home-1400.png")


async def test_the_filter_shows_exactly_the_matching_rows(stage: Stage, browser: Chromium) -> None:
    await browser.goto(stage.daemon.url + "/tasks")
    # The form's controls, as a person would use them: pick a phase and a product, submit.
    await browser.evaluate(
        "(() => { const f = document.getElementById('filters');"
        " f.phase.value = 'failed'; f.product.value = " + json.dumps(CDB.name) + "; f.requestSubmit(); })()"
    )
    await browser.until("location.search.includes('phase=failed') && document.readyState === 'complete'")
    assert f"product={CDB.name}" in await browser.evaluate("location.search")
    ids = await browser.evaluate(f"{ROWS}.map(r => r.cells[3].innerText)")
    assert sorted(ids) == FAILED_CDB
    assert await browser.evaluate(f"{ROWS}.every(r => r.className === 'phase-failed')")
    await browser.goto(stage.daemon.url + "/tasks?q=7999")
    assert await browser.evaluate(f"{ROWS}.map(r => r.cells[4].innerText)") == ["not found"]


async def test_a_status_change_shows_without_a_reload_keeping_filters_and_scroll(
    stage: Stage, browser: Chromium
) -> None:
    await browser.goto(stage.daemon.url + f"/tasks?product={CDB.name}&q=board-")
    row = f"{ROWS}.find(r => r.cells[3].innerText === {json.dumps(CHANGING)})"
    phase_of_changing = f"{row}.cells[4].innerText"
    assert (await browser.evaluate(phase_of_changing)).startswith("running")
    await browser.evaluate("window.notReloaded = true")
    stage.sim.add_task(SimTask(CDB.name, CHANGING, (Phase(0, "SUCCESS"),)))
    # The daemon polls within a second, the snapshot is at most 2 s old, the page refreshes every 3 s.
    await browser.until(f"({phase_of_changing} || '').startsWith('succeeded')", within=12)
    assert await browser.evaluate("window.notReloaded") is True
    assert await browser.evaluate("document.getElementById('filters').q.value") == "board-"
    assert await browser.evaluate(f"{ROWS}.length") == len(FAILED_CDB) + 2


async def test_a_hostile_label_is_shown_as_text(stage: Stage, browser: Chromium) -> None:
    await browser.goto(stage.daemon.url + "/tasks?q=board-ok")
    refreshed = "document.body.getAttribute('data-refreshed')"
    await browser.until(refreshed, within=8)  # the script rebuilt the rows: both renderers are checked
    assert HOSTILE in await browser.evaluate("document.querySelector('#tasks tbody').innerText")
    assert await browser.evaluate("document.querySelectorAll('img').length") == 0
    assert await browser.evaluate("window.pwned") is None
