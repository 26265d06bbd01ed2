"""Chat Completions refuses function tools with reasoning on gpt-5.4 and later; Responses
takes both.

Sources (emulator.models.CHAT_TOOLS_RULE_SOURCES): todays-models.md section 2 quoting
community.openai.com thread 1386454, LibreChat issue #14231 and the gpt-6-luna model page
("Chat Completions supports function calling only with reasoning_effort set to none"); the
400 body with param ``reasoning_effort`` and code null as reported in GEMISIS/leviath#333 and
GoogleChromeLabs/webmcp-tools#417; refused with no effort sent too, since the model's default
applies (laurent22/joplin#16451). Azure's wording is unknown: its Chat Completions paths
answer with the same body.
"""

from __future__ import annotations

from typing import Any

import httpx2
import openai
import pytest

from emulator.models import MODEL_CATALOGUE, lookup_model
from emulator.server import EmulatorHandle
from tests.emulator.helpers import AZURE_VERSION, user

TOOL: Any = {
    "type": "function",
    "function": {
        "name": "calculate",
        "description": "Evaluate arithmetic.",
        "parameters": {"type": "object", "properties": {"expression": {"type": "string"}},
                       "required": ["expression"]},
    },
}


def refusal(model: str) -> dict[str, Any]:
    return {"error": {
        "message": f"Function tools with reasoning_effort are not supported for {model} in "
                   "/v1/chat/completions. To use function tools, use /v1/responses or set "
                   "reasoning_effort to 'none'.",
        "type": "invalid_request_error", "param": "reasoning_effort", "code": None,
    }}


def post(url: str, body: dict[str, Any], **headers: str) -> httpx2.Response:
    return httpx2.post(url, json=body, headers={"authorization": "Bearer x", **headers}, timeout=30)


def test_the_model_table_marks_gpt_5_4_and_later_and_no_older_model() -> None:
    marked = {name for name, data in MODEL_CATALOGUE.items() if data.get("chat_tools_need_effort_none")}
    assert {"gpt-5.4", "gpt-5.6-sol", "gpt-6-sol"} <= marked
    assert not marked & {"o3-mini", "gpt-4.1-mini"}
    assert lookup_model("gpt-5.4-2026-03-05").chat_tools_need_effort_none  # type: ignore[union-attr]


@pytest.mark.parametrize("effort", ["low", "medium", "high", "xhigh", None])
def test_chat_completions_refuses_function_tools_with_any_effort_but_none(
    emu: EmulatorHandle, effort: str | None
) -> None:
    body: dict[str, Any] = {"model": "gpt-6-sol", "messages": user("What is 6*7?"), "tools": [TOOL]}
    if effort is not None:
        body["reasoning_effort"] = effort  # else the model's default effort (medium) applies

    response = post(emu.url + "/v1/chat/completions", body)

    assert response.status_code == 400
    assert response.json() == refusal("gpt-6-sol")


def test_the_sdk_raises_the_refusal_as_a_bad_request_naming_the_parameter(
    client: openai.OpenAI,
) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="gpt-5.6-sol", messages=user("hi"), tools=[TOOL],
                                       reasoning_effort="low")
    assert caught.value.param == "reasoning_effort" and caught.value.code is None
    assert caught.value.type == "invalid_request_error"


def test_chat_completions_takes_function_tools_at_effort_none_and_reasoning_without_tools(
    client: openai.OpenAI, emu: EmulatorHandle
) -> None:
    with_tools = client.chat.completions.create(
        model="gpt-6-sol", messages=user("hi"), tools=[TOOL], reasoning_effort="none",
    )
    without_tools = client.chat.completions.create(
        model="gpt-6-sol", messages=user("hi"), reasoning_effort="high",
    )
    assert with_tools.choices[0].finish_reason == "stop"
    assert without_tools.choices[0].finish_reason == "stop"


def test_an_older_reasoning_model_takes_tools_with_reasoning_on_chat_completions(
    client: openai.OpenAI,
) -> None:
    completion = client.chat.completions.create(
        model="o3-mini", messages=user("hi"), tools=[TOOL], reasoning_effort="high",
    )
    assert completion.choices[0].finish_reason == "stop"


@pytest.mark.parametrize("path", ["/openai/v1/chat/completions",
                                  f"/openai/deployments/team-sol/chat/completions?api-version={AZURE_VERSION}"])
def test_azure_chat_completions_refuses_them_alike(emu: EmulatorHandle, path: str) -> None:
    emu.emulator.config.deployments = {"team-sol": "gpt-6-sol"}
    body = {"model": "team-sol", "messages": user("hi"), "tools": [TOOL], "reasoning_effort": "high"}

    response = post(emu.url + path, body, **{"api-key": "x"})

    assert response.status_code == 400
    assert response.json() == refusal("gpt-6-sol")


@pytest.mark.parametrize("prefix", ["/v1", "/openai/v1"])
def test_the_responses_api_takes_function_tools_with_reasoning(emu: EmulatorHandle, prefix: str) -> None:
    emu.emulator.config.deployments = {"team-sol": "gpt-6-sol"}
    emu.emulator.push({"tool_call": {"name": "calculate", "arguments": {"expression": "6*7"}}})
    tool = {"type": "function", **TOOL["function"]}
    body = {"model": "team-sol" if prefix == "/openai/v1" else "gpt-6-sol",
            "input": [{"role": "user", "content": "What is 6*7?"}], "tools": [tool],
            "reasoning": {"effort": "high"}, "store": False}

    response = post(emu.url + prefix + "/responses", body)

    assert response.status_code == 200, response.text
    result = response.json()
    assert result["status"] == "completed"
    [call] = [item for item in result["output"] if item["type"] == "function_call"]
    assert call["name"] == "calculate"
