"""Responses-style profiles: nothing is stored at the provider (store=false), the encrypted
reasoning comes back with each answer, is kept on the Message, and is sent back before
that answer on later turns and before the tool calls of the next tool round. Exact
request bodies come from the emulator's journal; the emulator refuses tampered or
orphaned reasoning items, so an accepted request proves the round trip was faithful."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from accounts.models import User
from answers.engine import run_generation
from answers.prompts import prompt_cache_key
from answers.replies import start_turn
from billing.models import Reservation
from conversations.models import Conversation, Message
from llm.models import ModelProfile
from llm.pricing import Prices, exact_cost, usage_cost
from llm.types import Usage

pytestmark = pytest.mark.django_db

ENCRYPTED = ["reasoning.encrypted_content"]


def make_responses_profile(name: str = "o3-mini-responses", **fields: Any) -> ModelProfile:
    values: dict[str, Any] = {
        "name": name, "display_name": f"{name} (Responses)", "provider": "openai",
        "model": "o3-mini", "api_style": "responses",
        "accepted_params": ["reasoning_effort", "max_completion_tokens", "tools"],
        "reasoning_efforts": ["low", "medium", "high"], "default_effort": "medium",
        "context_window": 200_000, "max_output_tokens": 100_000,
        "max_completion_tokens": 25_000, "reasoning_summaries": False,
        "input_price": Decimal("1.10"), "cached_input_price": Decimal("0.55"),
        "output_price": Decimal("4.40"),
    }
    values.update(fields)
    return ModelProfile.objects.create(**values)


@pytest.fixture
def responses_profile(settings: Any, emulator: Any) -> ModelProfile:
    settings.OPENAI_API_KEY = ""  # the offline demo model answers OpenAI profiles
    return make_responses_profile()


def ask(user: User, content: str, *, conversation_id: int | None = None,
        profile_name: str = "o3-mini-responses") -> Message:
    turn = start_turn(user=user, organization_id=None, conversation_id=conversation_id,
                      content=content, reasoning_effort="low", profile_name=profile_name)
    run_generation(turn.assistant_message.pk)
    return Message.objects.get(pk=turn.assistant_message.pk)


def journal(emulator: Any) -> list[dict[str, Any]]:
    return emulator.requests_to("/v1/responses")


def test_the_request_asks_for_encrypted_reasoning_and_stores_nothing_upstream(
    alice: User, responses_profile: ModelProfile, emulator: Any
) -> None:
    message = ask(alice, "Why is the sky blue?")

    assert message.status == Message.Status.DONE and message.content
    [entry] = journal(emulator)
    body = dict(entry["body"])
    assert isinstance(body.pop("instructions"), str)
    assert body == {
        "model": "o3-mini", "store": False, "stream": True,
        "input": [{"role": "user", "content": "Why is the sky blue?"}],
        "reasoning": {"effort": "low"}, "include": ENCRYPTED,
        "max_output_tokens": 25_000,
        "prompt_cache_key": prompt_cache_key(message.conversation_id),
        "tools": body["tools"],
    }
    [item] = message.reasoning_items
    assert item["type"] == "reasoning" and item["id"].startswith("rs_")
    assert item["encrypted_content"].startswith("gAAAAA")


def test_a_later_turn_sends_the_reasoning_back_right_before_its_answer(
    alice: User, responses_profile: ModelProfile, emulator: Any
) -> None:
    first = ask(alice, "Why is the sky blue?")

    second = ask(alice, "And the sunset?", conversation_id=first.conversation_id)

    assert second.status == Message.Status.DONE and second.error_code == ""
    refresh = journal(emulator)
    assert [e["status"] for e in refresh] == [200, 200]
    assert refresh[1]["body"]["input"] == [
        {"role": "user", "content": "Why is the sky blue?"},
        *first.reasoning_items,
        {"role": "assistant", "content": first.content},
        {"role": "user", "content": "And the sunset?"},
    ]
    # The emulator verified the blob: an edited one would have failed the turn.
    assert first.reasoning_items[0]["encrypted_content"] in str(refresh[1]["body"])


def test_a_tool_round_sends_the_reasoning_before_the_function_call(
    alice: User, responses_profile: ModelProfile, emulator: Any
) -> None:
    emulator.push({"tool_call": {"name": "calculator", "arguments": '{"expression": "6*7"}'}})

    message = ask(alice, "What is 6*7?")

    assert message.status == Message.Status.DONE and message.tool_calls[0]["result"]
    tool_round, answer_round = journal(emulator)
    assert tool_round["status"] == answer_round["status"] == 200
    sent = answer_round["body"]["input"]
    kinds = [item.get("type") or item["role"] for item in sent]
    assert kinds == ["user", "reasoning", "function_call", "function_call_output"]
    assert sent[1]["encrypted_content"].startswith("gAAAAA")
    assert sent[2]["name"] == "calculator" and sent[3]["call_id"] == sent[2]["call_id"]
    # The answer keeps the reasoning of its last round (the one that wrote the text).
    [kept] = message.reasoning_items
    assert kept["id"] != sent[1]["id"]


def test_trimming_history_drops_a_reasoning_item_together_with_its_answer(
    alice: User, settings: Any, emulator: Any
) -> None:
    settings.OPENAI_API_KEY = ""
    # Room for the instructions and the new question only: older turns are left out.
    make_responses_profile(context_window=25_000 + 256 + 3 + 60, max_completion_tokens=25_000)
    first = ask(alice, "Tell me about the sky. " * 30)

    second = ask(alice, "And the sunset?", conversation_id=first.conversation_id)

    assert first.reasoning_items and second.status == Message.Status.DONE
    assert second.history_truncated == 1
    sent = journal(emulator)[1]["body"]["input"]
    assert sent == [{"role": "user", "content": "And the sunset?"}]


def test_an_answer_from_another_model_is_sent_without_its_reasoning(
    alice: User, responses_profile: ModelProfile, emulator: Any
) -> None:
    sol = make_responses_profile("sol-responses", model="gpt-5.6-sol",
                                 reasoning_efforts=["minimal", "low", "medium", "high"])
    first = ask(alice, "Why is the sky blue?")

    # The person switches the conversation to another model for the next question.
    second = ask(alice, "And the sunset?", conversation_id=first.conversation_id,
                 profile_name=sol.name)
    assert Conversation.objects.get(pk=first.conversation_id).profile == sol

    # gpt-5.6-sol cannot read o3-mini's blob (the provider would refuse the request).
    assert second.status == Message.Status.DONE
    assert journal(emulator)[1]["body"]["input"] == [
        {"role": "user", "content": "Why is the sky blue?"},
        {"role": "assistant", "content": first.content},
        {"role": "user", "content": "And the sunset?"},
    ]


def test_a_chat_completions_profile_never_sends_reasoning_items(
    alice: User, emulator: Any, settings: Any
) -> None:
    settings.OPENAI_API_KEY = ""
    make_responses_profile("o3-mini-chat", api_style="chat")
    first = ask(alice, "Why is the sky blue?", profile_name="o3-mini-chat")

    second = ask(alice, "And the sunset?", conversation_id=first.conversation_id,
                 profile_name="o3-mini-chat")

    assert first.reasoning_items == [] and second.status == Message.Status.DONE
    [_, later] = emulator.requests_to("/chat/completions")
    assert [set(m) for m in later["body"]["messages"]] == [{"role", "content"}] * 4
    assert "include" not in later["body"] and "store" not in later["body"]


# --- verbosity, prompt_cache_key, service_tier ----------------------------------------

LONG = "Describe the water cycle in detail, step by step, with examples. " * 110


def test_a_profiles_verbosity_is_sent_as_text_verbosity(
    alice: User, responses_profile: ModelProfile, emulator: Any
) -> None:
    ModelProfile.objects.filter(pk=responses_profile.pk).update(verbosity="low")

    message = ask(alice, "Why is the sky blue?")

    assert message.status == Message.Status.DONE
    body = journal(emulator)[0]["body"]
    assert body["text"] == {"verbosity": "low"}
    assert "service_tier" not in body


def test_without_verbosity_no_text_options_are_sent(
    alice: User, responses_profile: ModelProfile, emulator: Any
) -> None:
    ask(alice, "Why is the sky blue?")

    assert "text" not in journal(emulator)[0]["body"]


def test_a_conversation_keeps_one_prompt_cache_key_and_its_long_prefix_hits_the_cache(
    alice: User, responses_profile: ModelProfile, emulator: Any
) -> None:
    first = ask(alice, LONG)
    second = ask(alice, "Summarise that.", conversation_id=first.conversation_id)
    other = ask(alice, LONG)  # same prefix, another conversation

    bodies = [e["body"] for e in journal(emulator)]
    key = prompt_cache_key(first.conversation_id)
    assert key == prompt_cache_key(first.conversation_id)  # stable, not random
    assert len(key) <= 64  # the provider's limit
    assert [b["prompt_cache_key"] for b in bodies] == [
        key, key, prompt_cache_key(other.conversation_id),
    ]
    assert bodies[2]["prompt_cache_key"] != key
    assert first.cached_tokens == 0
    # The emulator reports the shared prefix as cached only under the same key.
    assert second.cached_tokens >= 1024 and second.cached_tokens % 128 == 0
    assert other.cached_tokens == 0


def test_a_flex_profile_asks_for_flex_and_is_billed_at_the_flex_prices(
    alice: User, responses_profile: ModelProfile, emulator: Any
) -> None:
    flex = {"input": "0.55", "cached_input": "0.275", "output": "2.20"}
    ModelProfile.objects.filter(pk=responses_profile.pk).update(
        service_tier="flex", tier_prices={"flex": flex}
    )

    message = ask(alice, "Why is the sky blue?")

    assert message.status == Message.Status.DONE
    assert journal(emulator)[0]["body"]["service_tier"] == "flex"
    assert message.service_tier == "flex"
    expected = exact_cost(Prices.from_snapshot(flex), prompt_tokens=message.prompt_tokens,
                          cached_tokens=message.cached_tokens,
                          completion_tokens=message.completion_tokens)
    assert message.cost_usd == usage_cost(Prices.from_snapshot(flex), Usage(
        prompt_tokens=message.prompt_tokens, cached_tokens=message.cached_tokens,
        completion_tokens=message.completion_tokens))
    assert abs(message.cost_usd - expected) < Decimal("0.000001")
    standard = exact_cost(responses_profile, prompt_tokens=message.prompt_tokens,
                          cached_tokens=message.cached_tokens,
                          completion_tokens=message.completion_tokens)
    assert message.cost_usd < standard
    reservation = Reservation.objects.get(message=message)
    assert reservation.charged_usd == message.cost_usd  # the budget paid what was shown


def test_a_tier_without_prices_is_billed_at_the_standard_prices(
    alice: User, responses_profile: ModelProfile, emulator: Any
) -> None:
    ModelProfile.objects.filter(pk=responses_profile.pk).update(service_tier="flex")

    message = ask(alice, "Why is the sky blue?")

    assert message.service_tier == "flex"
    assert message.cost_usd == usage_cost(Prices.of(responses_profile), Usage(
        prompt_tokens=message.prompt_tokens, cached_tokens=message.cached_tokens,
        completion_tokens=message.completion_tokens))
    assert Reservation.objects.get(message=message).charged_usd == message.cost_usd


def test_a_standard_profile_is_billed_at_the_standard_prices_and_sends_no_tier(
    alice: User, responses_profile: ModelProfile, emulator: Any
) -> None:
    ModelProfile.objects.filter(pk=responses_profile.pk).update(
        tier_prices={"flex": {"input": "0.01", "cached_input": "0.01", "output": "0.01"}}
    )

    message = ask(alice, "Why is the sky blue?")

    assert "service_tier" not in journal(emulator)[0]["body"]
    assert message.service_tier == "default"
    assert message.cost_usd == usage_cost(Prices.of(responses_profile), Usage(
        prompt_tokens=message.prompt_tokens, cached_tokens=message.cached_tokens,
        completion_tokens=message.completion_tokens))


def test_the_admin_refuses_tier_prices_above_standard_or_malformed_and_changes_nothing(
    responses_profile: ModelProfile,
) -> None:
    from django.core.exceptions import ValidationError

    for bad in ({"flex": {"input": "9", "cached_input": "0.1", "output": "0.1"}},
                {"flex": {"input": "0.5"}}, {"flex": "cheap"}):
        responses_profile.tier_prices = bad
        with pytest.raises(ValidationError) as excinfo:
            responses_profile.full_clean()
        assert "tier_prices" in excinfo.value.message_dict
    responses_profile.refresh_from_db()
    assert responses_profile.tier_prices == {}


def test_the_admin_refuses_a_service_tier_on_a_chat_completions_profile(
    responses_profile: ModelProfile,
) -> None:
    from django.core.exceptions import ValidationError

    responses_profile.api_style = "chat"
    responses_profile.service_tier = "flex"
    with pytest.raises(ValidationError):
        responses_profile.full_clean()


def test_sync_models_fills_the_catalogs_flex_prices_and_keeps_an_admins_own(
    settings: Any, emulator: Any
) -> None:
    import io

    from django.core.management import call_command

    from llm.catalog import load_catalog

    settings.OPENAI_API_KEY = ""
    settings.AZURE_OPENAI_ENDPOINT = settings.AZURE_OPENAI_DEPLOYMENT = ""
    sol = next(e for e in load_catalog("openai") if e.model == "gpt-5.6-sol")
    assert sol.tier_prices == {"flex": {"input": "2", "cached_input": "0.2", "output": "10"}}
    # A profile synced before tier prices existed: the field is empty and unrecorded.
    call_command("sync_models", stdout=io.StringIO())
    profile = ModelProfile.objects.get(name=sol.name)
    values = dict(profile.catalog_values)
    values.pop("tier_prices")
    ModelProfile.objects.filter(pk=profile.pk).update(tier_prices={}, catalog_values=values)

    call_command("sync_models", stdout=io.StringIO())

    profile.refresh_from_db()
    assert profile.tier_prices == sol.tier_prices
    mine = {"flex": {"input": "1", "cached_input": "0.1", "output": "5"}}
    ModelProfile.objects.filter(pk=profile.pk).update(tier_prices=mine)
    call_command("sync_models", stdout=io.StringIO())
    profile.refresh_from_db()
    assert profile.tier_prices == mine  # an admin's edit stays
