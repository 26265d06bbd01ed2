"""Chat Completions over real HTTP with the openai SDK: streams, usage, lengths, formats."""

from __future__ import annotations

import json
import re
import time

import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam
from openai.types.shared import ReasoningEffort

from emulator.server import EmulatorHandle
from emulator.tokens import count_tokens
from tests.emulator.helpers import raw_chunks, user

LONG_DEVELOPER = "You are a meticulous assistant. " * 300  # ~1800 tokens


def expected_prompt_tokens(*contents: str) -> int:
    return 3 + sum(3 + count_tokens(c) for c in contents)


def collect(stream: openai.Stream) -> tuple[str, list]:
    chunks = list(stream)
    text = "".join(
        c.choices[0].delta.content or "" for c in chunks if c.choices and c.choices[0].delta
    )
    return text, chunks


def test_stream_with_usage_chunk(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model="o3-mini",
        messages=user("Explain recursion"),
        stream=True,
        stream_options={"include_usage": True},
    )
    text, chunks = collect(stream)
    first, finish, usage_chunk = chunks[0], chunks[-2], chunks[-1]
    assert first.choices[0].delta.role == "assistant"
    assert first.choices[0].delta.content == ""
    assert finish.choices[0].finish_reason == "stop"
    assert usage_chunk.choices == []
    usage = usage_chunk.usage
    assert usage.prompt_tokens == expected_prompt_tokens("Explain recursion")
    assert usage.completion_tokens_details.reasoning_tokens == 256
    assert usage.completion_tokens == 256 + 30  # reasoning is included, never added twice
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    assert usage.prompt_tokens_details.cached_tokens == 0
    assert count_tokens(text) == 30
    assert 'You asked: "Explain recursion"' in text
    assert all(c.usage is None for c in chunks[:-1])
    assert {c.id for c in chunks} == {first.id}
    assert first.model == "o3-mini-2025-01-31"


def test_wire_shape_of_chunks(emu: EmulatorHandle) -> None:
    chunks = raw_chunks(
        emu.url + "/v1/chat/completions",
        {
            "model": "o3-mini",
            "messages": user("hi"),
            "stream": True,
            "stream_options": {"include_usage": True},
        },
    )
    for chunk in chunks:
        assert list(chunk)[:7] == [
            "id", "object", "created", "model", "service_tier", "system_fingerprint", "choices",
        ]  # fmt: skip
        assert chunk["object"] == "chat.completion.chunk"
        assert "obfuscation" in chunk
        assert "usage" in chunk
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": "", "refusal": None}
    assert chunks[-2]["choices"][0] == {
        "index": 0,
        "delta": {},
        "logprobs": None,
        "finish_reason": "stop",
    }
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens_details"] == {
        "reasoning_tokens": 256,
        "audio_tokens": 0,
        "accepted_prediction_tokens": 0,
        "rejected_prediction_tokens": 0,
    }
    assert chunks[-1]["usage"]["prompt_tokens_details"] == {"cached_tokens": 0, "audio_tokens": 0}
    assert all(c["usage"] is None for c in chunks[:-1])


def test_no_usage_chunk_without_include_usage(emu: EmulatorHandle) -> None:
    chunks = raw_chunks(
        emu.url + "/v1/chat/completions",
        {"model": "o3-mini", "messages": user("hi"), "stream": True},
    )
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    assert all(c["choices"] for c in chunks)
    assert all(c["usage"] is None for c in chunks)


def test_obfuscation_can_be_disabled(emu: EmulatorHandle) -> None:
    body = {
        "model": "o3-mini",
        "messages": user("hi"),
        "stream": True,
        "stream_options": {"include_usage": True, "include_obfuscation": False},
    }
    assert all("obfuscation" not in c for c in raw_chunks(emu.url + "/v1/chat/completions", body))


@pytest.mark.parametrize(("effort", "reasoning"), [("low", 64), ("medium", 256), ("high", 1024)])
def test_reasoning_tokens_per_effort(
    client: openai.OpenAI, effort: ReasoningEffort, reasoning: int
) -> None:
    completion = client.chat.completions.create(
        model="o3-mini", messages=user("hi"), reasoning_effort=effort
    )
    assert completion.usage is not None and completion.usage.completion_tokens_details is not None
    assert completion.usage.completion_tokens_details.reasoning_tokens == reasoning
    assert completion.usage.completion_tokens == reasoning + 30


def test_non_streaming_completion_and_headers(client: openai.OpenAI, emu: EmulatorHandle) -> None:
    emu.emulator.update_config({"reply_tokens": 60})
    raw = client.chat.completions.with_raw_response.create(
        model="o3-mini",
        messages=[{"role": "developer", "content": "Formatting re-enabled"}, *user("Show me code")],
        max_completion_tokens=4000,
    )
    completion = raw.parse()
    assert completion.object == "chat.completion"
    assert completion.choices[0].finish_reason == "stop"
    message = completion.choices[0].message
    assert message.role == "assistant" and message.refusal is None and message.tool_calls is None
    assert message.content is not None and completion.usage is not None
    assert "```python" in message.content and "$e^{i\\pi}+1=0$" in message.content
    assert completion.usage.prompt_tokens == expected_prompt_tokens(
        "Formatting re-enabled", "Show me code"
    )
    assert completion.system_fingerprint == "fp_ef58bd3122"
    for header in (
        "x-request-id",
        "openai-processing-ms",
        "x-ratelimit-limit-requests",
        "x-ratelimit-limit-tokens",
        "x-ratelimit-remaining-requests",
        "x-ratelimit-remaining-tokens",
    ):
        assert raw.headers.get(header), header
    assert raw.headers["x-request-id"].startswith("req_")
    assert int(raw.headers["x-ratelimit-remaining-tokens"]) < int(
        raw.headers["x-ratelimit-limit-tokens"]
    )


def test_default_reply_is_deterministic_and_sized(
    client: openai.OpenAI, emu: EmulatorHandle
) -> None:
    emu.emulator.update_config({"reply_tokens": 200})
    first = client.chat.completions.create(model="o3-mini", messages=user("Tell me about tensors"))
    second = client.chat.completions.create(model="o3-mini", messages=user("Tell me about tensors"))
    assert first.choices[0].message.content == second.choices[0].message.content
    assert first.choices[0].message.content is not None and first.usage is not None
    assert count_tokens(first.choices[0].message.content) == 200
    assert first.usage.completion_tokens == 256 + 200


def test_cached_tokens_for_repeated_prefix(client: openai.OpenAI) -> None:
    developer: ChatCompletionMessageParam = {"role": "developer", "content": LONG_DEVELOPER}
    first = client.chat.completions.create(
        model="o3-mini", messages=[developer, *user("first question")]
    )
    assert first.usage is not None and first.usage.prompt_tokens_details is not None
    assert first.usage.prompt_tokens_details.cached_tokens == 0
    second = client.chat.completions.create(
        model="o3-mini",
        messages=[
            developer,
            *user("first question"),
            {"role": "assistant", "content": first.choices[0].message.content},
            *user("follow-up"),
        ],
    )
    assert second.usage is not None and second.usage.prompt_tokens_details is not None
    cached = second.usage.prompt_tokens_details.cached_tokens
    shared_prefix = 3 + count_tokens(LONG_DEVELOPER) + 3 + count_tokens("first question")
    assert cached == shared_prefix // 128 * 128
    assert 1024 <= cached <= second.usage.prompt_tokens


def test_cached_tokens_in_stream_usage(client: openai.OpenAI) -> None:
    messages: list[ChatCompletionMessageParam] = [
        {"role": "developer", "content": LONG_DEVELOPER},
        *user("same again"),
    ]
    client.chat.completions.create(model="o3-mini", messages=messages)
    stream = client.chat.completions.create(
        model="o3-mini", messages=messages, stream=True, stream_options={"include_usage": True}
    )
    usage = list(stream)[-1].usage
    assert usage is not None and usage.prompt_tokens_details is not None
    # The whole message list is the shared prefix; only the 3 priming tokens are outside it.
    assert usage.prompt_tokens_details.cached_tokens == (usage.prompt_tokens - 3) // 128 * 128


def test_short_prompts_are_never_cached(client: openai.OpenAI) -> None:
    for _ in range(2):
        completion = client.chat.completions.create(model="o3-mini", messages=user("short"))
        assert completion.usage is not None and completion.usage.prompt_tokens_details is not None
        assert completion.usage.prompt_tokens_details.cached_tokens == 0


def test_reasoning_reaching_the_cap_gives_empty_length(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(
        model="o3-mini", messages=user("hi"), max_completion_tokens=100
    )
    assert completion.choices[0].finish_reason == "length"
    assert completion.choices[0].message.content == ""
    assert completion.usage is not None and completion.usage.completion_tokens_details is not None
    assert completion.usage.completion_tokens == 100
    assert completion.usage.completion_tokens_details.reasoning_tokens == 100


def test_cap_cuts_visible_reply(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model="o3-mini",
        messages=user("hi"),
        max_completion_tokens=266,
        stream=True,
        stream_options={"include_usage": True},
    )
    text, chunks = collect(stream)
    assert chunks[-2].choices[0].finish_reason == "length"
    assert count_tokens(text) == 10
    assert chunks[-1].usage.completion_tokens == 266


def test_json_schema_response_format(client: openai.OpenAI) -> None:
    schema = {
        "type": "object",
        "properties": {
            "title": {"type": "string"},
            "score": {"type": "number"},
            "count": {"type": "integer"},
            "done": {"type": "boolean"},
            "tags": {"type": "array", "items": {"type": "string"}},
            "author": {
                "type": "object",
                "properties": {"name": {"type": "string"}, "level": {"enum": ["junior", "senior"]}},
                "required": ["name", "level"],
                "additionalProperties": False,
            },
            "note": {"anyOf": [{"type": "string"}, {"type": "null"}]},
        },
        "required": ["title", "score", "count", "done", "tags", "author", "note"],
        "additionalProperties": False,
    }
    completion = client.chat.completions.create(
        model="o3-mini",
        messages=user("Summarise the history of the printing press please"),
        response_format={
            "type": "json_schema",
            "json_schema": {"name": "summary", "schema": schema, "strict": True},
        },
    )
    assert completion.choices[0].message.content is not None
    value = json.loads(completion.choices[0].message.content)
    assert value == {
        "title": "Summarise the history of the",
        "score": 0,
        "count": 0,
        "done": False,
        "tags": [],
        "author": {"name": "Summarise the history of the", "level": "junior"},
        "note": "Summarise the history of the",
    }


def test_json_object_response_format(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(
        model="o3-mini", messages=user("Give JSON"), response_format={"type": "json_object"}
    )
    assert completion.choices[0].message.content is not None
    assert json.loads(completion.choices[0].message.content) == {"answer": "Give JSON"}


def test_pacing_and_think_pause(client: openai.OpenAI, emu: EmulatorHandle) -> None:
    emu.emulator.push({"tokens_per_second": 100, "reply_tokens": 21, "think_ms": 300})
    start = time.perf_counter()
    stream = client.chat.completions.create(model="o3-mini", messages=user("pace me"), stream=True)
    arrivals: list[float] = []
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta and chunk.choices[0].delta.content:
            arrivals.append(time.perf_counter() - start)
    assert len(arrivals) == 21
    assert arrivals[0] >= 0.29  # silent reasoning pause before the first delta
    spread = arrivals[-1] - arrivals[0]
    assert 0.17 <= spread <= 0.6  # 20 gaps at 10 ms


def test_chunk_tokens_groups_real_tokens(emu: EmulatorHandle) -> None:
    emu.emulator.push({"chunk_tokens": 3, "reply_tokens": 30})
    chunks = raw_chunks(
        emu.url + "/v1/chat/completions",
        {"model": "o3-mini", "messages": user("hi"), "stream": True},
    )
    deltas = [c["choices"][0]["delta"]["content"] for c in chunks[1:-1]]
    assert len(deltas) == 10
    assert sum(count_tokens(d) for d in deltas) >= 28  # re-tokenizing pieces may merge a little


def test_explicit_reply_and_unicode(client: openai.OpenAI, emu: EmulatorHandle) -> None:
    reply = "Grüße 👋🏽 — 你好!"
    emu.emulator.push({"reply": reply})
    text, _ = collect(
        client.chat.completions.create(model="o3-mini", messages=user("hi"), stream=True)
    )
    assert text == reply


def test_timestamps_bench_mode(client: openai.OpenAI, emu: EmulatorHandle) -> None:
    emu.emulator.push({"timestamps": True, "reply_tokens": 12, "tokens_per_second": 400})
    stream = client.chat.completions.create(
        model="o3-mini", messages=user("bench"), stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    deltas = [
        c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content
    ]
    assert len(deltas) == 12
    stamps = []
    for index, delta in enumerate(deltas):
        match = re.fullmatch(r" (\d+)@(\d+\.\d{6})", delta)
        assert match and int(match[1]) == index
        stamps.append(float(match[2]))
    assert stamps == sorted(stamps) and stamps[-1] - stamps[0] >= 0.02
    assert abs(stamps[-1] - time.time()) < 5
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 256 + 12


def test_bench_mode_from_config(client: openai.OpenAI, emu: EmulatorHandle) -> None:
    emu.emulator.update_config({"timestamps": True, "reply_tokens": 5})
    completion = client.chat.completions.create(model="o3-mini", messages=user("bench"))
    assert completion.choices[0].message.content is not None
    assert re.fullmatch(r"( \d+@\d+\.\d{6}){5}", completion.choices[0].message.content)


def test_non_reasoning_model_accepts_sampling_params(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(
        model="gpt-4.1-mini", messages=user("hi"), temperature=0.2, top_p=0.9, max_tokens=20
    )
    assert completion.model == "gpt-4.1-mini-2025-04-14"
    assert completion.usage is not None and completion.usage.completion_tokens_details is not None
    assert completion.usage.completion_tokens_details.reasoning_tokens == 0
    assert completion.usage.completion_tokens == 20
    assert completion.choices[0].finish_reason == "length"


def test_stop_sequence_on_non_reasoning_model(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(
        model="gpt-4.1-mini", messages=user("hi"), stop=["```"]
    )
    assert completion.choices[0].message.content is not None
    assert "```" not in completion.choices[0].message.content
    assert completion.choices[0].message.content.startswith("You asked")


def test_successor_model_supports_minimal_effort(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(
        model="gpt-5.6-sol", messages=user("hi"), reasoning_effort="minimal"
    )
    assert completion.usage is not None and completion.usage.completion_tokens_details is not None
    assert completion.usage.completion_tokens_details.reasoning_tokens == 16
    assert completion.model == "gpt-5.6-sol"


def test_o3_mini_is_still_served(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(model="o3-mini-2025-01-31", messages=user("hi"))
    assert completion.choices[0].message.content
