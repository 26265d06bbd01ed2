"""What the provider receives is the body ``llm.bodies`` built, key for key, for both API
styles and an Azure deployment: the stream's request hands the conversation and tools to
the SDK as given (``llm.stream._sdk_arguments``) instead of through its typed arguments."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from llm.bodies import build_chat_body, build_responses_body
from llm.client import build_async_client
from llm.models import ModelProfile
from llm.stream import open_stream_async
from llm.types import ChatRequest

pytestmark = pytest.mark.django_db

TOOLS = [{"type": "function", "function": {
    "name": "lookup", "description": "Look a word up.",
    "parameters": {"type": "object", "properties": {"word": {"type": "string"}}, "required": ["word"]},
}}]


def _request() -> ChatRequest:
    return ChatRequest(
        messages=[
            {"role": "developer", "content": "Be brief."},
            {"role": "user", "content": "What is a monad?"},
            {"role": "assistant", "content": "A monoid in the category of endofunctors."},
            {"role": "user", "content": "Plainer, please. \u00e9\u6f22"},
        ],
        reasoning_effort="low", max_completion_tokens=4000, tools=TOOLS,
    )


def _sent(profile: ModelProfile, request: ChatRequest) -> None:
    async def send() -> None:
        stream = await open_stream_async(profile, request)
        async for _event in stream:
            pass
        await build_async_client(profile).close()

    asyncio.run(send())


def _posted(emulator: Any, suffix: str) -> dict[str, Any]:
    [call] = [entry for entry in emulator.requests_to(suffix) if entry["method"] == "POST"]
    body: dict[str, Any] = call["body"]
    return body


def test_a_chat_completions_request_is_the_built_body(
    make_profile: Callable[..., Any], emulator: Any
) -> None:
    profile = make_profile()
    request = _request()

    _sent(profile, request)

    assert _posted(emulator, "/chat/completions") == build_chat_body(profile, request)


def test_a_responses_request_is_the_built_body(make_profile: Callable[..., Any], emulator: Any) -> None:
    profile = make_profile(api_style=ModelProfile.ApiStyle.RESPONSES, model="gpt-5.6-sol",
                           accepted_params=["reasoning_effort", "tools"])
    request = _request()

    _sent(profile, request)

    body = _posted(emulator, "/responses")
    assert body == build_responses_body(profile, request)
    assert body["input"] and body["tools"][0]["name"] == "lookup"


def test_an_azure_deployment_still_gets_its_deployment_path(
    make_profile: Callable[..., Any], settings: Any, emulator: Any
) -> None:
    settings.AZURE_OPENAI_API_KEY = "azure-key-123"
    settings.AZURE_OPENAI_ENDPOINT = settings.EMULATOR_URL
    profile = make_profile(provider="azure", model="team-o3", endpoint=settings.EMULATOR_URL,
                           api_version="2024-12-01-preview")
    request = _request()

    _sent(profile, request)

    [call] = emulator.requests_to("/chat/completions")
    assert call["path"] == "/openai/deployments/team-o3/chat/completions"
    assert call["body"] == build_chat_body(profile, request)
