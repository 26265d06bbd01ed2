"""A turn that PostgreSQL picks as a deadlock's victim starts again and succeeds, with
its money exact. The deadlock is real: another transaction holds the org's usage row
(as a settlement does) and then asks for the sender's row (as a foreign-key check at its
commit, or an account change, would), while the turn holds the sender's row and waits for
the usage row."""

from __future__ import annotations

import threading
import time
from decimal import Decimal
from typing import Any

import psycopg
import pytest
from django.db import connections
from django.db.models import Sum

from answers.replies import start_turn
from billing.models import Reservation, UsagePeriod
from conversations.models import Message

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.integration]


@pytest.fixture(autouse=True)
def offline_demo_provider(settings: Any) -> None:
    settings.OPENAI_API_KEY = ""


def _waiting_on_a_lock(other: psycopg.Connection[Any], *, besides: int) -> bool:
    row = other.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
        " AND wait_event_type = 'Lock' AND pid <> %s", [besides]).fetchone()
    return bool(row and row[0])


def test_a_turn_that_loses_a_deadlock_starts_again_and_holds_its_money_once(
    alice: Any, o3_mini: Any, second_session: psycopg.Connection[Any],
    caplog: pytest.LogCaptureFixture,
) -> None:
    first = start_turn(user=alice, organization_id=None, conversation_id=None,
                       content="First question", reasoning_effort="low")
    org_row = UsagePeriod.objects.get(organization_id=first.conversation.organization_id,
                                      user_id__isnull=True)
    outcome: dict[str, Any] = {}

    def second_turn() -> None:
        try:
            outcome["turn"] = start_turn(user=alice, organization_id=None, conversation_id=None,
                                         content="Second question", reasoning_effort="low")
        except BaseException as error:  # noqa: BLE001 - reported to the test below
            outcome["error"] = error
        finally:
            connections.close_all()

    # Only the turn's backend runs the deadlock check, so the turn is the victim.
    second_session.execute("SET deadlock_timeout = '30s'")
    second_session.execute("BEGIN")
    second_session.execute(
        "UPDATE billing_usageperiod SET reserved_usd = reserved_usd WHERE id = %s", [org_row.pk])
    pid = second_session.info.backend_pid
    turn = threading.Thread(target=second_turn)
    turn.start()
    deadline = time.monotonic() + 20
    # The turn waits for the usage row.
    while not _waiting_on_a_lock(second_session, besides=pid):
        assert time.monotonic() < deadline, "the turn never waited for the usage row"
        time.sleep(0.05)
    # The cycle: this session now waits for the sender's row, which the turn holds.
    second_session.execute("SELECT 1 FROM accounts_user WHERE id = %s FOR UPDATE", [alice.pk])
    second_session.execute("ROLLBACK")
    turn.join(30)

    assert "error" not in outcome, outcome.get("error")
    assert "lost a deadlock (attempt 1)" in caplog.text
    second = outcome["turn"].assistant_message
    assert Message.objects.filter(role=Message.Role.ASSISTANT).count() == 2
    assert Message.objects.get(pk=second.pk).status == Message.Status.PENDING
    # One reservation per turn, and the usage rows hold exactly their sum.
    held = Reservation.objects.aggregate(total=Sum("amount_usd"))["total"]
    assert Reservation.objects.filter(message_id=second.pk).count() == 1
    org_row.refresh_from_db()
    member_row = UsagePeriod.objects.get(user=alice)
    assert org_row.reserved_usd == member_row.reserved_usd == held > Decimal(0)
