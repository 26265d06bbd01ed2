"""A Chromium page sends a question through the UI on web process A and, mid-answer, is
reloaded onto web process B (same host, other port: the session cookie, the websocket
Origin check and ALLOWED_HOSTS all hold): it shows the whole answer, exactly the saved
text and what the emulator streamed."""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import urlsplit

import pytest
from django.test import Client

from accounts.models import User
from conversations.models import Message
from llm.models import ModelProfile
from tests.browser.conftest import CHROMIUM, CHROMIUM_ARGS, read_db, require_chromium
from tests.scaleout.conftest import ScaledStack
from tests.scaleout.test_scale_out import ask_for

playwright_api = pytest.importorskip("playwright.sync_api")
expect = playwright_api.expect

pytestmark = [pytest.mark.slow, pytest.mark.browser, pytest.mark.django_db(transaction=True)]

SHOWN_BEFORE_RELOAD = 40  # characters of the answer on screen before the page moves


def session_cookie(user: User) -> str:
    client = Client()
    client.force_login(user)
    return client.cookies["sessionid"].value


def test_a_page_reloaded_onto_the_other_web_process_mid_answer_shows_the_whole_answer(
    stack: ScaledStack, alice: User, o3_mini: ModelProfile, emulator: Any
) -> None:
    require_chromium()
    # Long enough (about 7 s) that the page on B still follows it live.
    question, reply = ask_for(emulator, label="reload", words=40)
    cookie = session_cookie(alice)  # every ORM call before the browser's event loop starts
    deltas_by_port: dict[int, int] = {}

    def watch_socket(ws: Any) -> None:
        port = urlsplit(ws.url).port or 0
        deltas_by_port.setdefault(port, 0)

        def on_frame(payload: str | bytes) -> None:
            if json.loads(payload).get("type") == "delta":
                deltas_by_port[port] += 1

        ws.on("framereceived", on_frame)

    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            context = browser.new_context()
            context.set_default_timeout(20_000)
            # A host-only cookie for 127.0.0.1: browsers send it to every port of the host.
            context.add_cookies([{"name": "sessionid", "value": cookie, "url": stack.web_a}])
            page = context.new_page()
            page.on("websocket", watch_socket)

            page.goto(stack.web_a + "/")
            expect(page.get_by_test_id("connection-status")).to_have_attribute("data-state", "open")
            page.get_by_label("Message", exact=True).fill(question)
            page.get_by_role("button", name="Send", exact=True).click()
            answer = page.get_by_test_id("assistant-message").first
            expect(answer).to_have_attribute("data-message-id", re.compile(r"^\d+$"))
            message_id = int(answer.get_attribute("data-message-id") or 0)
            page.wait_for_function(
                "([id, n]) => ((window.teamChat.messageState(id) || {}).text || '').length >= n",
                arg=[message_id, SHOWN_BEFORE_RELOAD])
            shown_on_a = page.evaluate("id => window.teamChat.messageState(id).text", message_id)
            conversation = urlsplit(page.url).path

            page.goto(stack.web_b + conversation)
            answer = page.locator(f'article[data-message-id="{message_id}"]')
            expect(answer).to_have_attribute("data-status", "done", timeout=30_000)
            shown_on_b = page.evaluate("id => window.teamChat.messageState(id).text", message_id)
        finally:
            browser.close()

    saved = read_db(lambda: Message.objects.values("status", "content").get(pk=message_id))
    assert saved == {"status": Message.Status.DONE, "content": reply}
    assert shown_on_b == reply
    # It moved mid-answer: A showed a beginning of it, and B's socket carried the rest.
    assert reply.startswith(shown_on_a) and len(shown_on_a) < len(reply)
    port_a, port_b = (urlsplit(base).port or 0 for base in (stack.web_a, stack.web_b))
    assert deltas_by_port.get(port_a, 0) > 0 and deltas_by_port.get(port_b, 0) > 0, deltas_by_port
    assert conversation == f"/c/{read_db(lambda: Message.objects.get(pk=message_id).conversation_id)}/"
