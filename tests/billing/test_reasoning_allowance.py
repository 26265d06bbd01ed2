"""The reasoning allowance billed for an attempt that reported no usage, per effort."""

from __future__ import annotations

from llm.catalog import KNOWN_EFFORTS
from llm.pricing import REASONING_ALLOWANCE, estimate_usage
from llm.tokens import count_tokens

VISIBLE = "A partial answer that was streamed before the connection dropped."


def test_every_effort_the_api_knows_has_its_own_allowance_rising_with_the_effort() -> None:
    assert list(REASONING_ALLOWANCE) == list(KNOWN_EFFORTS)
    allowances = [REASONING_ALLOWANCE[effort] for effort in KNOWN_EFFORTS]
    assert allowances[0] == 0  # none
    assert allowances == sorted(set(allowances))  # strictly rising
    assert REASONING_ALLOWANCE["xhigh"] > 2 * REASONING_ALLOWANCE["high"]


def test_an_unreported_answer_at_effort_none_is_billed_its_visible_text_only() -> None:
    usage = estimate_usage(effort="none", completion_cap=8000, prompt_tokens=50, visible_text=VISIBLE)

    assert usage.reasoning_tokens == 0
    assert usage.completion_tokens == count_tokens(VISIBLE) > 0


def test_an_unreported_xhigh_or_max_answer_is_billed_its_allowance_within_the_completion_cap() -> None:
    visible = count_tokens(VISIBLE)

    xhigh = estimate_usage(effort="xhigh", completion_cap=100_000, prompt_tokens=50, visible_text=VISIBLE)
    capped = estimate_usage(effort="max", completion_cap=100_000, prompt_tokens=50, visible_text=VISIBLE)

    assert xhigh.reasoning_tokens == REASONING_ALLOWANCE["xhigh"]
    assert xhigh.completion_tokens == visible + REASONING_ALLOWANCE["xhigh"]
    assert capped.completion_tokens == 100_000  # max's allowance is more than the cap leaves
    assert capped.reasoning_tokens == 100_000 - visible
