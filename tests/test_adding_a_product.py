"""docs/adding-a-product.md stays true: every file it names exists, the files it says every product touches
include the only one tests/test_made_up_products.py had to edit (and no code outside the catalogue), and the
answer shapes it names are the catalogue's and the simulator's."""

from __future__ import annotations

import re
from pathlib import Path

from exporter.catalogue.products import PRODUCTS
from exporter.simulator.answers import SHAPES
from tests.test_made_up_products import EDITED

ROOT = Path(__file__).resolve().parent.parent
PAGE = ROOT / "docs" / "adding-a-product.md"
# A repository path in backquotes: a folder and a file name, or a top-level file with an extension.
_PATH = re.compile(r"`((?:[\w.-]+/)+[\w.-]+|[\w-]+\.(?:md|toml|py|yml|yaml|json))`")


def sections() -> dict[str, str]:
    """The page's text under each `## ` heading."""
    parts = re.split(r"^## (.+)$", PAGE.read_text(), flags=re.M)
    return dict(zip(parts[1::2], parts[2::2], strict=True))


def table_files(text: str) -> list[list[str]]:
    """The files in the first column of each table of `text`, table by table."""
    tables: list[list[str]] = []
    in_table = False
    for line in text.splitlines():
        if line.startswith("|") and not in_table:
            tables.append([])  # the header row
        elif line.startswith("| `"):
            tables[-1].extend(_PATH.findall(line.split("|")[1]))
        in_table = line.startswith("|")
    return tables


def test_every_file_the_page_names_exists() -> None:
    named = set(_PATH.findall(PAGE.read_text()))
    assert len(named) >= 12
    assert sorted(name for name in named if not (ROOT / name).exists()) == []


def test_every_product_touches_the_files_the_made_up_products_needed() -> None:
    reused = sections()["A product that answers in an existing shape"]
    every, with_listing, audited, with_new_codes = table_files(reused)
    assert set(EDITED) <= set(every)
    # The made-up products ran on a copy edited only there: no code outside the catalogue is needed.
    code = [name for name in every + with_listing + audited if name.startswith("exporter/")]
    assert all(name.startswith("exporter/catalogue/") for name in code), code
    assert "exporter/catalogue/listapis.py" in with_listing
    assert audited == ["exporter/catalogue/products.py", "tests/products.py"]
    assert "prometheus/alerts.yml" in with_new_codes


def test_a_new_shape_adds_the_simulators_answers() -> None:
    [new_shape] = table_files(sections()["A product with a new answer shape"])
    assert set(new_shape) == {"exporter/simulator/answers.py", "exporter/simulator/listing.py"}


def test_the_page_names_every_answer_shape() -> None:
    text = PAGE.read_text()
    shapes = {p.answer_shape.name for p in PRODUCTS}
    # An instance's task list answers its tasks' status requests (simulator/instancetasks.py).
    assert shapes - {p.answer_shape.name for p in PRODUCTS if p.id_kind.pair} == set(SHAPES)
    assert all(f"`{shape}`" in text for shape in shapes)
