"""Usage the gpt-6.x price card bills by: prompt-cache writes and the reported input size.

Sources: openai-python's ``ResponseUsage.InputTokensDetails`` (``cached_tokens``,
``cache_write_tokens``, ``cache_write_tokens_details``) and ``CompletionUsage.
PromptTokensDetails.cache_write_tokens`` (optional, "the unadjusted number of prompt tokens
written to cache"); shared/reference/todays-models.md section 1: a prompt prefix written
to the cache is its own price line, and above 272,000 input tokens the whole request is
billed at the long-context rates.
"""

from __future__ import annotations

from typing import Any

import openai
import pytest

from emulator.server import EmulatorHandle
from emulator.tokens import count_tokens

INSTRUCTIONS = "Answer like a patient teacher. " * 200  # well over 1,024 tokens


def cacheable_prefix() -> int:
    """The emulator's cacheable prefix of INSTRUCTIONS (3 tokens of message framing),
    rounded down to 128 tokens like OpenAI's prompt caching."""
    return (3 + count_tokens(INSTRUCTIONS)) // 128 * 128


def test_a_first_request_writes_its_prefix_to_the_cache_and_a_repeat_reads_it(
    client: openai.OpenAI,
) -> None:
    """InputTokensDetails.cache_write_tokens (openai-python); todays-models.md §1."""
    first = client.responses.create(model="gpt-6.2-sol", instructions=INSTRUCTIONS, input="q1")
    second = client.responses.create(model="gpt-6.2-sol", instructions=INSTRUCTIONS, input="q2")

    assert cacheable_prefix() >= 1024
    assert first.usage is not None and second.usage is not None
    assert first.usage.input_tokens_details.cached_tokens == 0
    assert first.usage.input_tokens_details.cache_write_tokens == cacheable_prefix()
    assert second.usage.input_tokens_details.cached_tokens == cacheable_prefix()
    assert second.usage.input_tokens_details.cache_write_tokens == 0


def test_a_prompt_under_1024_tokens_writes_nothing(client: openai.OpenAI) -> None:
    """Prompt caching starts at 1,024 tokens; InputTokensDetails.cache_write_tokens is 0."""
    response = client.responses.create(model="gpt-6.2-sol", input="A short question")

    assert response.usage is not None
    assert response.usage.input_tokens_details.cache_write_tokens == 0


def test_a_scenario_forces_the_reported_cache_writes_on_both_apis(
    client: openai.OpenAI, emu: EmulatorHandle
) -> None:
    """InputTokensDetails.cache_write_tokens (Responses) and the optional
    PromptTokensDetails.cache_write_tokens (Chat Completions), openai-python."""
    emu.emulator.push({"cache_write_tokens": 3, "cached_tokens": 0})
    response = client.responses.create(model="gpt-6.2-sol", input="A short question")
    emu.emulator.push({"cache_write_tokens": 4, "cached_tokens": 0})
    completion = client.chat.completions.create(
        model="o3-mini", messages=[{"role": "user", "content": "A short question"}]
    )
    plain = client.chat.completions.create(
        model="o3-mini", messages=[{"role": "user", "content": "Another short one"}]
    )

    assert response.usage is not None
    assert response.usage.input_tokens_details.cache_write_tokens == 3
    assert completion.usage is not None and completion.usage.prompt_tokens_details is not None
    assert completion.usage.prompt_tokens_details.cache_write_tokens == 4
    # Optional on Chat Completions: absent when the request wrote nothing.
    assert plain.usage is not None and plain.usage.prompt_tokens_details is not None
    assert plain.usage.prompt_tokens_details.cache_write_tokens is None


def test_cache_writes_never_exceed_the_uncached_input(
    client: openai.OpenAI, emu: EmulatorHandle
) -> None:
    """Written and cached tokens are parts of input_tokens (openai-python ResponseUsage)."""
    emu.emulator.push({"input_tokens": 100, "cached_tokens": 60, "cache_write_tokens": 500})
    usage = client.responses.create(model="gpt-6.2-sol", input="q").usage

    assert usage is not None
    assert usage.input_tokens == 100
    assert usage.input_tokens_details.cached_tokens == 60
    assert usage.input_tokens_details.cache_write_tokens == 40


@pytest.mark.parametrize("input_tokens", [272_000, 272_001])
def test_a_scenario_reports_an_input_size_around_the_long_context_threshold(
    client: openai.OpenAI, emu: EmulatorHandle, input_tokens: int
) -> None:
    """ResponseUsage.input_tokens (openai-python); the 272,000-token long-context
    threshold of todays-models.md §1. The request itself stays small."""
    emu.emulator.push({"input_tokens": input_tokens})
    stream = client.responses.create(model="gpt-6.2-sol", input="q", stream=True)
    completed: Any = [e for e in stream if e.type == "response.completed"][0]

    assert completed.response.usage.input_tokens == input_tokens
    assert completed.response.usage.total_tokens == input_tokens + completed.response.usage.output_tokens


def test_a_scenario_rejects_a_negative_input_size(emu: EmulatorHandle) -> None:
    with pytest.raises(ValueError, match="input_tokens must be an integer >= 0"):
        emu.emulator.push({"input_tokens": -1})
