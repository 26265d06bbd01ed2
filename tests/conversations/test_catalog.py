"""The model catalog files: complete, sourced, and consistent with the SDK's own model list."""

from __future__ import annotations

import datetime as dt
import json
import re
import typing
from decimal import Decimal
from pathlib import Path

import openai.types.shared.chat_model as sdk_chat_model
import pytest

from conversations.catalog import (
    FAMILIES,
    CatalogError,
    find_entry,
    load_catalog,
    newest_first,
    parse_entry,
)

CATALOG_DIR = Path(__file__).resolve().parents[2] / "conversations" / "catalog"


def sdk_shutdown_dates() -> dict[str, str]:
    """``Announced shutdown date`` per model id, read from the SDK's ChatModel docstring."""
    text = Path(sdk_chat_model.__file__).read_text().split('"""Deprecated values:')[1]
    dates: dict[str, str] = {}
    for block in text.split("\n- ")[1:]:
        flat = " ".join(block.split())
        match = re.search(r"Announced shutdown date: (\d{4}-\d{2}-\d{2})", flat)
        if match:
            for model_id in re.findall(r'"([^"]+)"', flat.split("Announced")[0]):
                dates[model_id] = match.group(1)
    return dates


def test_each_family_loads_with_sourced_entries_and_its_file_says_what_is_unconfirmed() -> None:
    for family in FAMILIES:
        data = json.loads((CATALOG_DIR / f"{family}.json").read_text())
        assert data["checked"] == "2026-11-30"
        assert data["sources"] and data["unconfirmed"]
        entries = load_catalog(family)
        assert len(entries) == len(data["models"]) >= 15
        for entry in entries:
            assert entry.sources, entry.name
            assert entry.prices_confirmed, entry.name
            assert entry.default_effort in entry.reasoning_efforts
            assert entry.api_style in ("chat", "responses")
            assert 0 < max(entry.max_completion_tokens_by_effort.values()) <= entry.max_output_tokens
            assert entry.input_price > 0 and entry.output_price > entry.input_price


def test_o3_mini_matches_the_seed_profile() -> None:
    entry = find_entry("openai", "o3-mini")
    assert entry is not None
    assert (entry.input_price, entry.cached_input_price, entry.output_price) == (
        Decimal("1.10"), Decimal("0.55"), Decimal("4.40"),
    )
    assert (entry.context_window, entry.max_output_tokens) == (200_000, 100_000)
    assert entry.reasoning_efforts == ("low", "medium", "high") and entry.default_effort == "medium"
    assert entry.shutdown_date == dt.date(2026, 10, 23)
    assert entry.max_completion_tokens_by_effort == {"low": 10_000, "medium": 25_000, "high": 50_000}
    assert entry.profile_values()["max_completion_tokens"] == 25_000


def test_every_openai_model_is_one_the_sdk_knows_and_its_shutdown_date_is_the_sdks() -> None:
    known = set(typing.get_args(sdk_chat_model.ChatModel))
    dates = sdk_shutdown_dates()
    assert dates["o3-mini"] == "2026-10-23"  # the parser reads the docstring it means to
    for entry in load_catalog("openai"):
        assert entry.model in known, entry.model
        expected = dates.get(entry.model)
        assert (entry.shutdown_date.isoformat() if entry.shutdown_date else None) == expected, entry.model


def test_efforts_include_none_minimal_and_xhigh_where_the_model_has_them() -> None:
    efforts = {e.model: e.reasoning_efforts for e in load_catalog("openai")}
    assert efforts["gpt-5"] == ("minimal", "low", "medium", "high")
    assert efforts["gpt-5.1"] == ("none", "low", "medium", "high")
    assert efforts["gpt-5.4"] == ("none", "low", "medium", "high", "xhigh")
    assert efforts["gpt-6.1-sol"] == ("low", "medium", "high", "xhigh")
    assert efforts["o3"] == ("low", "medium", "high")


def test_every_openai_model_has_an_azure_counterpart_with_the_same_efforts() -> None:
    for entry in load_catalog("openai"):
        azure = find_entry("azure", entry.model)
        assert azure is not None, entry.model
        assert azure.family == "azure" and azure.name == f"azure-{entry.name}"
        assert azure.reasoning_efforts == entry.reasoning_efforts
    # Azure retired o3-mini on its own date, earlier than OpenAI (Microsoft's table).
    assert find_entry("azure", "o3-mini").shutdown_date == dt.date(2026, 8, 2)  # type: ignore[union-attr]


def test_entries_are_found_by_profile_name_model_id_or_snapshot() -> None:
    assert find_entry("openai", "gpt-5-4").model == "gpt-5.4"  # type: ignore[union-attr]
    assert find_entry("openai", "gpt-5.4-mini-2026-03-17").model == "gpt-5.4-mini"  # type: ignore[union-attr]
    assert find_entry("azure", "gpt-5-4").name == "azure-gpt-5-4"  # type: ignore[union-attr]
    assert find_entry("openai", "gpt-6.2-sol") is None  # no source gave its prices


def test_newest_first_puts_models_without_a_confirmed_release_date_last() -> None:
    ordered = newest_first(list(load_catalog("openai")))
    assert ordered[0].model == "gpt-6.1-sol"  # 2026-09-29, the newest dated snapshot
    assert ordered[-1].released is None
    dated = [e.released for e in ordered if e.released]
    assert dated == sorted(dated, reverse=True)


GOOD = {
    "name": "x", "model": "x", "display_name": "X", "api_style": "chat",
    "accepted_params": ["reasoning_effort"], "reasoning_efforts": ["low", "medium"],
    "default_effort": "medium", "context_window": 1000, "max_output_tokens": 500,
    "max_completion_tokens_by_effort": {"low": 100, "medium": 200},
    "prices": {"input": "1", "cached_input": "0.5", "output": "2", "confirmed": True},
    "shutdown_date": None, "sources": ["a test"],
}


@pytest.mark.parametrize(
    ("change", "complaint"),
    [
        ({"sources": []}, "cite its sources"),
        ({"reasoning_efforts": ["low", "turbo"]}, "unknown reasoning efforts"),
        ({"default_effort": "high"}, "not offered"),
        ({"api_style": "assistants"}, "api_style"),
        ({"prices": {"input": "1", "cached_input": None, "output": "2"}}, "cached-input"),
        ({"prices": {"input": "-1", "cached_input": "0", "output": "2"}}, "not a price"),
        ({"shutdown_date": "next year"}, "not a date"),
        ({"max_completion_tokens_by_effort": {"low": 100, "medium": 900}}, "exceeds"),
    ],
)
def test_a_malformed_entry_is_refused_with_the_reason(change: dict, complaint: str) -> None:
    assert parse_entry("openai", GOOD).name == "x"
    with pytest.raises(CatalogError, match=complaint):
        parse_entry("openai", {**GOOD, **change})
