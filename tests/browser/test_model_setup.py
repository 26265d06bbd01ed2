"""Zero admin steps, in a real browser: with only environment variables set, the first
person signs up and their first message is answered by the configured provider (the
emulator standing in for OpenAI and for an Azure deployment)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

from llm.catalog.sync import forget_sync
from tests.browser.conftest import Watch, read_db, sign_up
from tests.browser.test_chat import nth_answer, send

playwright_api = pytest.importorskip("playwright.sync_api")
expect = playwright_api.expect


def bare(settings: Any) -> None:
    for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "AZURE_OPENAI_ENDPOINT", "AZURE_OPENAI_API_KEY",
                 "AZURE_OPENAI_DEPLOYMENT", "AZURE_OPENAI_MODEL", "CHAT_MODEL"):
        setattr(settings, name, "")
    settings.AZURE_OPENAI_API_VERSION = "2024-12-01-preview"


def answered(page: Any, emulator: Any) -> Mapping[str, Any]:
    answer = nth_answer(page, 1)
    expect(answer).to_have_attribute("data-status", "done", timeout=30_000)
    from conversations.models import Message

    pk = int(answer.get_attribute("data-message-id"))
    return read_db(lambda: Message.objects.values("model_name", "cost_usd", "status").get(pk=pk))


def test_with_only_an_openai_key_the_first_message_uses_the_newest_listed_model(
    page: Any, settings: Any, emulator: Any, emulator_server: Any, watch: Watch
) -> None:
    bare(settings)
    settings.OPENAI_API_KEY = "sk-test-only"
    settings.OPENAI_BASE_URL = emulator_server.url + "/v1"
    forget_sync()

    sign_up(page, organization="Key Only")

    expect(page.get_by_test_id("demo-notice")).to_have_count(0)
    expect(page.get_by_test_id("model-name")).to_contain_text("GPT-6.2 Sol")
    # (The emulator still lists the retired o3-mini, so only its retirement is noted.)
    expect(page.get_by_test_id("admin-warning").filter(has_text="AZURE_OPENAI_MODEL")).to_have_count(0)
    send(page, "Hello from a fresh install")
    saved = answered(page, emulator)
    assert saved["model_name"] == "gpt-6.2-sol" and saved["cost_usd"] > 0
    # A current model is asked through the Responses API: nothing stored upstream, its
    # encrypted reasoning kept for the next turn, its summary streamed as "Thinking".
    answers = [e["body"] for e in emulator.requests_to("/v1/responses") if e["body"].get("stream")]
    assert [b["model"] for b in answers] == ["gpt-6.2-sol"]
    assert answers[0]["store"] is False
    assert answers[0]["include"] == ["reasoning.encrypted_content"]
    assert emulator.requests_to("/v1/chat/completions") == []


def test_an_azure_deployment_without_its_model_answers_and_the_owner_is_told_to_name_it(
    page: Any, settings: Any, emulator: Any, emulator_server: Any, watch: Watch
) -> None:
    bare(settings)
    settings.AZURE_OPENAI_ENDPOINT = emulator_server.url
    settings.AZURE_OPENAI_DEPLOYMENT = "team-reasoner"
    settings.AZURE_OPENAI_API_KEY = "azure-key-1"
    emulator.config.deployments = {"team-reasoner": "gpt-5.6-sol"}
    forget_sync()

    sign_up(page, organization="Azure Only")

    expect(page.get_by_test_id("demo-notice")).to_have_count(0)
    expect(page.get_by_test_id("model-name")).to_contain_text("Azure · team-reasoner")
    warning = page.get_by_role("note").filter(has_text="AZURE_OPENAI_MODEL is not set")
    expect(warning).to_be_visible()
    send(page, "Hello from Azure")
    saved = answered(page, emulator)
    assert saved["model_name"] == "team-reasoner" and saved["cost_usd"] == 0
    calls = emulator.requests_to("/openai/deployments/team-reasoner/chat/completions")
    assert [c["headers"]["api-key"] for c in calls if not c["body"].get("response_format")] == ["azure-key-1"]

    # The owner names the model (and restarts); a new chat shows it priced, no warning.
    settings.AZURE_OPENAI_MODEL = "gpt-5.6-sol"
    forget_sync()  # another test may have left the mark for these settings
    page.goto("/")
    expect(page.get_by_test_id("model-name")).to_contain_text("GPT-5.6 Sol · team-reasoner")
    expect(page.get_by_test_id("admin-warning")).to_have_count(0)


def responses_profile() -> None:
    from decimal import Decimal

    from llm.models import ModelProfile

    read_db(lambda: ModelProfile.objects.create(
        name="o3-mini-responses", display_name="o3-mini (Responses)", provider="openai",
        model="o3-mini", api_style="responses",
        accepted_params=["reasoning_effort", "max_completion_tokens"],
        reasoning_efforts=["low", "medium", "high"], default_effort="medium",
        context_window=200_000, max_output_tokens=100_000, max_completion_tokens=25_000,
        input_price=Decimal("1.10"), cached_input_price=Decimal("0.55"), output_price=Decimal("4.40"),
    ))


@pytest.mark.parametrize("verified", [True, False])
def test_a_responses_model_answers_with_its_reasoning_summary_or_without_when_refused(
    page: Any, settings: Any, emulator: Any, watch: Watch, verified: bool
) -> None:
    settings.OPENAI_API_KEY = ""
    emulator.config.verified_org = verified
    responses_profile()
    sign_up(page, organization="Responses Team")

    page.get_by_label("Model").select_option(label="o3-mini (Responses)")
    send(page, "Why is the sky blue?")

    answer = nth_answer(page, 1)
    expect(answer).to_have_attribute("data-status", "done", timeout=30_000)
    expect(answer.get_by_test_id("message-body")).not_to_be_empty()
    expect(page.get_by_role("alert")).to_have_count(0)
    reasoning = answer.get_by_test_id("reasoning")
    if verified:
        reasoning.get_by_text("Thinking", exact=True).click()
        expect(reasoning).to_contain_text("Why is the sky blue?")
    else:
        expect(reasoning).to_be_hidden()
    from llm.models import ModelProfile

    assert read_db(lambda: ModelProfile.objects.get(name="o3-mini-responses").reasoning_summaries) is verified
    statuses = [e["status"] for e in emulator.requests_to("/v1/responses")]
    assert statuses == ([200] if verified else [400, 200])
