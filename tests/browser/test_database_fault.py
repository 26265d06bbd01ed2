"""A send the database fails for real, in headless Chromium.

Another PostgreSQL session holds the users table while the page sends, so the send's
first read (the session's user) waits; then the server ends that backend, as a database
restart or an administrator would. The page shows the error, keeps the question, and the
same socket sends it once the database answers again. Nothing of the failed send is saved
or held, and the answer that follows is charged exactly what its ledger row says.
"""

from __future__ import annotations

import time
from decimal import Decimal
from typing import Any

import psycopg
import pytest

from billing.models import Reservation, UsagePeriod
from conversations.models import Message
from realtime.consumers import DATABASE_FAILED_DETAIL
from tests.browser.conftest import read_db
from tests.conftest import end_backend_waiting_for_a_lock, money_snapshot

playwright_api = pytest.importorskip("playwright.sync_api")
expect = playwright_api.expect

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

QUESTION = "Will the database answer this time?"


def test_a_send_the_database_fails_is_refused_kept_and_sent_once_it_answers(
    chat_page: Any, celery_worker: Any, second_session: psycopg.Connection[Any]
) -> None:
    page = chat_page
    expect(page.get_by_test_id("connection-status")).to_have_attribute("data-state", "open")
    second_session.execute("BEGIN")
    second_session.execute("LOCK TABLE accounts_user IN ACCESS EXCLUSIVE MODE")
    try:
        page.get_by_label("Message", exact=True).fill(QUESTION)
        page.get_by_role("button", name="Send", exact=True).click()
        end_backend_waiting_for_a_lock(second_session)
    finally:
        second_session.execute("ROLLBACK")

    error = page.get_by_test_id("composer-error")
    expect(error).to_be_visible()
    expect(error).to_have_attribute("data-code", "service_unavailable")
    expect(error).to_contain_text(DATABASE_FAILED_DETAIL)
    expect(page.get_by_label("Message", exact=True)).to_have_value(QUESTION)
    expect(page.get_by_test_id("assistant-message")).to_have_count(0)
    expect(page.get_by_test_id("connection-status")).to_have_attribute("data-state", "open")
    assert read_db(lambda: (Message.objects.count(), Reservation.objects.count(),
                            UsagePeriod.objects.count())) == (0, 0, 0)

    # The database answers again: the same page, on the same socket, sends the question.
    page.get_by_role("button", name="Send", exact=True).click()
    answer = page.get_by_test_id("assistant-message").first
    expect(answer).to_have_attribute("data-status", "done", timeout=30_000)
    expect(page.get_by_test_id("composer-error")).to_be_hidden()
    assert read_db(lambda: list(Message.objects.order_by("id").values_list("role", "status"))) \
        == [("user", "done"), ("assistant", "done")]

    # The new conversation's title is its own reservation: wait until nothing is held.
    deadline = time.monotonic() + 30
    while read_db(lambda: Reservation.objects.filter(settled_at__isnull=True).exists()):
        assert time.monotonic() < deadline, "a reservation stayed held"
        time.sleep(0.1)
    turn = read_db(lambda: Reservation.objects.get(message__isnull=False))
    assert turn.settled_at is not None and (turn.charged_usd or 0) > 0
    rows, reservations = read_db(money_snapshot)
    assert all(settled is not None for _, _, settled in reservations)
    spent = sum((charged for _, charged, _ in reservations), Decimal(0))
    assert rows == [(spent, Decimal(0))] * 2, (rows, reservations)
