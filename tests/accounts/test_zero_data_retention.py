"""An org with Zero Data Retention stores nothing at the provider: its long answers are sent
with store=false and no background mode. Admins switch it on the members page; nobody
outside the org (nor a plain member) can."""

from __future__ import annotations

import re
from typing import Any

import pytest
from django.test import Client

from accounts.models import Organization, User
from answers.engine import run_generation
from answers.replies import start_turn
from conversations.models import Message
from llm.models import ModelProfile
from tests.llm.test_responses_api import make_responses_profile

pytestmark = [pytest.mark.django_db, pytest.mark.urls("tests.accounts.urls")]


@pytest.fixture
def responses_profile(settings: Any, emulator: Any) -> ModelProfile:
    settings.OPENAI_API_KEY = ""  # the offline demo model answers OpenAI profiles
    return make_responses_profile()


def signed_in(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client


def ask_at_high_effort(user: User) -> Message:
    message = start_turn(user=user, organization_id=None, conversation_id=None,
                         content="Why is the sky blue?", reasoning_effort="high",
                         profile_name="o3-mini-responses").assistant_message
    run_generation(message.pk)
    return Message.objects.get(pk=message.pk)


def created(emulator: Any) -> list[dict[str, Any]]:
    return [e for e in emulator.requests_to("/v1/responses") if e["method"] == "POST"]


def test_the_members_page_has_a_labelled_zero_data_retention_checkbox(
    alice: User, org_a: Organization
) -> None:
    page = signed_in(alice).get("/org/").content.decode()

    label = re.search(r'<label for="([^"]+)">Zero Data Retention</label>', page)
    assert label is not None
    checkbox = re.search(rf'<input type="checkbox"[^>]*id="{label[1]}"[^>]*>', page)
    assert checkbox is not None and "checked" not in checkbox[0]
    assert f'aria-describedby="{label[1]}_helptext"' in checkbox[0]


def test_alices_org_with_zero_data_retention_sends_long_answers_with_store_false(
    alice: User, org_a: Organization, responses_profile: ModelProfile, emulator: Any
) -> None:
    response = signed_in(alice).post("/org/zero-data-retention/", {"zero_data_retention": "on"})
    assert response.status_code == 302
    org_a.refresh_from_db()
    assert org_a.zero_data_retention

    message = ask_at_high_effort(alice)

    assert message.status == Message.Status.DONE and message.content
    [entry] = created(emulator)
    assert entry["body"]["store"] is False and "background" not in entry["body"]
    assert message.provider_response_id == ""
    assert [e["method"] for e in emulator.journal_snapshot()] == ["POST"]  # nothing to delete


def test_without_zero_data_retention_the_same_answer_runs_in_background(
    alice: User, org_a: Organization, responses_profile: ModelProfile, emulator: Any
) -> None:
    message = ask_at_high_effort(alice)

    [entry] = created(emulator)
    assert (entry["body"]["store"], entry["body"]["background"]) == (True, True)
    assert message.provider_response_id


def test_an_admin_can_switch_zero_data_retention_off_again(
    alice: User, org_a: Organization
) -> None:
    Organization.objects.filter(pk=org_a.pk).update(zero_data_retention=True)

    response = signed_in(alice).post(f"/org/zero-data-retention/?org={org_a.pk}", {})

    assert response.status_code == 302
    org_a.refresh_from_db()
    assert not org_a.zero_data_retention


def test_charlie_cannot_change_alices_org_setting(
    alice: User, org_a: Organization, charlie: User
) -> None:
    as_charlie = signed_in(charlie)

    named = as_charlie.post(f"/org/zero-data-retention/?org={org_a.pk}", {"zero_data_retention": "on"})
    own = as_charlie.post("/org/zero-data-retention/", {"zero_data_retention": "on"})

    assert named.status_code == 404
    assert own.status_code == 302  # his own org, Other Corp
    org_a.refresh_from_db()
    assert not org_a.zero_data_retention
    assert Organization.objects.get(memberships__user=charlie).zero_data_retention


def test_bob_as_a_member_cannot_switch_it(bob: User, org_a: Organization) -> None:
    response = signed_in(bob).post("/org/zero-data-retention/", {"zero_data_retention": "on"})

    assert response.status_code == 404
    org_a.refresh_from_db()
    assert not org_a.zero_data_retention
