"""A model that takes tools on Chat Completions only at reasoning effort none (gpt-5.4 and
later: todays-models.md section 2) answers without tools at any other effort on a chat-style
profile, and says so under the answer, instead of failing with the provider's 400."""

from __future__ import annotations

from typing import Any

import pytest

from answers.engine import run_generation
from answers.replies import start_turn
from conversations.models import Message
from llm.catalog.sync import ensure_azure_profile, sync_catalog
from llm.models import ModelProfile
from llm.tools import tool_schemas
from realtime.publishing import wait_until_sent
from realtime.replay import get_replay_store

pytestmark = pytest.mark.django_db

NOTICE = ("Tools were off for this answer: {model} takes tools on Chat Completions only at "
          "reasoning effort none.")


@pytest.fixture(autouse=True)
def offline_demo_provider(settings: Any, emulator: Any) -> None:
    """No key configured: the OpenAI profiles are served by the emulator."""
    settings.OPENAI_API_KEY = ""
    settings.AZURE_OPENAI_ENDPOINT = ""
    settings.AZURE_OPENAI_DEPLOYMENT = ""


@pytest.fixture
def sol_on_chat(db: None) -> ModelProfile:
    """The catalog's gpt-6-sol profile, which an admin switched to Chat Completions."""
    sync_catalog(listing=None)
    profile = ModelProfile.objects.get(name="gpt-6-sol")
    assert profile.chat_tools_need_effort_none and profile.accepts("tools")
    profile.api_style = ModelProfile.ApiStyle.CHAT
    profile.save(update_fields=["api_style"])
    return profile


def answer(user: Any, profile: ModelProfile, effort: str) -> Message:
    turn = start_turn(user=user, organization_id=None, conversation_id=None,
                      content="What is 12*(3+4)/5?", reasoning_effort=effort,
                      profile_name=profile.name)
    run_generation(turn.assistant_message.pk)
    return Message.objects.get(pk=turn.assistant_message.pk)


def final_frame(message: Message) -> dict[str, Any]:
    assert wait_until_sent()
    return get_replay_store().read_sync(message.pk)[-1]


def test_a_chat_profile_at_effort_high_sends_no_tools_and_says_so_under_the_answer(
    alice: Any, sol_on_chat: ModelProfile, emulator: Any
) -> None:
    message = answer(alice, sol_on_chat, "high")

    [call] = emulator.requests_to("/chat/completions")
    assert call["path"] == "/v1/chat/completions" and call["status"] == 200
    assert call["body"]["model"] == "gpt-6-sol" and call["body"]["reasoning_effort"] == "high"
    assert "tools" not in call["body"]
    assert message.status == Message.Status.DONE and message.content
    assert message.error_code == "" and message.tool_calls == []
    assert message.error_detail.startswith(NOTICE.format(model="gpt-6-sol"))
    done = final_frame(message)
    assert done["type"] == "done" and done["notice"] == message.error_detail


def test_the_same_profile_at_effort_none_sends_its_tools_and_no_notice(
    alice: Any, sol_on_chat: ModelProfile, emulator: Any
) -> None:
    emulator.push({"tool_call": {"name": "calculate", "arguments": {"expression": "12*(3+4)/5"}}})

    message = answer(alice, sol_on_chat, "none")

    first, second = emulator.requests_to("/chat/completions")
    assert first["body"]["reasoning_effort"] == "none"
    assert first["body"]["tools"] == second["body"]["tools"] == tool_schemas()
    assert message.status == Message.Status.DONE
    assert [call["name"] for call in message.tool_calls] == ["calculate"]
    assert message.error_detail == ""
    assert "notice" not in final_frame(message)


def test_a_profile_an_admin_typed_in_for_the_model_follows_the_catalogs_rule(
    alice: Any, o3_mini: ModelProfile, emulator: Any
) -> None:
    own = ("id", "name", "origin", "catalog_key", "catalog_values", "listed_at")
    values = {f.name: getattr(o3_mini, f.name) for f in ModelProfile._meta.fields if f.name not in own}
    values.update(name="house-sol", display_name="House Sol", model="gpt-6-sol",
                  reasoning_efforts=["none", "low", "medium", "high"], default_effort="low",
                  max_completion_tokens_by_effort={})
    profile = ModelProfile.objects.create(**values)
    assert not profile.chat_tools_need_effort_none and profile.accepts("tools")

    message = answer(alice, profile, "low")

    [call] = emulator.requests_to("/chat/completions")
    assert "tools" not in call["body"] and call["body"]["reasoning_effort"] == "low"
    assert message.status == Message.Status.DONE
    assert message.error_detail.startswith(NOTICE.format(model="gpt-6-sol"))


def test_an_older_model_on_chat_completions_keeps_its_tools_with_reasoning(
    alice: Any, o3_mini: ModelProfile, emulator: Any
) -> None:
    message = answer(alice, o3_mini, "high")

    call = emulator.requests_to("/chat/completions")[0]  # the model may call a tool: rounds follow
    assert call["body"]["tools"] == tool_schemas() and call["body"]["reasoning_effort"] == "high"
    assert message.status == Message.Status.DONE and message.error_detail == ""


def test_an_azure_deployment_whose_profile_says_chat_drops_the_tools_too(
    settings: Any, alice: Any, emulator: Any, emulator_server: Any
) -> None:
    settings.AZURE_OPENAI_ENDPOINT = emulator_server.url
    settings.AZURE_OPENAI_DEPLOYMENT = "team-sol"
    settings.AZURE_OPENAI_API_KEY = "azure-key-1"
    settings.AZURE_OPENAI_MODEL = "gpt-6-sol"
    emulator.config.deployments = {"team-sol": "gpt-6-sol"}
    profile = ensure_azure_profile()
    assert profile is not None and profile.chat_tools_need_effort_none
    profile.api_style = ModelProfile.ApiStyle.CHAT  # an admin's choice
    profile.save(update_fields=["api_style"])

    message = answer(alice, profile, "medium")

    [call] = emulator.requests_to("/chat/completions")
    assert call["path"] == "/openai/deployments/team-sol/chat/completions"
    assert call["headers"]["api-key"] == "azure-key-1"
    assert "tools" not in call["body"] and call["body"]["reasoning_effort"] == "medium"
    assert message.status == Message.Status.DONE
    assert message.error_detail.startswith(NOTICE.format(model="team-sol"))
