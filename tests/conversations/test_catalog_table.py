"""docs/models.md lists the catalog as it is: the table between its markers is the one
``llm.catalog.table`` makes from the JSON files."""

from __future__ import annotations

from pathlib import Path

from llm.catalog import FAMILIES, load_catalog
from llm.catalog.table import BEGIN, END, markdown_table

PAGE = Path(__file__).resolve().parents[2] / "docs" / "models.md"


def test_the_models_page_shows_the_catalog_table_as_generated() -> None:
    text = PAGE.read_text()
    start, end = text.index(BEGIN), text.index(END) + len(END)
    assert text[start:end] == markdown_table(), (
        "docs/models.md is out of step with the catalog: "
        "run python -m llm.catalog.table and paste its output between the markers"
    )


def test_the_table_has_a_row_for_every_catalog_model() -> None:
    table = markdown_table()
    for family in FAMILIES:
        for entry in load_catalog(family):
            assert f"| {family} | `{entry.model}` |" in table
