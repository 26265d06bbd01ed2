"""Tool calling: streamed tool-call deltas, demo rules, scripted calls and tool results."""

from __future__ import annotations

import json
from typing import Any, cast

import openai
from openai.types.chat import (
    ChatCompletion,
    ChatCompletionAssistantMessageParam,
    ChatCompletionFunctionToolParam,
    ChatCompletionMessageFunctionToolCall,
    ChatCompletionMessageParam,
)

from emulator.server import EmulatorHandle
from tests.emulator.helpers import raw_chunks, user


def function_tool(name: str, properties: dict[str, Any]) -> ChatCompletionFunctionToolParam:
    return {
        "type": "function",
        "function": {
            "name": name,
            "description": f"{name} tool",
            "parameters": {
                "type": "object",
                "properties": properties,
                "required": list(properties),
            },
        },
    }


CALCULATOR = function_tool("calculator", {"expression": {"type": "string"}})
CONVERTER = function_tool(
    "convert_units",
    {"value": {"type": "number"}, "from_unit": {"type": "string"}, "to_unit": {"type": "string"}},
)
WEATHER = function_tool("get_weather", {"city": {"type": "string"}})


def first_call(completion: ChatCompletion) -> ChatCompletionMessageFunctionToolCall:
    """The first tool call of a completion; every tool here is a function tool."""
    tool_calls = completion.choices[0].message.tool_calls
    assert tool_calls is not None
    assert isinstance(tool_calls[0], ChatCompletionMessageFunctionToolCall)
    return tool_calls[0]


def accumulate(stream: openai.Stream) -> tuple[dict[int, dict[str, Any]], str | None, list]:
    """Accumulate tool-call deltas by index, the way a client must."""
    calls: dict[int, dict[str, Any]] = {}
    finish = None
    chunks = list(stream)
    for chunk in chunks:
        for choice in chunk.choices:
            if choice.delta is not None:
                for delta in choice.delta.tool_calls or []:
                    call = calls.setdefault(
                        delta.index, {"id": None, "name": None, "arguments": ""}
                    )
                    if delta.id:
                        call["id"] = delta.id
                    if delta.function and delta.function.name:
                        call["name"] = delta.function.name
                    if delta.function and delta.function.arguments:
                        call["arguments"] += delta.function.arguments
            finish = choice.finish_reason or finish
    return calls, finish, chunks


def test_arithmetic_demo_rule_streams_a_tool_call(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model="o3-mini",
        messages=user("What is 12*(3+4)?"),
        tools=[WEATHER, CALCULATOR],
        stream=True,
        stream_options={"include_usage": True},
    )
    calls, finish, chunks = accumulate(stream)
    assert finish == "tool_calls"
    assert list(calls) == [0]
    assert calls[0]["name"] == "calculator" and calls[0]["id"].startswith("call_")
    assert json.loads(calls[0]["arguments"]) == {"expression": "12*(3+4)"}
    first = chunks[0].choices[0].delta.tool_calls[0]
    assert first.id and first.type == "function" and first.function.arguments == ""
    later = [c.choices[0].delta.tool_calls[0] for c in chunks[1:-2]]
    assert later and all(d.id is None and d.function.name is None for d in later)
    assert (
        chunks[-1].usage.completion_tokens
        > chunks[-1].usage.completion_tokens_details.reasoning_tokens
    )


def test_tool_call_wire_shape(emu: EmulatorHandle) -> None:
    chunks = raw_chunks(
        emu.url + "/v1/chat/completions",
        {
            "model": "o3-mini",
            "messages": user("calculate 2^10"),
            "tools": [CALCULATOR],
            "stream": True,
        },
    )
    delta = chunks[0]["choices"][0]["delta"]
    assert delta["role"] == "assistant" and delta["content"] is None and delta["refusal"] is None
    assert delta["tool_calls"][0]["function"] == {"name": "calculator", "arguments": ""}
    assert chunks[1]["choices"][0]["delta"] == {
        "tool_calls": [{"index": 0, "function": {"arguments": '{"'}}]
    }
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"


def test_calculate_keyword_rule(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(
        model="o3-mini",
        messages=user("Please calculate the area of a 3 by 4 rectangle"),
        tools=[CALCULATOR],
    )
    call = first_call(completion)
    assert json.loads(call.function.arguments) == {"expression": "the area of a 3 by 4 rectangle"}
    assert completion.choices[0].finish_reason == "tool_calls"
    assert completion.choices[0].message.content is None


def test_convert_demo_rule(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(
        model="o3-mini", messages=user("convert 5 km to mi"), tools=[CALCULATOR, CONVERTER]
    )
    call = first_call(completion)
    assert call.function.name == "convert_units"
    assert json.loads(call.function.arguments) == {"value": 5, "from_unit": "km", "to_unit": "mi"}


def test_no_tool_call_without_a_matching_rule(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(
        model="o3-mini", messages=user("tell me a story"), tools=[CALCULATOR]
    )
    assert completion.choices[0].message.tool_calls is None
    none_choice = client.chat.completions.create(
        model="o3-mini", messages=user("what is 1+1"), tools=[CALCULATOR], tool_choice="none"
    )
    assert none_choice.choices[0].message.tool_calls is None


def test_forced_tool_choice_builds_arguments_from_schema(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(
        model="o3-mini",
        messages=user("Oslo please, right now"),
        tools=[CALCULATOR, WEATHER],
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
    )
    call = first_call(completion)
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "Oslo please, right now"}


def test_scenario_tool_call_with_trigger(client: openai.OpenAI, emu: EmulatorHandle) -> None:
    emu.emulator.push(
        {"match": "weather", "tool_call": {"name": "get_weather", "arguments": {"city": "Oslo"}}}
    )
    plain = client.chat.completions.create(model="o3-mini", messages=user("hello"), tools=[WEATHER])
    assert plain.choices[0].message.tool_calls is None
    calls, finish, _ = accumulate(
        client.chat.completions.create(
            model="o3-mini",
            messages=user("What's the weather in Oslo?"),
            tools=[WEATHER],
            stream=True,
        )
    )
    assert finish == "tool_calls" and calls[0]["name"] == "get_weather"
    assert json.loads(calls[0]["arguments"]) == {"city": "Oslo"}


def test_several_scripted_tool_calls(client: openai.OpenAI, emu: EmulatorHandle) -> None:
    emu.emulator.push(
        {"tool_calls": [{"name": "a", "arguments": {"x": 1}}, {"name": "b", "arguments": "{}"}]}
    )
    calls, finish, _ = accumulate(
        client.chat.completions.create(
            model="o3-mini", messages=user("go"), tools=[WEATHER], stream=True
        )
    )
    assert [calls[i]["name"] for i in sorted(calls)] == ["a", "b"]
    assert calls[1]["arguments"] == "{}" and json.loads(calls[0]["arguments"]) == {"x": 1}
    assert calls[0]["id"] != calls[1]["id"]


def test_tool_result_round_trip(client: openai.OpenAI) -> None:
    first = client.chat.completions.create(
        model="o3-mini", messages=user("what is 6*7"), tools=[CALCULATOR]
    )
    call = first_call(first)
    messages: list[ChatCompletionMessageParam] = [
        *user("what is 6*7"),
        cast(
            ChatCompletionAssistantMessageParam,
            first.choices[0].message.model_dump(exclude_none=True),
        ),
        {"role": "tool", "tool_call_id": call.id, "content": "42"},
    ]
    stream = client.chat.completions.create(
        model="o3-mini", messages=messages, tools=[CALCULATOR], stream=True
    )
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert "The `calculator` tool returned" in text and "> 42" in text
