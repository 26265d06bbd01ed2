"""The conversation list, search, keyboard shortcuts, the 390 px layout and axe-core, in
Chromium against the real stack, clicking what a person clicks."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.browser.conftest import Watch, read_db, sign_up

playwright_api = pytest.importorskip("playwright.sync_api")
expect = playwright_api.expect

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

AXE = Path(__file__).resolve().parents[2] / "node_modules" / "axe-core" / "axe.min.js"


# --- helpers ------------------------------------------------------------------------------


def user_of(email: str) -> Any:
    from accounts.models import User

    return read_db(lambda: User.objects.get(email=email))


def conversations_for(email: str, titles: list[str], turns: int = 1, *,
                      needle: tuple[int, str] | None = None) -> list[int]:
    """Conversations of finished turns, oldest first (the last title is the newest)."""
    from django.utils import timezone

    from conversations.models import Conversation
    from tests.sharing.conftest import add_turn, make_conversation

    def create() -> list[int]:
        user = user_of_sync(email)
        ids = []
        for n, title in enumerate(titles):
            conversation = make_conversation(user, (), title=title)
            for turn in range(turns):
                answer = f"Answer {turn} about {title}."
                if needle and turn == needle[0]:
                    answer = f"Answer {turn}: {needle[1]}"
                add_turn(conversation, f"Question {turn} about {title}?", answer)
            Conversation.objects.filter(pk=conversation.pk).update(
                updated_at=timezone.now() - dt.timedelta(seconds=len(titles) - n)
            )
            ids.append(conversation.pk)
        return ids

    return read_db(create)


def user_of_sync(email: str) -> Any:
    from accounts.models import User

    return User.objects.get(email=email)


def conversation_row(pk: int) -> Mapping[str, Any]:
    from conversations.models import Conversation

    return read_db(lambda: Conversation.objects.values(
        "title", "pinned_at", "archived_at", "deleted_at").get(pk=pk))


def sidebar(page: Any) -> Any:
    return page.get_by_role("navigation", name="Conversations")


def item(page: Any, title: str) -> Any:
    # The innermost list item: groups are list items too.
    return sidebar(page).locator("li[data-conversation-id]").filter(
        has=page.get_by_role("link", name=title, exact=True)
    )


def act(page: Any, title: str, action: str) -> None:
    row = item(page, title)
    row.hover()
    row.get_by_role("button", name=action, exact=True).click()


def serious_axe_violations(page: Any) -> list[dict[str, Any]]:
    # Evaluated through the devtools protocol, so the page's CSP (script-src 'self') does
    # not need loosening for the test.
    page.evaluate(AXE.read_text() + "\n;true")
    outcome = page.evaluate(
        """async () => {
             const results = await axe.run(document);
             return {
               passes: results.passes.length,
               serious: results.violations
                 .filter((v) => v.impact === "serious" || v.impact === "critical")
                 .map((v) => ({id: v.id, impact: v.impact, help: v.help,
                               nodes: v.nodes.slice(0, 5).map((n) => n.target.join(" "))})),
             };
           }"""
    )
    assert outcome["passes"] > 10  # axe really checked the page
    return outcome["serious"]


# --- list actions ---------------------------------------------------------------------------


def test_rename_pin_archive_restore_and_delete_from_the_list(page: Any, watch: Watch) -> None:
    email = sign_up(page)
    alpha, beta, gamma = conversations_for(email, ["Alpha plan", "Beta plan", "Gamma plan"])
    page.goto("/")
    expect(sidebar(page).get_by_role("heading", name="Today")).to_be_visible()
    expect(sidebar(page).locator("li[data-conversation-id]")).to_have_count(3)

    # Rename, inline.
    act(page, "Alpha plan", "Rename")
    title_box = sidebar(page).get_by_role("textbox", name="Title")
    title_box.fill("Alpha, renamed")
    title_box.press("Enter")
    expect(item(page, "Alpha, renamed")).to_be_visible()
    assert conversation_row(alpha)["title"] == "Alpha, renamed"
    # Escape keeps the old title.
    act(page, "Beta plan", "Rename")
    sidebar(page).get_by_role("textbox", name="Title").fill("never saved")
    sidebar(page).get_by_role("textbox", name="Title").press("Escape")
    expect(sidebar(page).get_by_role("textbox", name="Title")).to_have_count(0)
    assert conversation_row(beta)["title"] == "Beta plan"
    # Leaving the box saves, as Enter does.
    act(page, "Gamma plan", "Rename")
    sidebar(page).get_by_role("textbox", name="Title").fill("Gamma plan")  # unchanged: no write
    page.get_by_role("heading", name="History").click()
    expect(sidebar(page).get_by_role("textbox", name="Title")).to_have_count(0)
    act(page, "Beta plan", "Rename")
    sidebar(page).get_by_role("textbox", name="Title").fill("Beta, by blur")
    page.get_by_role("heading", name="History").click()
    expect(item(page, "Beta, by blur")).to_be_visible()
    assert conversation_row(beta)["title"] == "Beta, by blur"
    act(page, "Beta, by blur", "Rename")
    sidebar(page).get_by_role("textbox", name="Title").fill("Beta plan")
    sidebar(page).get_by_role("textbox", name="Title").press("Enter")
    expect(item(page, "Beta plan")).to_be_visible()

    # Pin: the oldest goes on top, under "Pinned".
    act(page, "Alpha, renamed", "Pin")
    pinned_group = sidebar(page).locator("li.conversation-group").first
    expect(pinned_group.get_by_role("heading")).to_have_text("Pinned")
    expect(pinned_group.get_by_role("link")).to_have_text(["Alpha, renamed"])
    item(page, "Alpha, renamed").hover()
    expect(item(page, "Alpha, renamed").get_by_role("button", name="Pin")).to_have_attribute(
        "aria-pressed", "true")
    assert conversation_row(alpha)["pinned_at"] is not None
    page.reload()
    expect(sidebar(page).locator("li.conversation-group").first.get_by_role("link")).to_have_text(
        ["Alpha, renamed"])

    # Archive: hidden from the list, listed (and restored) in "Archived".
    act(page, "Beta plan", "Archive")
    expect(item(page, "Beta plan")).to_have_count(0)
    assert conversation_row(beta)["archived_at"] is not None
    page.get_by_role("button", name="Archived").click()
    expect(page.get_by_role("button", name="Archived")).to_have_attribute("aria-pressed", "true")
    expect(sidebar(page).locator("li[data-conversation-id]")).to_have_count(1)
    act(page, "Beta plan", "Restore")
    expect(sidebar(page).get_by_text("No archived conversations.")).to_be_visible()
    assert conversation_row(beta)["archived_at"] is None
    page.get_by_role("button", name="Archived").click()
    expect(item(page, "Beta plan")).to_be_visible()

    # Delete asks first; Cancel keeps it, Delete removes it.
    act(page, "Gamma plan", "Delete")
    dialog = page.get_by_role("dialog", name="Delete conversation?")
    expect(dialog).to_be_visible()
    expect(dialog).to_contain_text("“Gamma plan”")
    dialog.get_by_role("button", name="Cancel").click()
    expect(dialog).to_be_hidden()
    expect(item(page, "Gamma plan")).to_be_visible()
    assert conversation_row(gamma)["deleted_at"] is None
    act(page, "Gamma plan", "Delete")
    dialog.get_by_role("button", name="Delete").click()
    expect(item(page, "Gamma plan")).to_have_count(0)
    assert conversation_row(gamma)["deleted_at"] is not None
    page.reload()
    expect(sidebar(page).locator("li[data-conversation-id]")).to_have_count(2)
    assert page.goto(f"/c/{gamma}/").status == 404
    assert watch.page_errors == [] and watch.dialogs == []


def test_deleting_the_open_conversation_goes_to_a_new_chat(page: Any, watch: Watch) -> None:
    email = sign_up(page)
    (only,) = conversations_for(email, ["Open one"])
    page.goto(f"/c/{only}/")
    act(page, "Open one", "Delete")
    page.get_by_role("dialog").get_by_role("button", name="Delete").click()
    page.wait_for_url(lambda url: urlsplit(url).path == "/")
    expect(sidebar(page).get_by_text("No conversations yet.")).to_be_visible()
    assert watch.page_errors == []


def test_scrolling_the_list_loads_more(page: Any, watch: Watch) -> None:
    email = sign_up(page)
    conversations_for(email, [f"Topic {n:03d}" for n in range(120)])
    page.goto("/")
    rows = sidebar(page).locator("li[data-conversation-id]")
    expect(rows).to_have_count(50)
    expect(rows.first).to_have_text(re.compile("^Topic 119"))
    for expected in (100, 120):
        sidebar(page).evaluate("(nav) => nav.scrollTo(0, nav.scrollHeight)")
        expect(rows).to_have_count(expected)
    expect(rows.last).to_have_text(re.compile("^Topic 000"))
    expect(page.locator("#list-more")).to_be_hidden()
    assert watch.page_errors == []


# --- search ---------------------------------------------------------------------------------


def test_search_finds_the_message_and_opens_it_scrolled_into_view(page: Any, watch: Watch) -> None:
    email = sign_up(page)
    conversations_for(email, ["Cooking"], turns=2)
    (target,) = conversations_for(email, ["Travel notes"], turns=30,
                                  needle=(3, "The ferry to Zanzibar leaves at dawn."))
    page.goto("/")
    page.keyboard.press("Control+k")
    box = page.get_by_role("searchbox", name="Search conversations")
    expect(box).to_be_focused()
    box.fill("zanzibar ferry")
    results = page.get_by_role("list", name="Search results").get_by_role("link")
    expect(results).to_have_count(1)
    expect(results.first).to_contain_text("Travel notes")
    expect(results.first.locator("mark")).to_have_text(["ferry", "Zanzibar"])
    expect(page.get_by_role("status").filter(has_text="1 result")).to_be_visible()
    results.first.click()
    page.wait_for_url(re.compile(rf"/c/{target}/#m\d+$"))
    found = re.search(r"#m(\d+)$", page.url)
    assert found is not None
    message_id = found.group(1)
    message = page.locator(f'[data-message-id="{message_id}"]')
    expect(message).to_contain_text("The ferry to Zanzibar leaves at dawn.")
    expect(message).to_be_in_viewport()
    expect(message).to_have_class(re.compile("message-highlight"))
    # The transcript is longer than the screen: it really scrolled.
    assert page.locator('[data-testid="assistant-message"]').first.evaluate(
        "(node) => node.getBoundingClientRect().bottom < 0")

    box = page.get_by_role("searchbox", name="Search conversations")
    box.fill("nothing-like-this-anywhere")
    expect(page.get_by_text("Nothing matches “nothing-like-this-anywhere”.")).to_be_visible()
    box.press("Escape")
    expect(box).to_have_value("")
    expect(sidebar(page).locator("li[data-conversation-id]")).to_have_count(2)
    assert watch.page_errors == []


# --- keyboard -------------------------------------------------------------------------------


def test_keyboard_starts_a_new_chat_and_escape_stops_the_answer(
    page: Any, emulator: Any, watch: Watch
) -> None:
    email = sign_up(page)
    (existing,) = conversations_for(email, ["Earlier"])
    page.goto(f"/c/{existing}/")
    expect(page.get_by_test_id("connection-status")).to_have_attribute("data-state", "open")
    page.keyboard.press("Control+Shift+O")
    page.wait_for_url(lambda url: urlsplit(url).path == "/")
    expect(page.get_by_test_id("connection-status")).to_have_attribute("data-state", "open")

    emulator.config.reply_tokens = 600
    emulator.config.tokens_per_second = 20
    page.get_by_label("Message", exact=True).fill("Tell me a long story")
    page.get_by_role("button", name="Send", exact=True).click()
    answer = page.get_by_test_id("assistant-message").first
    expect(answer.get_by_test_id("message-body")).not_to_be_empty()
    expect(page.get_by_role("button", name="Stop", exact=True)).to_be_visible()
    page.keyboard.press("Escape")
    expect(answer).to_have_attribute("data-status", "cancelled")
    expect(page.get_by_role("button", name="Stop", exact=True)).to_be_hidden()
    # The new conversation was filed under Today in the list, with its actions.
    new_item = sidebar(page).locator("li.conversation-group[data-group='Today'] li").first
    expect(new_item.get_by_role("link")).to_have_attribute("aria-current", "page")
    new_item.hover()
    expect(new_item.get_by_role("button", name="Rename")).to_be_visible()
    assert watch.page_errors == []


# --- narrow screens and accessibility -------------------------------------------------------


def test_at_390_px_the_list_collapses_behind_a_conversations_button(page: Any, watch: Watch) -> None:
    email = sign_up(page)
    (first,) = conversations_for(email, ["Pocket-sized"])
    page.set_viewport_size({"width": 390, "height": 844})
    page.goto("/")
    toggle = page.get_by_role("button", name="Conversations")
    expect(toggle).to_have_attribute("aria-expanded", "false")
    expect(page.get_by_role("link", name="Pocket-sized")).to_be_hidden()
    expect(page.get_by_label("Message", exact=True)).to_be_visible()
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    toggle.click()
    expect(toggle).to_have_attribute("aria-expanded", "true")
    # Phones have no hover: on a narrow screen the actions are there without it.
    expect(item(page, "Pocket-sized").get_by_role("button", name="Rename")).to_be_visible()
    page.get_by_role("link", name="Pocket-sized").click()
    page.wait_for_url(re.compile(rf"/c/{first}/$"))
    expect(page.get_by_role("button", name="Conversations")).to_have_attribute("aria-expanded", "false")
    page.keyboard.press("Control+k")
    expect(page.get_by_role("searchbox", name="Search conversations")).to_be_focused()
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    assert serious_axe_violations(page) == []
    assert watch.page_errors == []


def test_axe_finds_nothing_serious_on_the_chat_org_usage_and_share_pages(
    page: Any, watch: Watch
) -> None:
    from sharing.links import create_link

    email = sign_up(page)
    (conversation,) = conversations_for(email, ["Accessible"], turns=2)
    token = read_db(lambda: create_link(user=user_of_sync(email), conversation_id=conversation,
                                        visibility="org", expires_at=None).token)
    for path in (f"/c/{conversation}/", "/", "/org/", "/org/usage/", f"/s/{token}/"):
        page.goto(path)
        page.wait_for_load_state("networkidle")
        assert serious_axe_violations(page) == [], path
    assert watch.page_errors == []
