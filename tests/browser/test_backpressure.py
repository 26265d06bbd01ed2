"""Visible back-pressure in headless Chromium: with no worker free, a new turn says
"Queued (n ahead)"; once a worker starts, the answers stream as usual."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.browser.conftest import SharedWorker, Watch, read_db, sign_up
from tests.browser.test_budgets import send
from tests.conftest import LiveServer, purge_task_queue

playwright_api = pytest.importorskip("playwright.sync_api")
expect = playwright_api.expect

ANSWER_TIMEOUT_MS = 30_000


@pytest.fixture
def live_server_url(transactional_db: None, emulator: Any, asgi_server: LiveServer,
                    shared_worker: SharedWorker) -> Iterator[str]:
    """The real ASGI app served by uvicorn, like tests/conftest.py's, but with no Celery
    worker (the package's shared one stops): every answer waits in the queue until the
    test starts one."""
    shared_worker.stop()
    purge_task_queue()  # nothing left over from earlier tests
    yield asgi_server.url
    asgi_server.settle()


def test_a_turn_waiting_for_a_worker_says_queued_then_streams_when_a_worker_starts(
    page: Any, watch: Watch, settings: Any
) -> None:
    from chatsite.embedded import start_worker
    from conversations.models import Message

    settings.MAX_QUEUED_TURNS = 2
    sign_up(page)
    send(page, "First question, nobody is working [queue-1]")
    first = page.get_by_test_id("assistant-message")
    # Alone in the queue and still unclaimed a second later: it is next.
    expect(first.get_by_test_id("thinking")).to_have_text("Queued (next)")

    page.get_by_role("link", name="New chat").click()
    expect(page.get_by_test_id("connection-status")).to_have_attribute("data-state", "open")
    send(page, "Second question, behind the first [queue-2]")
    second = page.get_by_test_id("assistant-message")
    expect(second.get_by_test_id("thinking")).to_have_text("Queued (1 ahead)")
    assert read_db(lambda: Message.objects.filter(role="assistant", status="pending").count()) == 2

    # A third question while two wait (MAX_QUEUED_TURNS = 2): refused, nothing saved.
    page.get_by_role("link", name="New chat").click()
    expect(page.get_by_test_id("connection-status")).to_have_attribute("data-state", "open")
    send(page, "Third question, over the queue limit [queue-3]")
    error = page.get_by_test_id("composer-error")
    expect(error).to_contain_text("Service busy")
    expect(error).to_contain_text("Nothing was saved or charged; send your message again in about 30 seconds")
    expect(page.get_by_label("Message", exact=True)).to_have_value("Third question, over the queue limit [queue-3]")
    assert read_db(lambda: Message.objects.count()) == 4
    page.go_back()
    second = page.get_by_test_id("assistant-message")
    expect(second.get_by_test_id("thinking")).to_have_text("Queued (1 ahead)")

    worker = start_worker(concurrency=8)
    try:
        expect(second).to_have_attribute("data-status", "done", timeout=ANSWER_TIMEOUT_MS)
        expect(second.get_by_test_id("thinking")).to_be_hidden()
        expect(second.get_by_test_id("message-body")).not_to_be_empty()
        statuses = read_db(lambda: sorted(
            Message.objects.filter(role="assistant").values_list("status", flat=True)))
        assert statuses == ["done", "done"]
    finally:
        worker.stop(in_sighandler=False)
    assert watch.page_errors == [] and watch.dialogs == []
