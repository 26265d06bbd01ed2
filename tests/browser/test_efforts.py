"""Every reasoning effort the composer offers reaches the model, in headless Chromium
against the real stack (uvicorn, a Celery worker, the emulator over HTTP)."""

from __future__ import annotations

from typing import Any

import pytest

from llm.catalog import KNOWN_EFFORTS, find_entry
from tests.browser.conftest import Watch, read_db, sign_up
from tests.browser.test_chat import ANSWER_TIMEOUT_MS, nth_answer, send

playwright_api = pytest.importorskip("playwright.sync_api")
expect = playwright_api.expect

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

CATALOG_MODELS = ("gpt-6.2-sol", "gpt-6-sol", "gpt-5.4")


def add_catalog_profiles() -> dict[str, Any]:
    """The profiles as the product makes them from the catalog, by model id."""
    from llm.catalog.sync import ensure_catalog_profile

    profiles = {}
    for model in CATALOG_MODELS:
        profile = ensure_catalog_profile(f"openai:{model}")
        assert profile is not None, model
        profiles[model] = profile
    return profiles


def test_the_composer_offers_exactly_each_models_efforts_and_each_one_reaches_the_model(
    page: Any, settings: Any, emulator: Any, watch: Watch
) -> None:
    settings.OPENAI_API_KEY = ""  # the emulator answers every OpenAI profile
    emulator.config.reply_tokens = 5
    profiles = read_db(add_catalog_profiles)
    sign_up(page, organization="Effort Team")
    model_select = page.get_by_label("Model", exact=True)
    effort_select = page.get_by_label("Reasoning effort", exact=True)

    expected_requests: list[tuple[str, str]] = []
    answers = 0
    for model in CATALOG_MODELS:
        profile = profiles[model]
        efforts = list(find_entry("openai", model).reasoning_efforts)  # type: ignore[union-attr]
        assert efforts == [e for e in KNOWN_EFFORTS if e in efforts]  # the catalog's order
        model_select.select_option(label=profile.display_name)

        options = effort_select.locator("option")
        expect(options).to_have_text([e[0].upper() + e[1:] for e in efforts])  # "Xhigh"
        assert options.evaluate_all("nodes => nodes.map(n => n.value)") == efforts
        expect(effort_select).to_have_value(profile.default_effort)
        for effort in efforts:
            effort_select.select_option(value=effort)
            send(page, f"Say hi at {effort} effort on {model}.")
            answers += 1
            answer = nth_answer(page, answers)
            expect(answer).to_have_attribute("data-status", "done", timeout=ANSWER_TIMEOUT_MS)
            expected_requests.append((model, effort))

    assert "none" not in [e for m, e in expected_requests if m == "gpt-6.2-sol"]
    # The answers' requests (titles are not streamed): each carried its effort, and being on
    # the Responses API, the function tools together with the reasoning.
    sent = [e["body"] for e in emulator.requests_to("/v1/responses")
            if e["method"] == "POST" and e["body"].get("stream")]
    assert [(b["model"], b["reasoning"]["effort"]) for b in sent] == expected_requests
    for body in sent:
        assert body["tools"] and all(tool["type"] == "function" for tool in body["tools"]), body
    assert emulator.requests_to("/chat/completions") == []

    def saved() -> list[tuple[str, str, str]]:
        from conversations.models import Message

        return list(Message.objects.filter(role="assistant").order_by("id")
                    .values_list("model_name", "reasoning_effort", "status"))

    assert read_db(saved) == [(m, e, "done") for m, e in expected_requests]
    assert watch.page_errors == [] and watch.dialogs == []
