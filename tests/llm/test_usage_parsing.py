"""The usage objects the provider reports, read into our Usage: cache writes (and their
12-hour part) are counted apart from plain input (openai-python 3.6x ``ResponseUsage.
InputTokensDetails`` and ``CompletionUsage.PromptTokensDetails``)."""

from __future__ import annotations

from llm.chat_events import usage_from_chat
from llm.responses_events import usage_from_responses
from llm.types import Usage


def test_a_responses_usage_reports_its_cache_writes_and_their_12_hour_part() -> None:
    usage = usage_from_responses({
        "input_tokens": 5_000, "output_tokens": 300, "total_tokens": 5_300,
        "input_tokens_details": {"cached_tokens": 2_048, "cache_write_tokens": 1_200,
                                 "cache_write_tokens_details": {"ttl_30m_tokens": 1_000,
                                                                "ttl_12h_tokens": 200}},
        "output_tokens_details": {"reasoning_tokens": 100},
    })

    assert usage == Usage(prompt_tokens=5_000, cached_tokens=2_048, completion_tokens=300,
                          reasoning_tokens=100, cache_write_tokens=1_200)
    assert usage.cache_write_12h_tokens == 200


def test_a_chat_usage_reports_cache_writes_only_when_present() -> None:
    written = usage_from_chat({
        "prompt_tokens": 1_500, "completion_tokens": 40, "total_tokens": 1_540,
        "prompt_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 1_408},
    })
    plain = usage_from_chat({"prompt_tokens": 10, "completion_tokens": 4, "total_tokens": 14,
                              "prompt_tokens_details": None})

    assert written.cache_write_tokens == 1_408 and written.prompt_tokens == 1_500
    assert plain.cache_write_tokens == 0 and plain.cached_tokens == 0
