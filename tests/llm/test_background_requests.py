"""Background mode for long answers (Responses API): at an effort in BACKGROUND_EFFORTS
the request is a stored background stream, whose id is kept on the answer and which is
deleted upstream once the answer ended; at other efforts nothing is stored upstream.
Exact request bodies come from the emulator's journal."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from accounts.models import User
from answers.engine import run_generation
from answers.prompts import prompt_cache_key
from answers.replies import start_turn
from conversations.models import Message
from llm.client import close_clients
from llm.models import ModelProfile
from llm.stream import AsyncChatStream, open_stream_async, resume_stream_async
from llm.tools import tool_schemas
from llm.types import (
    ChatRequest,
    Finished,
    ReasoningItem,
    ResponseStarted,
    ToolCallDelta,
    UsageReport,
)
from tests.llm.test_responses_api import make_responses_profile

pytestmark = pytest.mark.django_db

ENCRYPTED = ["reasoning.encrypted_content"]


@pytest.fixture
def responses_profile(settings: Any, emulator: Any) -> ModelProfile:
    settings.OPENAI_API_KEY = ""  # the offline demo model answers OpenAI profiles
    return make_responses_profile()


def ask(user: User, effort: str, *, profile_name: str = "o3-mini-responses") -> Message:
    turn = start_turn(user=user, organization_id=None, conversation_id=None,
                      content="Why is the sky blue?", reasoning_effort=effort,
                      profile_name=profile_name)
    run_generation(turn.assistant_message.pk)
    return Message.objects.get(pk=turn.assistant_message.pk)


def created(emulator: Any) -> list[dict[str, Any]]:
    return [e for e in emulator.requests_to("/v1/responses") if e["method"] == "POST"]


def sent_body(entry: dict[str, Any]) -> dict[str, Any]:
    body = dict(entry["body"])
    assert isinstance(body.pop("instructions"), str)
    assert body.pop("tools") == [{"type": "function", **t["function"]} for t in tool_schemas()]
    return body


def test_a_high_effort_answer_is_a_stored_background_stream_deleted_once_it_ended(
    alice: User, responses_profile: ModelProfile, emulator: Any
) -> None:
    message = ask(alice, "high")

    assert message.status == Message.Status.DONE and message.content
    [entry] = created(emulator)
    assert sent_body(entry) == {
        "model": "o3-mini", "store": True, "background": True, "stream": True,
        "input": [{"role": "user", "content": "Why is the sky blue?"}],
        "reasoning": {"effort": "high"}, "include": ENCRYPTED,
        "max_output_tokens": 25_000,
        "prompt_cache_key": prompt_cache_key(message.conversation_id),
    }
    assert message.provider_response_id.startswith("resp_")
    upstream = [(e["method"], e["path"]) for e in emulator.journal_snapshot()
                if message.provider_response_id in e["path"]]
    assert upstream == [("DELETE", f"/v1/responses/{message.provider_response_id}")]
    assert message.claims == 1 and not message.usage_estimated
    [item] = message.reasoning_items
    assert item["encrypted_content"].startswith("gAAAAA")


def test_a_medium_effort_answer_stores_nothing_upstream(
    alice: User, responses_profile: ModelProfile, emulator: Any
) -> None:
    message = ask(alice, "medium")

    assert message.status == Message.Status.DONE
    [entry] = created(emulator)
    assert sent_body(entry) == {
        "model": "o3-mini", "store": False, "stream": True,
        "input": [{"role": "user", "content": "Why is the sky blue?"}],
        "reasoning": {"effort": "medium"}, "include": ENCRYPTED,
        "max_output_tokens": 25_000,
        "prompt_cache_key": prompt_cache_key(message.conversation_id),
    }
    assert message.provider_response_id == "" and message.provider_seq is None
    assert [e["method"] for e in emulator.journal_snapshot()] == ["POST"]


def test_an_empty_background_efforts_setting_turns_background_mode_off(
    alice: User, responses_profile: ModelProfile, emulator: Any, settings: Any
) -> None:
    settings.BACKGROUND_EFFORTS = []

    message = ask(alice, "high")

    [entry] = created(emulator)
    assert entry["body"]["store"] is False and "background" not in entry["body"]
    assert message.provider_response_id == ""


def test_the_setting_decides_which_efforts_run_in_background(
    alice: User, responses_profile: ModelProfile, emulator: Any, settings: Any
) -> None:
    settings.BACKGROUND_EFFORTS = ["low"]

    low, high = ask(alice, "low"), ask(alice, "high")

    assert [(e["body"]["store"], e["body"].get("background")) for e in created(emulator)] == [
        (True, True), (False, None)
    ]
    assert low.provider_response_id and not high.provider_response_id


def test_a_chat_completions_profile_at_high_effort_is_never_sent_in_background(
    alice: User, emulator: Any, settings: Any
) -> None:
    settings.OPENAI_API_KEY = ""
    make_responses_profile("o3-mini-chat", api_style="chat")

    message = ask(alice, "high", profile_name="o3-mini-chat")

    assert message.status == Message.Status.DONE and message.provider_response_id == ""
    [entry] = emulator.requests_to("/chat/completions")
    assert "background" not in entry["body"] and "store" not in entry["body"]


def test_a_resumed_stream_takes_what_it_did_not_see_from_the_final_output_once(
    responses_profile: ModelProfile, emulator: Any
) -> None:
    emulator.push({"tool_call": {"name": "calculator", "arguments": {"expression": "6*7"}},
                   "tokens_per_second": 20})
    request = ChatRequest(messages=[{"role": "user", "content": "What is 6*7?"}],
                          reasoning_effort="high", max_completion_tokens=5_000,
                          tools=tool_schemas(), background=True)
    before: list[Any] = []

    async def die_then_resume() -> tuple[AsyncChatStream, AsyncChatStream, list[Any]]:
        try:
            first = await open_stream_async(responses_profile, request)
            events = aiter(first)
            async for event in events:
                before.append(event)
                if isinstance(event, ToolCallDelta):
                    break  # the call was announced; its arguments are still to come
            first.close()  # the worker died here
            await events.aclose()
            assert first.sequence_number is not None
            resumed = await resume_stream_async(responses_profile, first.response_id,
                                                starting_after=first.sequence_number)
            return first, resumed, [event async for event in resumed]
        finally:
            await close_clients()

    first, resumed, after = asyncio.run(die_then_resume())
    [started] = [e for e in before if isinstance(e, ResponseStarted)]
    [reasoning] = [e for e in before if isinstance(e, ReasoningItem)]
    assert first.response_id == started.response_id and first.sequence_number is not None

    calls = [e for e in after if isinstance(e, ToolCallDelta)]
    assert [(c.index, c.id, c.name) for c in calls] == [(0, before[-1].id, "calculator")]
    assert json.loads(calls[0].arguments) == {"expression": "6*7"}
    assert [e for e in after if isinstance(e, ReasoningItem)] == [reasoning]
    assert isinstance(after[-1], Finished) and after[-1].reason == "tool_calls"
    [usage] = [e for e in after if isinstance(e, UsageReport)]
    assert usage.usage.reasoning_tokens > 0
    assert resumed.progress.ended and not resumed.running_upstream
    assert resumed.sequence_number is not None and resumed.sequence_number > first.sequence_number
