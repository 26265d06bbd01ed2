"""Edit & branch, regenerate and "‹ 1 / 2 ›" versions, clicked in headless Chromium
against the real stack (uvicorn, Celery worker, PostgreSQL, Redis, the emulator)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

from tests.browser.conftest import Watch, read_db, sign_up
from tests.browser.test_budgets import send

playwright_api = pytest.importorskip("playwright.sync_api")
expect = playwright_api.expect

ANSWER_TIMEOUT_MS = 30_000


def wait_for_answers(page: Any, count: int) -> Any:
    answers = page.get_by_test_id("assistant-message")
    expect(answers).to_have_count(count)
    last = answers.nth(count - 1)
    expect(last).to_have_attribute("data-status", "done", timeout=ANSWER_TIMEOUT_MS)
    return last


def wait_for_replacement(page: Any, count: int, old_id: str) -> Any:
    """The last answer once it is a new one (not ``old_id``) and finished."""
    answers = page.get_by_test_id("assistant-message")
    expect(answers).to_have_count(count)
    last = answers.nth(count - 1)
    expect(last).not_to_have_attribute("data-message-id", old_id)
    expect(last).to_have_attribute("data-status", "done", timeout=ANSWER_TIMEOUT_MS)
    return last


def ask(page: Any, text: str, count: int) -> Any:
    send(page, text)
    return wait_for_answers(page, count)


def question(page: Any, n: int) -> Any:
    return page.get_by_test_id("user-message").nth(n)


def versions_of(message: Any) -> Any:
    return message.get_by_role("group", name="Versions")


def conversation_rows(conversation_id: int) -> list[Mapping[str, Any]]:
    from conversations.models import Message

    return read_db(lambda: list(
        Message.objects.filter(conversation_id=conversation_id)
        .order_by("id")
        .values("id", "role", "content", "parent_id", "reasoning_effort", "status")
    ))


def add_second_model() -> None:
    """A second model the emulator serves ("GPT-5.6 Sol"), besides the seed o3-mini."""
    from llm.models import ModelProfile

    seed = ModelProfile.objects.get(name="o3-mini")
    own = ("id", "origin", "catalog_key", "catalog_values", "listed_at")
    values = {f.name: getattr(seed, f.name) for f in ModelProfile._meta.fields if f.name not in own}
    values.update(name="sol", display_name="GPT-5.6 Sol", model="gpt-5.6-sol",
                  reasoning_efforts=["minimal", "low", "medium", "high"], default_effort="low",
                  max_completion_tokens_by_effort={})
    ModelProfile.objects.create(**values)


def current_leaf(conversation_id: int) -> int | None:
    from conversations.models import Conversation

    return read_db(lambda: Conversation.objects.get(pk=conversation_id).current_leaf_id)


def test_edit_save_and_send_branches_and_versions_switch_both_ways_and_survive_reload(
    chat_page: Any, watch: Watch
) -> None:
    page = chat_page
    ask(page, "First question [branch-1]", 1)
    second = ask(page, "Second question [branch-2]", 2)
    second_id = second.get_attribute("data-message-id")
    conversation = page.evaluate("window.teamChat.conversation")
    assert versions_of(question(page, 1)).count() == 0  # one version: no navigation

    question(page, 1).get_by_role("button", name="Edit").click()
    editor = page.get_by_role("textbox", name="Edit message")
    expect(editor).to_have_value("Second question [branch-2]")
    editor.fill("Second question, edited [branch-2b]")
    page.get_by_role("button", name="Save & send").click()

    wait_for_replacement(page, 2, second_id)
    expect(page.get_by_test_id("user-message")).to_have_count(2)
    expect(question(page, 1).get_by_test_id("message-body")).to_have_text("Second question, edited [branch-2b]")
    expect(versions_of(question(page, 1))).to_have_text("‹ 2 / 2 ›")
    expect(page.get_by_label("Message", exact=True)).to_have_value("")  # the composer was not used

    rows = conversation_rows(conversation)
    old_q, new_q = [r for r in rows if r["role"] == "user"][1:]
    assert old_q["content"] == "Second question [branch-2]"  # the old branch is kept
    assert new_q["parent_id"] == old_q["parent_id"]
    assert len(rows) == 6

    # ‹ back to the first version, in place (no navigation), persisted.
    question(page, 1).get_by_role("button", name="Previous version").click()
    expect(question(page, 1).get_by_test_id("message-body")).to_have_text("Second question [branch-2]")
    expect(versions_of(question(page, 1))).to_have_text("‹ 1 / 2 ›")
    expect(question(page, 1).get_by_role("button", name="Previous version")).to_be_disabled()
    old_answer = next(r for r in rows if r["parent_id"] == old_q["id"])
    assert current_leaf(conversation) == old_answer["id"]

    page.reload()
    expect(page.get_by_test_id("connection-status")).to_have_attribute("data-state", "open")
    expect(question(page, 1).get_by_test_id("message-body")).to_have_text("Second question [branch-2]")
    expect(versions_of(question(page, 1))).to_have_text("‹ 1 / 2 ›")
    expect(page.get_by_test_id("assistant-message")).to_have_count(2)

    # › forward again.
    question(page, 1).get_by_role("button", name="Next version").click()
    expect(question(page, 1).get_by_test_id("message-body")).to_have_text("Second question, edited [branch-2b]")
    expect(versions_of(question(page, 1))).to_have_text("‹ 2 / 2 ›")
    # At the last version "Next" is disabled, so the keyboard lands on "Previous".
    expect(question(page, 1).get_by_role("button", name="Next version")).to_be_disabled()
    expect(question(page, 1).get_by_role("button", name="Previous version")).to_be_focused()
    assert versions_of(question(page, 0)).count() == 0
    assert watch.page_errors == [] and watch.dialogs == []


def test_regenerate_adds_a_version_at_the_chosen_effort_and_arrow_up_edits_the_last_question(
    chat_page: Any, watch: Watch
) -> None:
    page = chat_page
    first = ask(page, "Only question [regen-1]", 1)
    first_id = int(first.get_attribute("data-message-id"))
    conversation = page.evaluate("window.teamChat.conversation")

    page.get_by_label("Reasoning effort").select_option("high")
    first.get_by_role("button", name="Regenerate").click()
    menu = page.get_by_role("form", name="Regenerate options")
    # One model in the org: only the effort is asked, defaulting to the composer's.
    expect(menu.get_by_label("Model")).to_be_hidden()
    expect(menu.get_by_label("Reasoning effort")).to_have_value("high")
    menu.get_by_role("button", name="Ask again").click()
    expect(menu).to_have_count(0)
    again = page.get_by_test_id("assistant-message").first
    expect(again).not_to_have_attribute("data-message-id", str(first_id))
    expect(again).to_have_attribute("data-status", "done", timeout=ANSWER_TIMEOUT_MS)
    expect(versions_of(again)).to_have_text("‹ 2 / 2 ›")
    rows = conversation_rows(conversation)
    assert [r["role"] for r in rows] == ["user", "assistant", "assistant"]  # no new question
    assert rows[2]["parent_id"] == rows[0]["id"] and rows[2]["reasoning_effort"] == "high"
    assert rows[2]["status"] == "done"

    again.get_by_role("button", name="Previous version").click()
    expect(page.get_by_test_id("assistant-message").first).to_have_attribute("data-message-id", str(first_id))
    expect(versions_of(page.get_by_test_id("assistant-message").first)).to_have_text("‹ 1 / 2 ›")

    # ↑ in the empty message box opens the last question for editing.
    box = page.get_by_label("Message", exact=True)
    box.focus()
    box.press("ArrowUp")
    editor = page.get_by_role("textbox", name="Edit message")
    expect(editor).to_be_focused()
    expect(editor).to_have_value("Only question [regen-1]")
    editor.fill("Only question, asked better [regen-2]")
    editor.press("Enter")
    answer = page.get_by_test_id("assistant-message").first
    expect(answer).not_to_have_attribute("data-message-id", str(first_id))
    expect(answer).to_have_attribute("data-status", "done", timeout=ANSWER_TIMEOUT_MS)
    expect(question(page, 0).get_by_test_id("message-body")).to_have_text("Only question, asked better [regen-2]")
    expect(versions_of(question(page, 0))).to_have_text("‹ 2 / 2 ›")
    rows = conversation_rows(conversation)
    assert [r["role"] for r in rows].count("user") == 2
    assert rows[-2]["parent_id"] is None  # an edited first question is a second root
    assert watch.page_errors == [] and watch.dialogs == []


def test_regenerate_on_another_model_names_it_on_the_sibling_and_keeps_the_conversations_model(
    page: Any, watch: Watch
) -> None:
    from conversations.models import Conversation, Message

    read_db(add_second_model)
    sign_up(page)
    first = ask(page, "Which model answers? [regen-model]", 1)
    first_id = first.get_attribute("data-message-id")
    conversation = page.evaluate("window.teamChat.conversation")

    # Keyboard: Enter opens the menu on the model choice, Escape closes it back onto Regenerate.
    regenerate = first.get_by_role("button", name="Regenerate")
    regenerate.focus()
    regenerate.press("Enter")
    menu = page.get_by_role("form", name="Regenerate options")
    model = menu.get_by_label("Model")
    expect(model).to_be_focused()
    expect(regenerate).to_have_attribute("aria-expanded", "true")
    expect(model).to_have_value("o3-mini")  # the conversation's model by default
    model.press("Escape")
    expect(menu).to_have_count(0)
    expect(regenerate).to_be_focused()
    expect(regenerate).to_have_attribute("aria-expanded", "false")

    regenerate.click()
    model.select_option(label="GPT-5.6 Sol")
    effort = menu.get_by_label("Reasoning effort")
    expect(effort.locator("option")).to_have_text(["Minimal", "Low", "Medium", "High"])
    effort.select_option("minimal")
    menu.get_by_role("button", name="Ask again").click()

    again = wait_for_replacement(page, 1, first_id)
    expect(again.locator(".message-meta")).to_have_text("GPT-5.6 Sol · minimal effort")
    expect(versions_of(again)).to_have_text("‹ 2 / 2 ›")

    def saved() -> tuple[list[tuple[str, str, str]], str]:
        answers = Message.objects.filter(conversation_id=conversation, role="assistant").order_by("id")
        rows = []
        for m in answers.select_related("profile"):
            assert m.profile is not None
            rows.append((m.profile.name, m.model_name, m.reasoning_effort))
        return rows, Conversation.objects.get(pk=conversation).profile.name

    rows, conversation_model = read_db(saved)
    assert rows[1] == ("sol", "gpt-5.6-sol", "minimal") and rows[0][0] == "o3-mini"
    assert conversation_model == "o3-mini"  # that answer only: the conversation's model stays

    # The first version still names the model that wrote it.
    again.get_by_role("button", name="Previous version").click()
    older = page.get_by_test_id("assistant-message").first
    expect(older).to_have_attribute("data-message-id", first_id)
    expect(older.locator(".message-meta")).to_contain_text("o3-mini")
    assert watch.page_errors == [] and watch.dialogs == []


def test_switching_the_model_of_an_open_conversation_carries_on_with_it_after_reload(
    page: Any, watch: Watch
) -> None:
    """A person picks another model in the composer of a conversation that already has
    answers; the next answer comes from it, and the conversation stays on it."""
    from conversations.models import Conversation, Message

    read_db(add_second_model)
    sign_up(page)
    first = ask(page, "Who answers first? [switch-model]", 1)
    expect(first.locator(".message-meta")).to_contain_text("o3-mini")
    conversation = page.evaluate("window.teamChat.conversation")

    model = page.get_by_label("Model", exact=True)
    expect(model).to_have_value("o3-mini")
    model.select_option(label="GPT-5.6 Sol")
    effort = page.get_by_label("Reasoning effort", exact=True)
    expect(effort.locator("option")).to_have_text(["Minimal", "Low", "Medium", "High"])
    second = ask(page, "And who answers now? [switch-model]", 2)
    expect(second.locator(".message-meta")).to_contain_text("GPT-5.6 Sol")

    def saved() -> tuple[list[str], str]:
        answers = Message.objects.filter(conversation_id=conversation, role="assistant").order_by("id")
        return ([m.model_name for m in answers],
                Conversation.objects.get(pk=conversation).profile.name)

    assert read_db(saved) == (["o3-mini", "gpt-5.6-sol"], "sol")

    page.reload()
    expect(page.get_by_label("Model", exact=True)).to_have_value("sol")
    answers = page.get_by_test_id("assistant-message")
    expect(answers.nth(0).locator(".message-meta")).to_contain_text("o3-mini")
    expect(answers.nth(1).locator(".message-meta")).to_contain_text("GPT-5.6 Sol")
    assert watch.page_errors == [] and watch.dialogs == []
