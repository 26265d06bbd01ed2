"""The price card's rules (llm.pricing), to the micro-dollar: cache writes at their own
price, the long-context rate per request, the tiers, the worst case a turn reserves and
the conservative estimate. Figures: gpt-6.2-sol in shared/reference/todays-models.md §1
($2.00 input, $0.10 cached, $2.50 cache write, $5 12-hour write, $10.00 output per 1M;
above 272,000 input tokens 2x input-side and 1.5x output; Flex 50 %)."""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal

import pytest

from llm.catalog import find_entry
from llm.pricing import (
    Prices,
    add_usage,
    affordable_completion_tokens,
    estimate_usage,
    usage_cost,
    worst_case_cost,
)
from llm.types import Usage

M = Decimal(1_000_000)


def sol(**changes: object) -> Prices:
    """gpt-6.2-sol's price card as the catalog records it."""
    entry = find_entry("openai", "gpt-6.2-sol")
    assert entry is not None
    prices = Prices(
        entry.input_price, entry.cached_input_price, entry.output_price, entry.tier_prices,
        cache_write_price=entry.cache_write_price,
        long_cache_write_price=entry.long_cache_write_price,
        long_context_threshold=entry.long_context_threshold,
        long_context_input_multiplier=entry.long_context_input_multiplier,
        long_context_output_multiplier=entry.long_context_output_multiplier,
    )
    return replace(prices, **changes)  # type: ignore[arg-type]


def test_the_catalog_holds_gpt_6_2_sols_published_price_card() -> None:
    prices = sol()
    assert (prices.input_price, prices.cached_input_price, prices.output_price) == (
        Decimal("2"), Decimal("0.1"), Decimal("10"))
    assert (prices.cache_write_price, prices.long_cache_write_price) == (Decimal("2.5"), Decimal("5"))
    assert prices.long_context_threshold == 272_000
    assert (prices.long_context_input_multiplier, prices.long_context_output_multiplier) == (
        Decimal("2"), Decimal("1.5"))


def test_cache_writes_are_billed_at_the_cache_write_price_not_as_input() -> None:
    usage = Usage(prompt_tokens=10_000, cached_tokens=2_000, cache_write_tokens=3_000,
                  completion_tokens=1_000, reasoning_tokens=400)

    # 5,000 uncached at $2, 2,000 cached at $0.10, 3,000 written at $2.50, 1,000 out at $10.
    assert usage_cost(sol(), usage) == Decimal("0.027700")
    assert usage_cost(sol(), usage) == (5_000 * 2 + 2_000 * Decimal("0.1") + 3_000 * Decimal("2.5")
                                        + 1_000 * 10) / M


def test_without_a_cache_write_price_writes_are_billed_as_input() -> None:
    usage = Usage(prompt_tokens=10_000, cache_write_tokens=3_000, completion_tokens=1_000)

    assert usage_cost(sol(cache_write_price=None, long_cache_write_price=None), usage) == (
        10_000 * 2 + 1_000 * 10) / M


def test_12_hour_cache_writes_are_billed_at_their_own_price() -> None:
    usage = Usage(prompt_tokens=4_000, cache_write_tokens=3_000, cache_write_12h_tokens=1_000)

    # 1,000 uncached at $2, 2,000 30-minute writes at $2.50, 1,000 12-hour writes at $5.
    assert usage_cost(sol(), usage) == Decimal("0.012000")


def test_exactly_272000_input_tokens_uses_the_short_rates() -> None:
    usage = Usage(prompt_tokens=272_000, cached_tokens=0, completion_tokens=1_000)

    assert usage_cost(sol(), usage) == (272_000 * 2 + 1_000 * 10) / M == Decimal("0.554000")


def test_272001_input_tokens_bill_the_whole_request_at_the_long_context_rates() -> None:
    usage = Usage(prompt_tokens=272_001, cached_tokens=100_000, cache_write_tokens=50_000,
                  completion_tokens=1_000)

    expected = (122_001 * 2 * 2 + 100_000 * Decimal("0.1") * 2 + 50_000 * Decimal("2.5") * 2
                + 1_000 * 10 * Decimal("1.5")) / M
    assert usage_cost(sol(), usage) == expected.quantize(Decimal("0.000001")) == Decimal("0.773004")


def test_the_long_context_rule_applies_per_request_of_a_turn() -> None:
    long_round = Usage(prompt_tokens=272_001, completion_tokens=100)
    short_round = Usage(prompt_tokens=1_000, completion_tokens=100)
    turn = add_usage(add_usage(None, long_round), short_round)

    assert turn.prompt_tokens == 273_001 and len(turn.requests) == 2
    # Each request at its own rates: the short round is not billed at the long ones.
    assert usage_cost(sol(), turn) == (
        (272_001 * 4 + 100 * 15) + (1_000 * 2 + 100 * 10)) / M == Decimal("1.092504")
    assert usage_cost(sol(), add_usage(add_usage(None, short_round), short_round)) == (
        2 * (1_000 * 2 + 100 * 10)) / M


def test_flex_is_half_of_every_rate_including_cache_writes_and_long_context() -> None:
    flex = sol().at_tier("flex")
    usage = Usage(prompt_tokens=272_001, cached_tokens=1, cache_write_tokens=2,
                  completion_tokens=10)

    assert (flex.input_price, flex.cached_input_price, flex.output_price) == (
        Decimal("1"), Decimal("0.05"), Decimal("5"))
    assert (flex.cache_write_price, flex.long_cache_write_price) == (Decimal("1.25"), Decimal("2.5"))
    assert usage_cost(flex, usage) == (
        (271_998 * 1 + 1 * Decimal("0.05") + 2 * Decimal("1.25")) * 2 + 10 * 5 * Decimal("1.5")
    ).__truediv__(M).quantize(Decimal("0.000001"))


@pytest.mark.parametrize("tier", ["priority", "ultrafast", "", "default"])
def test_a_tier_dearer_than_standard_or_unpriced_is_billed_at_the_standard_prices(tier: str) -> None:
    entry = find_entry("openai", "gpt-6.2-sol")
    assert entry is not None
    # Recorded from the page, but never given prices: the reservation is taken at standard.
    assert entry.tier_multipliers["priority"] == 2 and entry.tier_multipliers["ultrafast"] == 3
    assert set(entry.tier_prices) == {"flex", "batch"}
    usage = Usage(prompt_tokens=1_000, completion_tokens=100)

    assert usage_cost(sol().at_tier(tier), usage) == usage_cost(sol(), usage) == Decimal("0.003000")


def test_the_worst_case_prices_every_prompt_token_at_the_dearer_cache_write_price() -> None:
    # $2.50 cache write > $2.00 input: a prompt written whole to the cache still fits.
    assert worst_case_cost(sol(), prompt_tokens=10_000, completion_cap=1_000) == (
        10_000 * Decimal("2.5") + 1_000 * 10) / M
    written = Usage(prompt_tokens=10_000, cache_write_tokens=10_000, completion_tokens=1_000)
    assert usage_cost(sol(), written) == worst_case_cost(
        sol(), prompt_tokens=10_000, completion_cap=1_000)


def test_the_worst_case_of_a_long_context_prompt_is_at_the_long_context_rates() -> None:
    short = worst_case_cost(sol(), prompt_tokens=272_000, completion_cap=1_000)
    long = worst_case_cost(sol(), prompt_tokens=272_001, completion_cap=1_000)

    assert short == (272_000 * Decimal("2.5") + 1_000 * 10) / M == Decimal("0.690000")
    assert long == (272_001 * Decimal("2.5") * 2 + 1_000 * 10 * Decimal("1.5")) / M
    assert long == Decimal("1.375005")


@pytest.mark.parametrize("usage", [
    Usage(prompt_tokens=300_000, completion_tokens=1_000),
    Usage(prompt_tokens=300_000, cache_write_tokens=300_000, completion_tokens=1_000),
    Usage(prompt_tokens=300_000, cached_tokens=200_000, cache_write_tokens=100_000,
          completion_tokens=1_000, reasoning_tokens=900),
])
def test_a_long_context_reservation_covers_its_charge(usage: Usage) -> None:
    reserved = worst_case_cost(sol(), prompt_tokens=300_000, completion_cap=1_000)

    assert usage_cost(sol(), usage) <= reserved
    assert usage_cost(sol().at_tier("flex"), usage) <= reserved


def test_a_flagged_estimate_prices_its_prompt_at_the_dearer_cache_write_price() -> None:
    estimate = estimate_usage(effort="low", completion_cap=2_000, prompt_tokens=10_000,
                              visible_text="")

    assert estimate.estimated and estimate.completion_tokens == 1_024
    assert usage_cost(sol(), estimate) == (10_000 * Decimal("2.5") + 1_024 * 10) / M
    assert usage_cost(sol(), estimate) <= worst_case_cost(sol(), prompt_tokens=10_000,
                                                          completion_cap=2_000)


def test_a_tool_round_after_a_long_prompt_affords_output_at_the_long_rate() -> None:
    assert affordable_completion_tokens(sol(), Decimal("0.015"), prompt_tokens=1_000) == 1_500
    assert affordable_completion_tokens(sol(), Decimal("0.015"), prompt_tokens=272_001) == 1_000


def test_the_snapshot_keeps_the_price_card_and_an_old_snapshot_prices_as_before() -> None:
    prices = sol()
    restored = Prices.from_snapshot(prices.snapshot())
    usage = Usage(prompt_tokens=272_001, cache_write_tokens=5, completion_tokens=7)

    assert restored == prices and restored.tiers == prices.tiers
    assert usage_cost(restored, usage) == usage_cost(prices, usage)
    old = Prices.from_snapshot({"input": "2", "cached_input": "0.1", "output": "10"})
    assert usage_cost(old, usage) == (272_001 * 2 + 7 * 10) / M
