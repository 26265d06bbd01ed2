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

playwright_api = pytest.importorskip("playwright.sync_api")
expect = playwright_api.expect

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

QUESTION = "Will the database answer this time?"


def _end_backends_waiting_for_a_lock(session: psycopg.Connection[Any]) -> int:
    rows = session.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname ="
        " current_database() AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()"
    ).fetchall()
    return len(rows)


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
        ended, deadline = 0, time.monotonic() + 20
        while not ended:
            assert time.monotonic() < deadline, "the send never waited for the lock"
            time.sleep(0.05)
            ended = _end_backends_waiting_for_a_lock(second_session)
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

    def settled() -> tuple[Decimal, list[tuple[Decimal, Decimal]]]:
        turn = Reservation.objects.get(message__isnull=False)
        assert turn.settled_at is not None and turn.charged_usd is not None
        assert turn.charged_usd > 0
        return turn.charged_usd, sorted(UsagePeriod.objects.values_list("spent_usd",
                                                                         "reserved_usd"))

    # The new conversation's title is its own reservation: wait until nothing is held.
    deadline = time.monotonic() + 30
    while read_db(lambda: Reservation.objects.filter(settled_at__isnull=True).exists()):
        assert time.monotonic() < deadline, "a reservation stayed held"
        time.sleep(0.1)
    charged, rows = read_db(settled)
    titles = read_db(lambda: sum((r.charged_usd or Decimal(0) for r in
                                  Reservation.objects.filter(message__isnull=True)), Decimal(0)))
    assert rows == [(charged + titles, Decimal(0))] * 2
