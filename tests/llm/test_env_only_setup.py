"""Only environment variables, no admin step: the first account's first message works and is
priced from the catalog, with OPENAI_API_KEY alone, with the Azure variables and a key, and
with the Azure variables and Microsoft Entra ID (the token provider replaced by a fixed one).
The emulator stands in for OpenAI (as OPENAI_BASE_URL) and for Azure (its Azure routes)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from django.test import Client

from accounts.models import User
from answers.engine import run_generation
from answers.replies import start_turn
from conversations.models import Message
from llm import client as llm_client
from llm.catalog import CatalogEntry, find_entry
from llm.catalog.sync import forget_sync
from llm.models import ModelProfile
from llm.tools import tool_schemas

pytestmark = pytest.mark.django_db

PASSWORD = "a long sign-up pass phrase 7"
QUESTION = "What is a prime number?"
MICRO = Decimal("0.000001")


@pytest.fixture(autouse=True)
def bare_environment(settings: Any, emulator: Any) -> None:
    """What a fresh `make run` has: no provider variables until a test sets them."""
    settings.OPENAI_API_KEY = ""
    settings.OPENAI_BASE_URL = ""
    settings.AZURE_OPENAI_ENDPOINT = ""
    settings.AZURE_OPENAI_API_KEY = ""
    settings.AZURE_OPENAI_DEPLOYMENT = ""
    settings.AZURE_OPENAI_MODEL = ""
    settings.AZURE_OPENAI_API_VERSION = "2024-12-01-preview"
    settings.CHAT_MODEL = ""
    emulator.config.deployments = {}


def first_account() -> tuple[Client, User]:
    # The "synced already" mark lives in Redis, which outlives each test's database.
    forget_sync()
    client = Client()
    response = client.post("/accounts/signup/", {
        "email": "owner@example.com", "password": PASSWORD, "organization": "Acme"})
    assert response.status_code == 302
    return client, User.objects.get(email="owner@example.com")


def first_message(user: User) -> Message:
    turn = start_turn(user=user, organization_id=None, conversation_id=None, content=QUESTION,
                      reasoning_effort=None)
    run_generation(turn.assistant_message.pk)
    return Message.objects.get(pk=turn.assistant_message.pk)


def catalog_cost(entry: CatalogEntry, message: Message) -> Decimal:
    uncached = message.prompt_tokens - message.cached_tokens
    return ((uncached * entry.input_price + message.cached_tokens * entry.cached_input_price
             + message.completion_tokens * entry.output_price) / Decimal(1_000_000)).quantize(MICRO)


def the_chat_request(emulator: Any) -> dict[str, Any]:
    calls = emulator.requests_to("/chat/completions")
    assert len(calls) == 1
    return calls[0]


def the_azure_responses_request(emulator: Any) -> dict[str, Any]:
    """The one answer request, sent to Azure's v1 Responses path (no Chat Completions)."""
    assert emulator.requests_to("/chat/completions") == []
    calls = [c for c in emulator.requests_to("/responses") if c["body"].get("stream")]
    assert len(calls) == 1 and calls[0]["path"] == "/openai/v1/responses"
    assert calls[0]["status"] == 200
    return calls[0]


def assert_responses_body(body: dict[str, Any]) -> None:
    """The deployment name as model, the function tools together with reasoning."""
    assert body["model"] == "team-reasoner" and body["stream"] is True
    assert body["input"][-1] == {"role": "user", "content": QUESTION}
    assert body["reasoning"]["effort"] == "medium"
    assert body["tools"] == [{"type": "function", **tool["function"]} for tool in tool_schemas()]
    assert body["max_output_tokens"] == 25_000


def assert_chat_body(body: dict[str, Any], **expected: Any) -> None:
    assert [m["role"] for m in body["messages"]][-1] == "user"
    assert body["messages"][-1]["content"] == QUESTION
    assert {k: v for k, v in body.items() if k != "messages"} == expected


def test_openai_key_alone_defaults_to_the_newest_listed_catalog_model(
    settings: Any, emulator: Any, emulator_server: Any
) -> None:
    settings.OPENAI_API_KEY = "sk-test-only"
    settings.OPENAI_BASE_URL = emulator_server.url + "/v1"
    client, owner = first_account()

    page = client.get("/")

    assert page.status_code == 200
    # The key lists o3-mini (retired), gpt-5.6-sol, gpt-5.4, gpt-6-sol, gpt-6.2-sol (the
    # newest release), gpt-6.2-astra (no release date) and gpt-4.1-mini (in no catalog).
    assert page.context["state"]["profile"]["name"] == "gpt-6-2-sol"
    assert [e["path"] for e in emulator.journal] == ["/v1/models"]
    assert emulator.journal[0]["headers"]["authorization"] == "Bearer sk-test-only"

    message = first_message(owner)

    assert message.status == Message.Status.DONE and message.content
    # A current OpenAI model is asked through the Responses API (catalog api_style).
    assert emulator.requests_to("/chat/completions") == []
    [call] = [e for e in emulator.requests_to("/v1/responses") if e["body"].get("stream")]
    body = call["body"]
    assert body["input"][-1] == {"role": "user", "content": QUESTION}
    assert {k: v for k, v in body.items() if k not in ("input", "instructions")} == {
        "model": "gpt-6.2-sol", "store": False, "stream": True,
        "reasoning": {"effort": "medium", "summary": "auto"},
        "include": ["reasoning.encrypted_content"], "max_output_tokens": 25_000,
        "tools": [{"type": "function", **tool["function"]} for tool in tool_schemas()],
        "prompt_cache_key": body["prompt_cache_key"],
    }
    assert body["prompt_cache_key"]
    entry = find_entry("openai", "gpt-6.2-sol")
    assert entry is not None and entry.output_price == Decimal("10")
    assert message.completion_tokens > 0
    assert message.cost_usd == catalog_cost(entry, message) > 0
    assert len(emulator.requests_to("/v1/models")) == 1  # synced once, then cached


def test_chat_model_chooses_another_profile_by_name_or_model_id(
    settings: Any, emulator: Any, emulator_server: Any
) -> None:
    settings.OPENAI_API_KEY = "sk-test-only"
    settings.OPENAI_BASE_URL = emulator_server.url + "/v1"
    ModelProfile.objects.create(
        name="house", display_name="House model", provider="openai", model="gpt-4.1-mini",
        accepted_params=["max_completion_tokens"], context_window=100_000,
        max_output_tokens=10_000, max_completion_tokens=1_000, input_price=Decimal("0.40"),
        cached_input_price=Decimal("0.10"), output_price=Decimal("1.60"),
    )
    settings.CHAT_MODEL = "gpt-4.1-mini"  # a model id
    client, owner = first_account()
    assert client.get("/").context["state"]["profile"]["name"] == "house"

    message = first_message(owner)

    assert message.status == Message.Status.DONE
    assert_chat_body(the_chat_request(emulator)["body"], model="gpt-4.1-mini", stream=True,
                     stream_options={"include_usage": True}, max_completion_tokens=1_000)
    settings.CHAT_MODEL = "gpt-5-6-sol"  # a catalog name
    assert client.get("/").context["state"]["profile"]["name"] == "gpt-5-6-sol"


def azure_only(settings: Any, emulator: Any, emulator_server: Any, *, serves: str = "gpt-5.6-sol",
               **extra: str) -> None:
    settings.AZURE_OPENAI_ENDPOINT = emulator_server.url
    settings.AZURE_OPENAI_DEPLOYMENT = "team-reasoner"
    emulator.config.deployments = {"team-reasoner": serves}
    for name, value in extra.items():
        setattr(settings, name, value)
    forget_sync()


def test_azure_variables_with_a_key_alone_make_the_deployment_the_priced_default(
    settings: Any, emulator: Any, emulator_server: Any
) -> None:
    azure_only(settings, emulator, emulator_server, serves="gpt-6-sol",
               AZURE_OPENAI_API_KEY="azure-key-1", AZURE_OPENAI_MODEL="gpt-6-sol")
    client, owner = first_account()

    page = client.get("/")

    state = page.context["state"]
    assert state["profile"]["name"] == "azure-team-reasoner"
    assert [p["name"] for p in state["profiles"]] == ["azure-team-reasoner"]  # no OpenAI key
    assert state["admin_warnings"] == []

    message = first_message(owner)

    assert message.status == Message.Status.DONE and message.content
    # gpt-6-sol takes tools with reasoning only on the Responses API, which Azure serves on
    # its v1 path whatever dated api-version the deployment names for Chat Completions.
    call = the_azure_responses_request(emulator)
    assert call["query"] == {}
    assert call["headers"]["authorization"] == "Bearer azure-key-1"
    assert_responses_body(call["body"])
    entry = find_entry("azure", "gpt-6-sol")
    assert entry is not None
    assert message.cost_usd == catalog_cost(entry, message) > 0
    assert emulator.requests_to("/models") == []  # nothing asked of OpenAI


def test_azure_with_entra_id_on_the_v1_path_sends_the_token_providers_token(
    settings: Any, emulator: Any, emulator_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(llm_client, "_entra_token_provider", lambda: lambda: "entra-fixed-token")
    azure_only(settings, emulator, emulator_server, serves="gpt-6-sol",
               AZURE_OPENAI_API_VERSION="v1", AZURE_OPENAI_MODEL="gpt-6-sol")
    _, owner = first_account()

    message = first_message(owner)

    assert message.status == Message.Status.DONE
    call = the_azure_responses_request(emulator)
    assert call["query"] == {}
    assert call["headers"]["authorization"] == "Bearer entra-fixed-token"
    assert "api-key" not in call["headers"]
    assert_responses_body(call["body"])
    entry = find_entry("azure", "gpt-6-sol")
    assert entry is not None and message.cost_usd == catalog_cost(entry, message) > 0


def test_an_azure_o_series_deployment_still_answers_on_the_deployment_chat_path_with_tools(
    settings: Any, emulator: Any, emulator_server: Any
) -> None:
    # Every Azure o-series model is retired in the catalog: an admin's profile names the
    # deployment (the emulator serves o3-mini under it).
    azure_only(settings, emulator, emulator_server, serves="o3-mini", AZURE_OPENAI_API_KEY="azure-key-1")
    seed = ModelProfile.objects.get(name="o3-mini")
    own = ("id", "name", "origin", "catalog_key", "catalog_values", "listed_at", "shutdown_date")
    values = {f.name: getattr(seed, f.name) for f in ModelProfile._meta.fields if f.name not in own}
    values.update(name="team-o3", display_name="o3 · team", provider="azure", model="team-reasoner",
                  api_version="2024-12-01-preview")
    ModelProfile.objects.create(**values)
    _, owner = first_account()

    turn = start_turn(user=owner, organization_id=None, conversation_id=None, content=QUESTION,
                      reasoning_effort="medium", profile_name="team-o3")
    run_generation(turn.assistant_message.pk)
    message = Message.objects.get(pk=turn.assistant_message.pk)

    assert message.status == Message.Status.DONE and message.content and message.error_detail == ""
    call = emulator.requests_to("/chat/completions")[0]  # the model may call a tool: rounds follow
    assert call["path"] == "/openai/deployments/team-reasoner/chat/completions"
    assert call["query"] == {"api-version": "2024-12-01-preview"}
    assert call["headers"]["api-key"] == "azure-key-1"
    assert_chat_body(call["body"], model="team-reasoner", stream=True,
                     stream_options={"include_usage": True}, reasoning_effort="medium",
                     max_completion_tokens=25_000, tools=tool_schemas())
    assert emulator.requests_to("/responses") == []


def test_azure_without_its_model_still_answers_and_admins_are_told_to_name_it(
    settings: Any, emulator: Any, emulator_server: Any, org_a: Any, bob: User
) -> None:
    azure_only(settings, emulator, emulator_server, AZURE_OPENAI_API_KEY="azure-key-1")
    owner = User.objects.get(email="alice@example.com")
    alice = Client()
    alice.force_login(owner)

    warnings = alice.get("/").context["state"]["admin_warnings"]

    assert len(warnings) == 1 and "AZURE_OPENAI_MODEL is not set" in warnings[0]
    assert "'team-reasoner'" in warnings[0]
    member = Client()
    member.force_login(bob)
    assert member.get("/").context["state"]["admin_warnings"] == []

    message = first_message(owner)

    assert message.status == Message.Status.DONE and message.content
    # Only what every deployment accepts; the deployment's own default effort applies.
    assert_chat_body(the_chat_request(emulator)["body"], model="team-reasoner", stream=True,
                     stream_options={"include_usage": True}, max_completion_tokens=16_384)
    assert message.cost_usd == 0

    # Naming the model later prices the same profile from the catalog.
    settings.AZURE_OPENAI_MODEL = "gpt-5.6-sol"
    forget_sync()  # an earlier test left the mark for these settings; its database is gone
    assert alice.get("/").context["state"]["admin_warnings"] == []
    profile = ModelProfile.objects.get(name="azure-team-reasoner")
    assert profile.output_price == Decimal("20") and profile.catalog_key == "azure:gpt-5.6-sol"
    assert profile.display_name == "GPT-5.6 Sol · team-reasoner"
    assert profile.reasoning_efforts == ["none", "low", "medium", "high", "xhigh"]
