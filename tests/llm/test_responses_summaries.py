"""Responses-style profiles ask for reasoning summaries, and when the provider refuses them
(an OpenAI org that is not verified) the answer still comes, without, and the profile
stops asking. Exact request bodies come from the emulator's journal."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from accounts.models import User
from answers.engine import run_generation
from answers.prompts import prompt_cache_key
from answers.replies import start_turn
from conversations.models import Message
from emulator.errors import UNVERIFIED_SUMMARY_MESSAGE
from llm.models import ModelProfile

pytestmark = pytest.mark.django_db


@pytest.fixture
def responses_profile(settings: Any, emulator: Any) -> ModelProfile:
    settings.OPENAI_API_KEY = ""  # the offline demo model answers OpenAI profiles
    return ModelProfile.objects.create(
        name="o3-mini-responses", display_name="o3-mini (Responses)", provider="openai",
        model="o3-mini", api_style="responses",
        accepted_params=["reasoning_effort", "max_completion_tokens"],
        reasoning_efforts=["low", "medium", "high"], default_effort="medium",
        context_window=200_000, max_output_tokens=100_000, max_completion_tokens=25_000,
        input_price=Decimal("1.10"), cached_input_price=Decimal("0.55"), output_price=Decimal("4.40"),
    )


def ask(user: User, content: str) -> Message:
    turn = start_turn(user=user, organization_id=None, conversation_id=None, content=content,
                      reasoning_effort="low", profile_name="o3-mini-responses")
    run_generation(turn.assistant_message.pk)
    return Message.objects.get(pk=turn.assistant_message.pk)


def answer_bodies(emulator: Any) -> list[dict[str, Any]]:
    return [e["body"] for e in emulator.requests_to("/v1/responses")]


def without_input(body: dict[str, Any]) -> dict[str, Any]:
    assert isinstance(body.pop("instructions"), str)
    assert body.pop("input")[-1] == {"role": "user", "content": QUESTION}
    return body


QUESTION = "Why is the sky blue?"


def test_a_verified_org_gets_the_summary_streamed_into_the_answer(
    alice: User, responses_profile: ModelProfile, emulator: Any
) -> None:
    message = ask(alice, QUESTION)

    assert message.status == Message.Status.DONE and message.content
    assert QUESTION in message.reasoning_summary  # the emulator summarises the question
    [body] = answer_bodies(emulator)
    assert without_input(body) == {
        "model": "o3-mini", "store": False, "stream": True,
        "reasoning": {"effort": "low", "summary": "auto"}, "max_output_tokens": 25_000,
        "include": ["reasoning.encrypted_content"],
        "prompt_cache_key": prompt_cache_key(message.conversation_id),
    }


def test_an_unverified_org_gets_its_answer_without_a_summary_and_the_profile_remembers(
    alice: User, responses_profile: ModelProfile, emulator: Any
) -> None:
    emulator.config.verified_org = False

    first = ask(alice, QUESTION)

    assert first.status == Message.Status.DONE and first.content
    assert first.reasoning_summary == "" and first.error_code == ""
    refused, retried = emulator.requests_to("/v1/responses")
    assert refused["status"] == 400 and retried["status"] == 200
    assert without_input(refused["body"])["reasoning"] == {"effort": "low", "summary": "auto"}
    assert without_input(retried["body"]) == {
        "model": "o3-mini", "store": False, "stream": True,
        "reasoning": {"effort": "low"}, "max_output_tokens": 25_000,
        "include": ["reasoning.encrypted_content"],
        "prompt_cache_key": prompt_cache_key(first.conversation_id),
    }
    responses_profile.refresh_from_db()
    assert responses_profile.reasoning_summaries is False

    emulator.reset()
    second = ask(alice, QUESTION)

    assert second.status == Message.Status.DONE
    [body] = answer_bodies(emulator)  # asked without a summary straight away
    assert body["reasoning"] == {"effort": "low"}


def test_the_emulator_answers_an_unverified_summary_request_with_openais_400(
    emulator: Any, emulator_server: Any
) -> None:
    import httpx2

    emulator.config.verified_org = False
    response = httpx2.post(
        emulator_server.url + "/v1/responses",
        headers={"Authorization": "Bearer sk-test"},
        json={"model": "o3-mini", "input": "hi", "reasoning": {"effort": "low", "summary": "auto"}},
    )
    assert response.status_code == 400
    assert response.json() == {"error": {
        "message": UNVERIFIED_SUMMARY_MESSAGE, "type": "invalid_request_error",
        "param": "reasoning.summary", "code": "unsupported_value"}}
    plain = httpx2.post(
        emulator_server.url + "/v1/responses",
        headers={"Authorization": "Bearer sk-test"},
        json={"model": "o3-mini", "input": "hi", "reasoning": {"effort": "low"}},
    )
    assert plain.status_code == 200
