"""The catalog as a Markdown table, for ``docs/models.md`` (a test keeps the page in step).

``python -m llm.catalog.table`` prints it; paste it between the page's
``catalog-table`` markers.
"""

from __future__ import annotations

from decimal import Decimal

from llm.catalog import FAMILIES, CatalogEntry, load_catalog

BEGIN = "<!-- catalog-table:begin (python -m llm.catalog.table) -->"
END = "<!-- catalog-table:end -->"

_EFFORT_ORDER = ("none", "minimal", "low", "medium", "high", "xhigh", "max")


def _usd(value: Decimal | None) -> str:
    if value is None:
        return "–"
    # At least cents, as price cards print them ($1.10, $0.125).
    if value == value.quantize(Decimal("0.01")):
        return f"{value:.2f}"
    return f"{value.normalize():f}"


def _call(entry: CatalogEntry) -> str:
    api = "Responses" if entry.api_style == "responses" else "Chat Completions"
    if entry.chat_tools_need_effort_none:
        api += "; Chat Completions takes tools only at effort none"
    return api


def _long_context(entry: CatalogEntry) -> str:
    if entry.long_context_threshold is None:
        return "–"
    return (f"> {entry.long_context_threshold:,}: ×{entry.long_context_input_multiplier.normalize():f} in, "
            f"×{entry.long_context_output_multiplier.normalize():f} out")


def _row(entry: CatalogEntry) -> str:
    efforts = "/".join(e for e in _EFFORT_ORDER if e in entry.reasoning_efforts) or "–"
    shutdown = f"{entry.shutdown_date:%Y-%m-%d} → {entry.successor.split(':', 1)[-1]}" \
        if entry.shutdown_date else "–"
    cells = (
        entry.family, f"`{entry.model}`", _call(entry), efforts,
        f"{entry.context_window:,}", f"{entry.max_output_tokens:,}",
        _usd(entry.input_price), _usd(entry.cached_input_price), _usd(entry.cache_write_price),
        _usd(entry.output_price), _long_context(entry), shutdown,
    )
    return "| " + " | ".join(cells) + " |"


def markdown_table() -> str:
    header = ("| catalog | model | API | efforts | input window | max output | input $ | "
              "cached $ | cache write $ | output $ | long context | shutdown → successor |")
    rule = "|" + "---|" * 12
    rows = [_row(entry) for family in FAMILIES for entry in load_catalog(family)]
    return "\n".join([BEGIN, header, rule, *rows, END])


if __name__ == "__main__":
    print(markdown_table())
