"""A model that takes tools on Chat Completions only at effort none, on a profile an admin
left on Chat Completions, in headless Chromium against the real stack: the answer arrives
at effort high without tools, and the line under it says why and what to do."""

from __future__ import annotations

from typing import Any

import pytest

from tests.browser.conftest import Watch, read_db, sign_up
from tests.browser.test_chat import ANSWER_TIMEOUT_MS, nth_answer, send

playwright_api = pytest.importorskip("playwright.sync_api")
expect = playwright_api.expect

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def sol_on_chat() -> str:
    from llm.catalog.sync import ensure_catalog_profile
    from llm.models import ModelProfile

    profile = ensure_catalog_profile("openai:gpt-6-sol")
    assert profile is not None and profile.chat_tools_need_effort_none
    ModelProfile.objects.filter(pk=profile.pk).update(api_style=ModelProfile.ApiStyle.CHAT)
    return profile.display_name


def test_an_answer_without_tools_on_chat_completions_says_so_under_it(
    page: Any, settings: Any, emulator: Any, watch: Watch
) -> None:
    settings.OPENAI_API_KEY = ""  # the emulator answers every OpenAI profile
    emulator.config.reply_tokens = 5
    display_name = read_db(sol_on_chat)
    sign_up(page, organization="Tools Team")
    page.get_by_label("Model", exact=True).select_option(label=display_name)
    page.get_by_label("Reasoning effort", exact=True).select_option(value="high")
    send(page, "What is 12*(3+4)/5?")

    answer = nth_answer(page, 1)
    expect(answer).to_have_attribute("data-status", "done", timeout=ANSWER_TIMEOUT_MS)
    expect(answer).to_contain_text(
        "Tools were off for this answer: gpt-6-sol takes tools on Chat Completions only at "
        "reasoning effort none.")
    [call] = [c for c in emulator.requests_to("/v1/chat/completions")
              if c["body"].get("stream")]
    assert call["status"] == 200 and call["body"]["reasoning_effort"] == "high"
    assert "tools" not in call["body"]
    assert watch.page_errors == [] and watch.dialogs == []
