"""Responses API: named stream events, reasoning summaries, usage, tools, faults."""

from __future__ import annotations

import json
from typing import Any

import httpx2
import openai
import pytest
from openai.types.responses import FunctionToolParam, ResponseReasoningItem

from emulator.server import EmulatorHandle
from emulator.tokens import count_tokens

# The SDK's FunctionToolParam requires "strict", but the API accepts a tool without it (and
# defaults it); these tests send it without, as many clients do.
TOOLS: list[FunctionToolParam] = [
    {  # type: ignore[typeddict-item]
        "type": "function",
        "name": "calculator",
        "description": "Evaluate arithmetic",
        "parameters": {
            "type": "object",
            "properties": {"expression": {"type": "string"}},
            "required": ["expression"],
        },
    }
]


def events_of(stream: Any) -> list[Any]:
    events = list(stream)
    assert [e.sequence_number for e in events] == list(range(len(events)))
    return events


def test_streaming_events_with_reasoning_summary(client: openai.OpenAI) -> None:
    stream = client.responses.create(
        model="o3-mini",
        instructions="Formatting re-enabled",
        input="Explain closures",
        reasoning={"effort": "low", "summary": "auto"},
        stream=True,
    )
    events = events_of(stream)
    types = [e.type for e in events]
    assert types[:4] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.reasoning_summary_part.added",
    ]
    assert events[2].item.type == "reasoning"
    summary_deltas = "".join(
        e.delta for e in events if e.type == "response.reasoning_summary_text.delta"
    )
    summary_done = next(e for e in events if e.type == "response.reasoning_summary_text.done")
    assert summary_deltas == summary_done.text and "Explain closures" in summary_done.text
    order = [
        "response.reasoning_summary_text.done",
        "response.reasoning_summary_part.done",
        "response.output_item.done",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    positions = [types.index(t, types.index(order[0])) for t in order[:3]]
    assert positions == sorted(positions)
    assert types[-1] == "response.completed"
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert next(e for e in events if e.type == "response.output_text.done").text == text
    final = events[-1].response
    assert final.status == "completed"
    assert final.output_text == text
    assert (
        final.output[0].type == "reasoning" and final.output[0].summary[0].text == summary_done.text
    )
    usage = final.usage
    assert usage.input_tokens == 3 + (3 + count_tokens("Formatting re-enabled")) + (
        3 + count_tokens("Explain closures")
    )
    assert usage.output_tokens_details.reasoning_tokens == 64
    assert usage.output_tokens == 64 + 30
    assert usage.input_tokens_details.cached_tokens == 0
    assert usage.total_tokens == usage.input_tokens + usage.output_tokens


def test_no_summary_unless_requested(client: openai.OpenAI) -> None:
    events = events_of(client.responses.create(model="o3-mini", input="hi", stream=True))
    assert not any("summary" in e.type for e in events)
    assert events[-1].response.output[0].summary == []


def test_non_streaming_response(client: openai.OpenAI) -> None:
    response = client.responses.create(
        model="o3-mini",
        input=[{"role": "user", "content": [{"type": "input_text", "text": "Describe a monad"}]}],
        reasoning={"effort": "high", "summary": "detailed"},
    )
    assert response.object == "response" and response.status == "completed"
    assert 'You asked: "Describe a monad"' in response.output_text
    assert response.usage is not None
    assert response.usage.output_tokens_details.reasoning_tokens == 1024
    assert isinstance(response.output[0], ResponseReasoningItem)
    assert response.output[0].summary
    assert response.model == "o3-mini-2025-01-31"


def test_max_output_tokens_exhausted_by_reasoning(client: openai.OpenAI) -> None:
    response = client.responses.create(model="o3-mini", input="hi", max_output_tokens=100)
    assert response.status == "incomplete"
    assert response.incomplete_details is not None and response.usage is not None
    assert response.incomplete_details.reason == "max_output_tokens"
    assert response.output_text == ""
    assert (
        response.usage.output_tokens == 100 == response.usage.output_tokens_details.reasoning_tokens
    )
    events = events_of(
        client.responses.create(model="o3-mini", input="hi", max_output_tokens=260, stream=True)
    )
    assert events[-1].type == "response.incomplete"
    assert count_tokens(events[-1].response.output_text) == 4


def test_cached_input_tokens(client: openai.OpenAI) -> None:
    instructions = "Answer like a patient teacher. " * 200
    client.responses.create(model="o3-mini", instructions=instructions, input="q1")
    second = client.responses.create(model="o3-mini", instructions=instructions, input="q2")
    assert second.usage is not None
    cached = second.usage.input_tokens_details.cached_tokens
    assert cached == (3 + count_tokens(instructions)) // 128 * 128 and cached >= 1024


def test_function_call_events(client: openai.OpenAI) -> None:
    events = events_of(
        client.responses.create(model="o3-mini", input="what is 2*(5+1)?", tools=TOOLS, stream=True)
    )
    types = [e.type for e in events]
    assert "response.function_call_arguments.delta" in types
    arguments = "".join(
        e.delta for e in events if e.type == "response.function_call_arguments.delta"
    )
    done = next(e for e in events if e.type == "response.function_call_arguments.done")
    assert done.arguments == arguments and json.loads(arguments) == {"expression": "2*(5+1)"}
    call = events[-1].response.output[-1]
    assert call.type == "function_call" and call.name == "calculator" and call.status == "completed"
    follow_up = client.responses.create(
        model="o3-mini",
        input=[
            {"role": "user", "content": "what is 2*(5+1)?"},
            {
                "type": "function_call",
                "call_id": call.call_id,
                "name": call.name,
                "arguments": call.arguments,
            },
            {"type": "function_call_output", "call_id": call.call_id, "output": "12"},
        ],
        tools=TOOLS,
    )
    assert (
        "The `calculator` tool returned" in follow_up.output_text
        and "> 12" in follow_up.output_text
    )


def test_refusal_in_responses(client: openai.OpenAI, emu: EmulatorHandle) -> None:
    emu.emulator.push({"fault": "refusal", "refusal": "No."})
    events = events_of(client.responses.create(model="o3-mini", input="hi", stream=True))
    assert "".join(e.delta for e in events if e.type == "response.refusal.delta") == "No."
    assert events[-1].response.output[-1].content[0].type == "refusal"


def test_error_event_is_yielded(client: openai.OpenAI, emu: EmulatorHandle) -> None:
    emu.emulator.push({"fault": "error_event", "after_tokens": 2})
    events = events_of(client.responses.create(model="o3-mini", input="hi", stream=True))
    deltas = [e for e in events if e.type == "response.output_text.delta"]
    assert len(deltas) == 2
    assert events[-2].type == "error" and events[-2].code == "server_error"
    assert events[-1].type == "response.failed"


def test_timestamps_in_responses(client: openai.OpenAI, emu: EmulatorHandle) -> None:
    emu.emulator.push({"timestamps": True, "reply_tokens": 4})
    events = events_of(client.responses.create(model="o3-mini", input="bench", stream=True))
    deltas = [e.delta for e in events if e.type == "response.output_text.delta"]
    assert [d.split("@")[0] for d in deltas] == [" 0", " 1", " 2", " 3"]
    assert events[-1].response.output_text == "".join(deltas)


@pytest.mark.parametrize(
    ("kwargs", "param", "code"),
    [
        ({"temperature": 0.5}, "temperature", "unsupported_parameter"),
        ({"top_p": 0.5}, "top_p", "unsupported_parameter"),
        ({"reasoning": {"effort": "minimal"}}, "reasoning.effort", "unsupported_value"),
        ({"max_output_tokens": 200000}, "max_output_tokens", "invalid_value"),
        ({"max_output_tokens": 8}, "max_output_tokens", "integer_below_min_value"),
        (
            {"extra_body": {"max_completion_tokens": 5}},
            "max_completion_tokens",
            "unknown_parameter",
        ),
    ],
)
def test_responses_validation(
    client: openai.OpenAI, kwargs: dict[str, Any], param: str, code: str
) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.responses.create(model="o3-mini", input="hi", **kwargs)
    assert (info.value.param, info.value.code) == (param, code)


def test_responses_context_window(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.responses.create(model="o3-mini", input="hello " * 100_100, max_output_tokens=100000)
    assert info.value.code == "context_length_exceeded" and info.value.param == "input"


def test_non_reasoning_model_rejects_reasoning(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.responses.create(model="gpt-4.1-mini", input="hi", reasoning={"effort": "low"})
    assert info.value.code == "unsupported_parameter"
    response = client.responses.create(model="gpt-4.1-mini", input="hi", temperature=0.2)
    assert all(item.type != "reasoning" for item in response.output)
    assert response.usage is not None
    assert response.usage.output_tokens_details.reasoning_tokens == 0


def test_azure_responses_paths(emu: EmulatorHandle) -> None:
    v1 = openai.OpenAI(base_url=emu.url + "/openai/v1/", api_key="k", max_retries=0)
    assert v1.responses.create(model="my-deployment", input="hi").status == "completed"
    dated = openai.AzureOpenAI(
        azure_endpoint=emu.url, api_version="2025-04-01-preview", api_key="k", max_retries=0
    )
    assert dated.responses.create(model="my-deployment", input="hi").status == "completed"
    assert emu.emulator.journal[-1]["path"] == "/openai/responses"
    too_old = httpx2.post(
        emu.url + "/openai/responses?api-version=2024-12-01-preview",
        json={"model": "dep", "input": "hi"},
        headers={"api-key": "k"},
    )
    assert too_old.status_code == 404
