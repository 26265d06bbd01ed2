"""The model catalog files: complete, sourced, and consistent with the SDK's own model list."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import re
import typing
from decimal import Decimal
from pathlib import Path

import openai.types.shared.chat_model as sdk_chat_model
import pytest

from llm.catalog import FAMILIES, CatalogError, find_entry, load_catalog, newest_first, parse_entry

CATALOG_DIR = Path(__file__).resolve().parents[2] / "llm" / "catalog"


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
    # gpt-6.1-sol takes max only on Responses, and this entry uses Responses.
    assert efforts["gpt-6.1-sol"] == ("low", "medium", "high", "xhigh", "max")
    assert find_entry("openai", "gpt-6.1-sol").api_style == "responses"  # type: ignore[union-attr]
    # Both gpt-6.2 models reject none, and no source names max for them.
    assert efforts["gpt-6.2-sol"] == efforts["gpt-6.2-astra"] == ("low", "medium", "high", "xhigh")
    assert efforts["o3"] == ("low", "medium", "high")


def test_every_openai_model_has_an_azure_counterpart_with_the_same_efforts() -> None:
    for entry in load_catalog("openai"):
        azure = find_entry("azure", entry.model)
        assert azure is not None, entry.model
        assert azure.family == "azure" and azure.name == f"azure-{entry.name}"
        # The model's efforts, except that `max` (Responses only where a model has it) is
        # never offered by an entry on Chat Completions.
        assert [e for e in azure.reasoning_efforts if e != "max"] == [
            e for e in entry.reasoning_efforts if e != "max"
        ]
        if azure.api_style == "chat":
            assert "max" not in azure.reasoning_efforts, azure.name
    # Azure retired o3-mini on its own date, earlier than OpenAI (Microsoft's table).
    assert find_entry("azure", "o3-mini").shutdown_date == dt.date(2026, 8, 2)  # type: ignore[union-attr]


def test_entries_are_found_by_profile_name_model_id_or_snapshot() -> None:
    assert find_entry("openai", "gpt-5-4").model == "gpt-5.4"  # type: ignore[union-attr]
    assert find_entry("openai", "gpt-5.4-mini-2026-03-17").model == "gpt-5.4-mini"  # type: ignore[union-attr]
    assert find_entry("azure", "gpt-5-4").name == "azure-gpt-5-4"  # type: ignore[union-attr]
    assert find_entry("openai", "gpt-6.2-sol").name == "gpt-6-2-sol"  # type: ignore[union-attr]
    assert find_entry("azure", "gpt-6.2-astra").name == "azure-gpt-6-2-astra"  # type: ignore[union-attr]


def test_newest_first_puts_models_without_a_confirmed_release_date_last() -> None:
    ordered = newest_first(list(load_catalog("openai")))
    assert ordered[0].model == "gpt-6.2-sol"  # 2026-11-17, the newest dated snapshot
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


def takes_chat_tools_only_at_effort_none(model: str) -> bool:
    """gpt-5.4 and later (gpt-5.4*, gpt-5.5, gpt-5.6-*, gpt-6*), by the version in the id."""
    match = re.match(r"^gpt-(\d+)(?:\.(\d+))?(?:-|$)", model)
    if match is None:
        return False
    return (int(match[1]), int(match[2] or 0)) >= (5, 4)


def test_gpt_5_4_and_later_take_tools_on_chat_completions_only_at_effort_none_in_both_catalogs() -> None:
    """todays-models.md section 2: community.openai.com thread 1386454; LibreChat issue
    #14231; gpt-6-luna model page."""
    for family in FAMILIES:
        flagged = {e.model for e in load_catalog(family) if e.chat_tools_need_effort_none}
        expected = {e.model for e in load_catalog(family) if takes_chat_tools_only_at_effort_none(e.model)}
        assert flagged == expected, family
        assert {"gpt-5.4", "gpt-5.6-sol", "gpt-6-sol", "gpt-6.1-terra"} <= flagged
        assert not flagged & {"o3-mini", "o3", "gpt-5", "gpt-5.1", "gpt-5.2"}
        for entry in load_catalog(family):
            if entry.chat_tools_need_effort_none:
                # Their tools go through the Responses API, Azure's included.
                assert entry.api_style == "responses", entry.name
                assert entry.profile_values()["chat_tools_need_effort_none"] is True


def test_responses_only_models_are_responses_style_wherever_a_catalog_lists_them() -> None:
    """The SDK's ResponsesModel type lists, beside every ChatModel id, the models only the
    Responses API serves (-pro, codex, deep-research, computer-use)."""
    import openai.types.shared.responses_model as sdk_responses_model

    chat_ids = set(typing.get_args(sdk_chat_model.ChatModel))
    only_responses = {
        model_id
        for arg in typing.get_args(sdk_responses_model.ResponsesModel)
        for model_id in typing.get_args(arg)
        if model_id not in chat_ids
    }
    assert {"o3-pro", "gpt-5-pro", "gpt-5-codex", "o3-deep-research"} <= only_responses
    for family in FAMILIES:
        for entry in load_catalog(family):
            if set(entry.model_ids) & only_responses:
                assert entry.api_style == "responses", entry.name


@pytest.mark.parametrize(
    ("change", "complaint"),
    [
        ({"chat_tools_need_effort_none": "yes"}, "must be true or false"),
        ({"chat_tools_need_effort_none": 1}, "must be true or false"),
        ({"chat_tools_need_effort_none": True, "accepted_params": ["reasoning_effort", "tools"]},
         "must use api_style responses"),
    ],
)
def test_a_malformed_chat_tools_rule_is_refused_with_the_reason(change: dict, complaint: str) -> None:
    with pytest.raises(CatalogError, match=complaint):
        parse_entry("openai", {**GOOD, **change})


def test_the_chat_tools_rule_is_off_unless_given_and_allowed_on_a_responses_entry() -> None:
    assert parse_entry("openai", GOOD).chat_tools_need_effort_none is False
    entry = parse_entry("openai", {**GOOD, "api_style": "responses", "chat_tools_need_effort_none": True,
                                   "accepted_params": ["reasoning_effort", "tools"]})
    assert entry.chat_tools_need_effort_none is True


def test_every_model_with_a_shutdown_date_names_a_successor_of_its_own_provider_served_longer() -> None:
    for family in FAMILIES:
        by_key = {entry.key: entry for entry in load_catalog(family)}
        for entry in by_key.values():
            if entry.shutdown_date is None:
                continue
            successor = by_key[entry.successor]
            assert successor.family == family and successor is not entry, entry.name
            assert successor.shutdown_date is None or successor.shutdown_date > entry.shutdown_date
            assert any(note.startswith(f"Successor {successor.model} ") for note in entry.notes), entry.name
    # The models shutting down on 2026-12-11 (todays-models.md section 4) that are catalogued.
    assert {e.model: e.successor for e in load_catalog("openai") if e.shutdown_date == dt.date(2026, 12, 11)} == {
        "o3": "openai:gpt-6-sol", "gpt-5": "openai:gpt-6-sol",
        "gpt-5-mini": "openai:gpt-5.6-luna", "gpt-5-nano": "openai:gpt-6-luna",
    }


@pytest.mark.parametrize(
    ("successors", "complaint"),
    [
        ({"old": ""}, "must name its successor"),
        ({"old": "openai:gone"}, "is not a openai catalog key"),
        ({"old": "azure:new"}, "is not a openai catalog key"),
        ({"old": "openai:old"}, "cannot succeed itself"),
        ({"old": "openai:new", "new": "openai:old"}, "not after 2026-12-11"),
    ],
)
def test_a_missing_or_wrong_successor_is_refused_with_the_reason(
    successors: dict[str, str], complaint: str
) -> None:
    from llm.catalog import _check_successors

    old = parse_entry("openai", {**GOOD, "name": "old", "model": "old", "shutdown_date": "2026-12-11"})
    new = parse_entry("openai", {**GOOD, "name": "new", "model": "new"})
    good = (dataclasses.replace(old, successor="openai:new"), new)
    _check_successors("openai", good)
    if "new" in successors:
        new = dataclasses.replace(new, shutdown_date=dt.date(2026, 12, 11), successor=successors["new"])
    with pytest.raises(CatalogError, match=complaint):
        _check_successors("openai", (dataclasses.replace(old, successor=successors["old"]), new))
