"""A tab never waits forever: a live answer that goes silent on the socket is resumed by
the page itself, and the answer ends with exactly the saved text.

The silence is made deterministic by routing the page's websocket through Playwright:
after the answer's first delta every frame about it is dropped (as a lost pub/sub
message would be) until the page, on its own, sends ``resume``. The page's silence
threshold (30 s in production) is shortened through the transcript's data attribute.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.browser.conftest import read_db, sign_up

playwright_api = pytest.importorskip("playwright.sync_api")
expect = playwright_api.expect

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_a_silent_live_answer_is_resumed_by_the_page_and_ends_with_the_saved_text(
    page: Any, emulator: Any
) -> None:
    emulator.config.tokens_per_second = 60
    emulator.config.reply_tokens = 120
    seen: dict[str, Any] = {"answer": None, "dropping": False, "dropped": 0, "resumes": []}

    def route(ws: Any) -> None:
        server = ws.connect_to_server()

        def from_page(message: str | bytes) -> None:
            frame = json.loads(message)
            if frame.get("type") == "resume" and frame.get("message") == seen["answer"]:
                seen["resumes"].append(frame)
                seen["dropping"] = False
            server.send(message)

        def from_server(message: str | bytes) -> None:
            frame = json.loads(message)
            if frame.get("type") == "message.created":
                seen["answer"] = frame["assistant_message"]
            elif frame.get("message") == seen["answer"] and seen["answer"] is not None:
                if seen["dropping"]:
                    seen["dropped"] += 1
                    return
                if frame.get("type") == "delta" and not seen["resumes"]:
                    seen["dropping"] = True  # the first delta arrives; the rest get lost
            ws.send(message)

        ws.on_message(from_page)
        server.on_message(from_server)

    page.route_web_socket("**/ws/chat/", route)
    sign_up(page)
    page.evaluate("document.getElementById('transcript').dataset.silentResumeMs = '1500'")

    page.get_by_label("Message", exact=True).fill("Tell me about Euler")
    page.get_by_role("button", name="Send", exact=True).click()

    answer = page.get_by_test_id("assistant-message").first
    expect(answer).to_have_attribute("data-status", "done", timeout=30_000)
    assert seen["dropped"] > 0, "no frame was lost, so nothing was tested"
    assert seen["resumes"] and seen["resumes"][0]["after_seq"] == 1
    message_id = int(answer.get_attribute("data-message-id"))

    from conversations.models import Message

    saved = read_db(lambda: Message.objects.values("content", "status").get(pk=message_id))
    state = page.evaluate("id => window.teamChat.messageState(id)", message_id)
    assert saved["status"] == "done" and saved["content"]
    assert state["text"] == saved["content"]


def test_a_stopped_answer_shows_its_cost_as_an_estimate_equal_to_the_charge(
    chat_page: Any, emulator: Any
) -> None:
    page = chat_page
    emulator.config.reply_tokens = 600
    emulator.config.tokens_per_second = 30
    page.get_by_label("Message", exact=True).fill("Tell me everything about tea")
    page.get_by_role("button", name="Send", exact=True).click()
    answer = page.get_by_test_id("assistant-message").first
    message_id = int(answer.get_attribute("data-message-id"))
    page.wait_for_function(
        "id => ((window.teamChat.messageState(id) || {}).text || '').length >= 40", arg=message_id
    )

    page.get_by_role("button", name="Stop", exact=True).click()

    expect(answer).to_have_attribute("data-status", "cancelled")
    usage = answer.get_by_test_id("usage")
    expect(usage).to_have_attribute("data-estimated", "true")
    expect(usage).to_contain_text("· estimated")

    from billing.models import Reservation

    charged = read_db(lambda: Reservation.objects.values_list("charged_usd", flat=True)
                      .get(message_id=message_id))
    assert charged is not None and charged > 0
    expect(usage).to_contain_text(f"${charged:.6f}")
    page.reload()  # the saved row says the same
    usage = page.get_by_test_id("assistant-message").first.get_by_test_id("usage")
    expect(usage).to_have_attribute("data-estimated", "true")
    expect(usage).to_contain_text(f"${charged:.6f} · estimated")
