"""A model profile names its key variable; it may not name the server's other secrets.

Staff edit profiles (endpoint and key variable) in the Django admin. The allowed names
are ``LLM_KEY_*`` and those listed in ``PROFILE_KEY_ENVS``: checked by the admin form,
again before every call to the provider, and every change of where a key goes is in the
admin's history.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from django.contrib.admin.models import ADDITION, CHANGE, LogEntry
from django.core.exceptions import ValidationError
from django.test import Client

from accounts.models import User
from conversations.models import Message
from llm.models import ModelProfile
from llm.types import ChatRequest, LLMError
from tests.llm.streams import read_stream

pytestmark = pytest.mark.django_db

SERVER_SECRET = "server-secret-5f1e9c0d7a3b"
MESSAGES = [{"role": "user", "content": "Explain Euler's identity"}]
REFUSED_NAMES = [
    "SECRET_KEY", "DATABASE_URL", "REDIS_URL", "DJANGO_SETTINGS_MODULE",
    # A provider's own variable is used by leaving the field empty, never sent elsewhere.
    "OPENAI_API_KEY",
    # Lower-case twins (the same variable where the environment ignores case).
    "secret_key", "Secret_Key", "llm_key_foo", "Llm_Key_Foo",
    # Whitespace and control characters inside the name, and look-alike letters.
    "LLM_KEY_FOO SECRET_KEY", "LLM_KEY_FOO\tSECRET_KEY", "LLM_KEY_\u0046\u200bOO", "LLM_KEY_ＦOO",
    # The prefix alone, or only inside the name.
    "LLM_KEY_", "XLLM_KEY_FOO", "SECRET_KEY_LLM_KEY_FOO", "LLM-KEY-FOO",
]


def change_url(profile: ModelProfile) -> str:
    return f"/admin/llm/modelprofile/{profile.pk}/change/"


def form_data(profile: ModelProfile, **changes: Any) -> dict[str, str]:
    """The admin change form's fields as the browser posts them, with ``changes`` applied."""
    data: dict[str, str] = {}
    for field in ModelProfile._meta.concrete_fields:
        if field.primary_key:
            continue
        value = changes.get(field.name, getattr(profile, field.attname))
        if field.get_internal_type() == "JSONField":
            data[field.name] = json.dumps(value)
        elif field.get_internal_type() == "BooleanField":
            if value:
                data[field.name] = "on"
        else:
            data[field.name] = "" if value is None else str(value)
    data["_save"] = "Save"
    return data


@pytest.fixture
def staff_client(db: None) -> Client:
    client = Client()
    client.force_login(User.objects.create_superuser(email="root@example.com", password="x"))
    return client


@pytest.fixture
def gateway(make_profile: Callable[..., Any], settings: Any) -> ModelProfile:
    return make_profile(name="gateway", provider="compatible",
                        endpoint=settings.EMULATOR_URL + "/v1", api_key_env="LLM_KEY_GATEWAY")


# --- The admin form ----------------------------------------------------------------------


@pytest.mark.parametrize("name", REFUSED_NAMES + [" SECRET_KEY", "DATABASE_URL\n"])
def test_the_admin_form_refuses_a_key_variable_outside_the_allowed_names(
    staff_client: Client, gateway: ModelProfile, name: str
) -> None:
    response = staff_client.post(change_url(gateway), form_data(gateway, api_key_env=name))

    assert response.status_code == 200  # the form again, with the error
    errors = response.context["adminform"].form.errors
    assert "is not an allowed key variable" in errors["api_key_env"][0]
    assert "LLM_KEY_" in errors["api_key_env"][0]
    gateway.refresh_from_db()
    assert gateway.api_key_env == "LLM_KEY_GATEWAY"
    assert not LogEntry.objects.exists()


@pytest.mark.parametrize("name", ["LLM_KEY_FOO", "LLM_KEY_AZURE_EAST_2"])
def test_the_admin_form_accepts_an_llm_key_variable(
    staff_client: Client, gateway: ModelProfile, name: str
) -> None:
    response = staff_client.post(change_url(gateway), form_data(gateway, api_key_env=name))

    assert response.status_code == 302, response.context["adminform"].form.errors
    gateway.refresh_from_db()
    assert gateway.api_key_env == name


def test_the_admin_form_accepts_a_name_the_operator_listed_in_profile_key_envs(
    staff_client: Client, gateway: ModelProfile, settings: Any
) -> None:
    settings.PROFILE_KEY_ENVS = ["ACME_GATEWAY_TOKEN"]

    listed = staff_client.post(change_url(gateway),
                               form_data(gateway, api_key_env="ACME_GATEWAY_TOKEN"))
    unlisted = staff_client.post(change_url(gateway),
                                 form_data(gateway, api_key_env="ACME_OTHER_TOKEN"))

    assert listed.status_code == 302
    assert unlisted.status_code == 200
    assert "ACME_GATEWAY_TOKEN" in unlisted.context["adminform"].form.errors["api_key_env"][0]
    gateway.refresh_from_db()
    assert gateway.api_key_env == "ACME_GATEWAY_TOKEN"


def test_the_admin_form_saves_a_key_variable_without_surrounding_whitespace(
    staff_client: Client, gateway: ModelProfile
) -> None:
    response = staff_client.post(change_url(gateway),
                                 form_data(gateway, api_key_env="  LLM_KEY_FOO \n"))

    assert response.status_code == 302
    gateway.refresh_from_db()
    assert gateway.api_key_env == "LLM_KEY_FOO"


@pytest.mark.parametrize("name", ["SECRET_KEY", "LLM_KEY_FOO ", "llm_key_foo"])
def test_model_validation_refuses_the_name_outside_any_form(
    gateway: ModelProfile, name: str
) -> None:
    gateway.api_key_env = name

    with pytest.raises(ValidationError) as caught:
        gateway.full_clean()

    assert "api_key_env" in caught.value.message_dict


def test_an_empty_key_variable_is_allowed(gateway: ModelProfile) -> None:
    gateway.api_key_env = ""

    gateway.full_clean()


# --- At call time ------------------------------------------------------------------------


@pytest.mark.parametrize("provider", ["openai", "azure", "compatible"])
@pytest.mark.parametrize("name", ["SECRET_KEY", "DATABASE_URL", "secret_key"])
def test_a_profile_saved_around_the_form_is_refused_before_any_request(
    make_profile: Callable[..., Any], settings: Any, emulator: Any, monkeypatch: Any,
    provider: str, name: str,
) -> None:
    monkeypatch.setenv(name, SERVER_SECRET)
    settings.OPENAI_API_KEY = ""  # demo mode would not even read a key: refused all the same
    endpoint = {"openai": "", "azure": settings.EMULATOR_URL,
                "compatible": settings.EMULATOR_URL + "/v1"}[provider]
    profile = make_profile(provider=provider, endpoint=endpoint, api_key_env=name)

    with pytest.raises(LLMError) as caught:
        read_stream(profile, ChatRequest(messages=MESSAGES, reasoning_effort="low",
                                         max_completion_tokens=4000))

    error = caught.value
    assert emulator.journal_snapshot() == []
    assert error.reason == "configuration" and not error.retryable
    assert "An admin must fix its API key environment variable" in error.detail
    for text in (error.detail, str(error), repr(error.args)):
        assert SERVER_SECRET not in text


def test_the_servers_azure_key_never_goes_to_an_endpoint_typed_into_a_profile(
    make_profile: Callable[..., Any], settings: Any, emulator: Any
) -> None:
    settings.AZURE_OPENAI_ENDPOINT = "https://ours.openai.azure.com"
    settings.AZURE_OPENAI_API_KEY = SERVER_SECRET
    profile = make_profile(provider="azure", endpoint=settings.EMULATOR_URL, api_key_env="")

    with pytest.raises(LLMError) as caught:
        read_stream(profile, ChatRequest(messages=MESSAGES, reasoning_effort="low",
                                         max_completion_tokens=4000))

    assert caught.value.reason == "configuration"
    assert "names no key variable" in caught.value.detail
    assert emulator.journal_snapshot() == []


def test_an_answer_from_a_profile_naming_the_database_url_fails_without_calling_out(
    alice: Any, o3_mini: ModelProfile, settings: Any, emulator: Any, monkeypatch: Any
) -> None:
    from answers.engine import run_generation
    from answers.replies import start_turn

    monkeypatch.setenv("DATABASE_URL", f"postgres://app:{SERVER_SECRET}@db/teamchat")
    settings.OPENAI_API_KEY = ""
    ModelProfile.objects.filter(pk=o3_mini.pk).update(api_key_env="DATABASE_URL")
    turn = start_turn(user=alice, organization_id=None, conversation_id=None,
                      content="Hello", reasoning_effort="low")

    run_generation(turn.assistant_message.pk)

    message = Message.objects.get(pk=turn.assistant_message.pk)
    assert message.status == Message.Status.FAILED
    assert "API key environment variable" in message.error_detail
    assert SERVER_SECRET not in message.error_detail
    assert emulator.journal_snapshot() == []


def test_a_profile_with_an_allowed_name_still_sends_its_key(
    gateway: ModelProfile, emulator: Any, monkeypatch: Any
) -> None:
    monkeypatch.setenv("LLM_KEY_GATEWAY", "gw-key-789")

    read_stream(gateway, ChatRequest(messages=MESSAGES, reasoning_effort="low",
                                     max_completion_tokens=4000))

    [call] = emulator.journal_snapshot()
    assert call["headers"]["authorization"] == "Bearer gw-key-789"


# --- The admin's history -----------------------------------------------------------------


def test_changing_where_a_key_goes_is_in_the_admin_history_with_old_and_new_values(
    staff_client: Client, gateway: ModelProfile, settings: Any
) -> None:
    old_endpoint = gateway.endpoint
    response = staff_client.post(change_url(gateway), form_data(
        gateway, endpoint="https://gateway.example.com/v1", api_key_env="LLM_KEY_OTHER",
        display_name="Gateway reasoner",
    ))

    assert response.status_code == 302
    [entry] = LogEntry.objects.all()
    assert entry.action_flag == CHANGE
    assert entry.object_id == str(gateway.pk)
    assert entry.user.email == "root@example.com"
    shown = entry.get_change_message()
    assert f"Endpoint (from “{old_endpoint}” to “https://gateway.example.com/v1”)" in shown
    assert "API key environment variable (from “LLM_KEY_GATEWAY” to “LLM_KEY_OTHER”)" in shown
    assert "Display name" in shown


def test_the_history_masks_a_password_inside_an_endpoint_url(
    staff_client: Client, gateway: ModelProfile
) -> None:
    response = staff_client.post(change_url(gateway), form_data(
        gateway, endpoint="https://proxy-user:hunter2-pass@gateway.example.com:8443/v1",
    ))

    assert response.status_code == 302
    [entry] = LogEntry.objects.all()
    shown = entry.get_change_message()
    assert "https://proxy-user:***@gateway.example.com:8443/v1" in shown
    assert "hunter2-pass" not in entry.change_message


def test_adding_a_profile_records_its_endpoint_and_key_variable(
    staff_client: Client, gateway: ModelProfile
) -> None:
    data = form_data(gateway, name="second-gateway", endpoint="https://second.example.com/v1",
                     api_key_env="LLM_KEY_SECOND")

    response = staff_client.post("/admin/llm/modelprofile/add/", data)

    assert response.status_code == 302
    [entry] = LogEntry.objects.all()
    assert entry.action_flag == ADDITION
    shown = entry.get_change_message()
    assert "Endpoint (set to “https://second.example.com/v1”)" in shown
    assert "API key environment variable (set to “LLM_KEY_SECOND”)" in shown
