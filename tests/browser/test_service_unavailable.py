"""Sending while the task queue (the Celery broker) is down, in headless Chromium.

The page's server and worker run in this process; the app's broker URL is pointed at a
closed port for the first send, so the refusal comes from the real publish after the
turn's commit (answers.dispatch): the saved answer ends failed at $0.
"""

from __future__ import annotations

from typing import Any

import pytest

from chatsite.celery import app
from conversations.models import Message
from tests.browser.conftest import read_db
from tests.conftest import free_port

playwright_api = pytest.importorskip("playwright.sync_api")
expect = playwright_api.expect

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

QUESTION = "Is the service up? [queue-down]"


def _point_broker_at(url: str) -> None:
    # The publishing pools were opened on the old URL: the next publish opens new ones.
    app.conf.broker_url = url
    app._pool = None
    app.amqp._producer_pool = None


def test_a_message_sent_while_the_queue_is_down_is_refused_kept_and_sent_once_it_is_back(
    chat_page: Any,
) -> None:
    page = chat_page
    working = app.conf.broker_url
    _point_broker_at(f"redis://127.0.0.1:{free_port()}/0")
    try:
        page.get_by_label("Message", exact=True).fill(QUESTION)
        page.get_by_role("button", name="Send", exact=True).click()

        error = page.get_by_test_id("composer-error")
        expect(error).to_be_visible()
        expect(error).to_have_attribute("data-code", "service_unavailable")
        expect(error).to_contain_text("nothing was charged")
        expect(page.get_by_label("Message", exact=True)).to_have_value(QUESTION)
        expect(page.get_by_test_id("assistant-message")).to_have_count(0)
        expect(page.get_by_test_id("connection-status")).to_have_attribute("data-state", "open")
        assert read_db(lambda: list(Message.objects.filter(role=Message.Role.ASSISTANT)
                                    .values_list("status", "cost_usd"))) == [("failed", 0)]
    finally:
        _point_broker_at(working)

    # The queue is back: the same page, on the same socket, sends the kept question.
    page.get_by_role("button", name="Send", exact=True).click()
    answer = page.get_by_test_id("assistant-message").first
    expect(answer).to_have_attribute("data-status", "done", timeout=30_000)
    expect(page.get_by_test_id("composer-error")).to_be_hidden()
    assert read_db(lambda: list(Message.objects.filter(role=Message.Role.ASSISTANT)
                                .values_list("status", flat=True).order_by("id"))) \
        == ["failed", "done"]
