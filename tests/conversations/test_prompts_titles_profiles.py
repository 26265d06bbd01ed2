"""History trimming, Structured Outputs titles and retired-model handling."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

import pytest
from django.utils import timezone

from accounts.model_access import usable_profile
from accounts.models import Organization, User
from answers.prompts import FORMATTING_LINE, build_prompt
from answers.replies import start_turn
from answers.titles import generate_title
from chatsite.errors import Refused
from conversations.models import Conversation, Message
from llm.models import ModelProfile
from llm.profiles import refresh_shutdown_dates, shutdown_warning

pytestmark = pytest.mark.django_db


def _profile(**fields: Any) -> ModelProfile:
    seed = ModelProfile.objects.get(name="o3-mini")
    # A copy is an admin's own profile, not a second follower of the seed's catalog entry.
    own = ("id", "origin", "catalog_key", "catalog_values", "listed_at")
    values = {f.name: getattr(seed, f.name) for f in ModelProfile._meta.fields if f.name not in own}
    values.update({"name": "small", "display_name": "Small window", **fields})
    return ModelProfile.objects.create(**values)


def _conversation(alice: User, org: Organization, profile: ModelProfile, turns: int, words: int) -> Conversation:
    conversation = Conversation.objects.create(organization=org, user=alice, profile=profile)
    parent = None
    for n in range(turns):
        question = Message.objects.create(conversation=conversation, role="user", parent=parent,
                                          content=f"question {n} " + "word " * words)
        parent = Message.objects.create(conversation=conversation, role="assistant", parent=question,
                                        content=f"answer {n} " + "word " * words)
    conversation.current_leaf = parent
    conversation.save(update_fields=["current_leaf"])
    return conversation


def test_history_keeps_instructions_and_the_newest_turns_that_fit(alice: User, org_a: Organization) -> None:
    profile = _profile(context_window=3_000, max_completion_tokens=1_000, max_output_tokens=1_000)
    conversation = _conversation(alice, org_a, profile, turns=10, words=200)
    question = Message.objects.create(conversation=conversation, role="user", content="latest question",
                                      parent_id=conversation.current_leaf_id)
    answer = Message.objects.create(conversation=conversation, role="assistant", status="pending", parent=question,
                                    max_completion_tokens=1_000, profile=profile)

    prompt = build_prompt(answer, profile=profile, org_message="Be exact.", custom="Use SI units.")

    first, *history = prompt.messages
    assert first["role"] == "developer"
    assert first["content"].startswith(FORMATTING_LINE)
    assert "Be exact." in first["content"] and "Use SI units." in first["content"]
    assert history[-1] == {"role": "user", "content": question.content}
    assert 0 < prompt.left_out < 11
    kept_turns = 11 - prompt.left_out
    assert len(history) == kept_turns * 2 - 1
    assert history[0]["content"].startswith(f"question {10 - kept_turns + 1}")
    assert prompt.prompt_tokens <= 3_000 - 1_000


def test_nothing_is_left_out_when_everything_fits(alice: User, org_a: Organization, o3_mini: ModelProfile) -> None:
    conversation = _conversation(alice, org_a, o3_mini, turns=3, words=20)
    answer = Message.objects.create(conversation=conversation, role="assistant", status="pending",
                                    max_completion_tokens=25_000, profile=o3_mini,
                                    parent_id=conversation.current_leaf_id)
    prompt = build_prompt(answer, profile=o3_mini, org_message="", custom="")
    assert prompt.left_out == 0
    assert len(prompt.messages) == 1 + 6


def test_a_title_comes_from_a_structured_output_call_at_low_effort(
    alice: User, org_a: Organization, o3_mini: ModelProfile, emulator: Any
) -> None:
    conversation = Conversation.objects.create(organization=org_a, user=alice, profile=o3_mini, title="fallback")
    Message.objects.create(conversation=conversation, role="user", content="How do rainbows form in the sky")

    title = generate_title(conversation.pk)

    conversation.refresh_from_db()
    assert title and conversation.title == title and conversation.title_generated
    (request,) = [e for e in emulator.journal if e["path"].endswith("/chat/completions")]
    body = request["body"]
    assert body["response_format"]["type"] == "json_schema"
    assert body["response_format"]["json_schema"]["schema"]["required"] == ["title"]
    assert body["reasoning_effort"] == "low"
    assert "stream" not in body and "temperature" not in body
    assert generate_title(conversation.pk) is None  # once only
    assert len([e for e in emulator.journal if e["path"].endswith("/chat/completions")]) == 1


def _with_real_key(settings: Any, emulator_server: Any) -> None:
    settings.OPENAI_API_KEY = "sk-test-not-a-real-key"
    settings.OPENAI_BASE_URL = emulator_server.url + "/v1"


def test_a_retired_profile_is_refused_before_any_request_and_names_the_alternative(
    alice: User, org_a: Organization, settings: Any, emulator: Any, emulator_server: Any
) -> None:
    _with_real_key(settings, emulator_server)
    _profile(name="successor", display_name="Successor", shutdown_date=None)
    retired = ModelProfile.objects.get(name="o3-mini")
    assert retired.shutdown_date == dt.date(2026, 10, 23)

    with pytest.raises(Refused) as refused:
        start_turn(user=alice, organization_id=None, conversation_id=None, content="hi",
                   reasoning_effort="low", profile_name="o3-mini")

    assert refused.value.code == "model_unavailable"
    assert "retired" in refused.value.detail and "Successor" in refused.value.detail
    assert not Message.objects.exists()
    # No model was asked (the catalog sync may have listed the provider's models).
    assert {e["path"] for e in emulator.journal} <= {"/v1/models"}
    assert usable_profile(org_a, None, user=alice).name == "successor"  # the default skips retired ones


def test_the_demo_model_still_answers_for_a_retired_profile(alice: User, org_a: Organization,
                                                           settings: Any) -> None:
    settings.OPENAI_API_KEY = ""
    assert usable_profile(org_a, "o3-mini", user=alice).name == "o3-mini"
    assert "offline demo" in shutdown_warning(ModelProfile.objects.get(name="o3-mini"))


def test_shutdown_dates_the_provider_announces_are_recorded(
    db: None, settings: Any, emulator: Any, emulator_server: Any
) -> None:
    _with_real_key(settings, emulator_server)
    ModelProfile.objects.filter(name="o3-mini").update(shutdown_date=None)

    assert refresh_shutdown_dates() == ["o3-mini"]

    assert ModelProfile.objects.get(name="o3-mini").shutdown_date == dt.date(2026, 10, 23)
    assert any(e["path"].endswith("/models/o3-mini") for e in emulator.journal)


def test_admins_are_warned_before_the_shutdown_date(settings: Any) -> None:
    settings.OPENAI_API_KEY = "sk-test"
    profile = _profile(shutdown_date=timezone.localdate() + dt.timedelta(days=10), input_price=Decimal("1.10"))
    assert "retires on" in shutdown_warning(profile)
    profile.shutdown_date = timezone.localdate() + dt.timedelta(days=90)
    assert shutdown_warning(profile) == ""


def _follow_up(alice: User, conversation: Conversation) -> Any:
    return start_turn(user=alice, organization_id=None, conversation_id=conversation.pk,
                      content="And then?", reasoning_effort="low")


@pytest.mark.parametrize("how", ["left the org's list", "deactivated", "retired"])
def test_a_follow_up_on_a_model_no_longer_usable_is_refused_and_saves_nothing(
    how: str, alice: User, org_a: Organization, settings: Any, emulator_server: Any
) -> None:
    """A follow-up stays on the conversation's model without loading the org's profiles:
    the conversation's own query says whether that model is still enabled. Each way it
    can stop being usable is refused as a new conversation on it would be."""
    _with_real_key(settings, emulator_server)
    other = _profile(name="other", display_name="Other", shutdown_date=None)
    small = _profile(shutdown_date=None)
    conversation = Conversation.objects.create(organization=org_a, user=alice, profile=small)
    assert _follow_up(alice, conversation).assistant_message.profile == small  # usable so far
    Message.objects.update(status=Message.Status.DONE)
    before = Message.objects.count()

    if how == "left the org's list":
        org_a.enabled_profiles.set([other])
    elif how == "deactivated":
        ModelProfile.objects.filter(pk=small.pk).update(is_active=False)
    else:
        ModelProfile.objects.filter(pk=small.pk).update(shutdown_date=dt.date(2026, 11, 1))

    with pytest.raises(Refused) as refused:
        _follow_up(alice, conversation)
    assert refused.value.code == "model_unavailable"
    assert ("retired" if how == "retired" else "not enabled") in refused.value.detail
    assert Message.objects.count() == before
    conversation.refresh_from_db()
    assert conversation.profile == small


def test_another_orgs_list_does_not_decide_a_follow_up(
    alice: User, org_a: Organization, charlie: User, settings: Any, emulator_server: Any
) -> None:
    """The enabled check follows the conversation's org: another org leaving the model
    out of its list changes nothing here."""
    _with_real_key(settings, emulator_server)
    small = _profile(shutdown_date=None)
    other = _profile(name="other", display_name="Other", shutdown_date=None)
    charlie.memberships.get().organization.enabled_profiles.set([other])
    conversation = Conversation.objects.create(organization=org_a, user=alice, profile=small)
    assert _follow_up(alice, conversation).assistant_message.profile == small
