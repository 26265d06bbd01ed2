"""Starting a turn costs a fixed, small number of statements: each lookup also takes the
locks and counts the checks after it need (a follow-up's lookup also brings the sender's
membership, whether the conversation's model is still enabled and its messages' texts for
the prompt estimate), the turn's rows go in one statement that also counts the sender's
live answers (answers.replies._save_turn), and on PostgreSQL both budget holds and the
reservation are one statement (billing.quotas._hold_and_save). 22 statements before this
budget existed; issue 10 asked for at most 8; issue 23 for a whole turn of at most 15
(test_turn_statements)."""

from __future__ import annotations

from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from accounts.models import User
from answers import replies
from billing.models import Reservation, UsagePeriod
from conversations.models import Message

pytestmark = [pytest.mark.django_db(transaction=True)]

NEW_CONVERSATION_STATEMENTS = 4
FOLLOW_UP_STATEMENTS = 3


def _start(user: User, conversation_id: int | None, n: int) -> replies.Turn:
    return replies.start_turn(
        user=user, organization_id=None, conversation_id=conversation_id,
        content=f"Question {n}", reasoning_effort="low", client_id=f"q{n}",
    )


def _answered(turn: replies.Turn) -> replies.Turn:
    Message.objects.filter(pk=turn.assistant_message.pk).update(status=Message.Status.DONE)
    return turn


def _statements(queries: CaptureQueriesContext) -> list[str]:
    """What went to the database, transaction control (BEGIN, COMMIT) left out."""
    return [q["sql"] for q in queries.captured_queries if q["sql"] not in ("BEGIN", "COMMIT")]


def test_a_new_conversation_starts_in_a_fixed_number_of_statements(alice: User,
                                                                    o3_mini: Any) -> None:
    _answered(_start(alice, None, 0))  # the month's usage rows exist from here on
    with CaptureQueriesContext(connection) as queries:
        turn = _start(alice, None, 1)
    assert len(_statements(queries)) == NEW_CONVERSATION_STATEMENTS, _statements(queries)
    # And the turn is whole: its question, its pending answer and its reservation.
    assert turn.assistant_message.parent_id == turn.user_message.pk
    assert Reservation.objects.filter(message=turn.assistant_message).count() == 1


def test_a_follow_up_starts_in_a_fixed_number_of_statements(alice: User, o3_mini: Any) -> None:
    first = _answered(_start(alice, None, 0))
    second = _answered(_start(alice, first.conversation.pk, 1))
    with CaptureQueriesContext(connection) as queries:
        third = _start(alice, first.conversation.pk, 2)
    assert len(_statements(queries)) == FOLLOW_UP_STATEMENTS, _statements(queries)
    assert third.user_message.parent_id == second.assistant_message.pk


def test_the_first_turn_of_a_month_creates_both_usage_rows_in_its_holds(alice: User,
                                                                        o3_mini: Any) -> None:
    UsagePeriod.objects.all().delete()
    turn = _start(alice, None, 0)
    reservation = Reservation.objects.get(message=turn.assistant_message)
    rows = {row.user_id: row for row in UsagePeriod.objects.all()}
    assert set(rows) == {None, alice.pk}
    assert rows[None].reserved_usd == rows[alice.pk].reserved_usd == reservation.amount_usd
    assert (reservation.org_period_id, reservation.member_period_id) == (rows[None].pk,
                                                                         rows[alice.pk].pk)


def test_a_turn_does_not_ask_the_shared_cache_whether_the_catalog_is_synced_each_time(
    alice: User, o3_mini: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every turn and page checks the catalog sync; a process trusts a mark it has seen
    for a minute instead of a Redis round trip per check (three per turn before)."""
    from django.core.cache import cache

    from llm.catalog import sync

    sync.forget_sync()
    _answered(_start(alice, None, 0))  # syncs (demo mode: nothing to list) and marks it
    asked: list[str] = []
    real_get = cache.get

    def counting_get(key: str, *args: Any, **kwargs: Any) -> Any:
        asked.append(key)
        return real_get(key, *args, **kwargs)

    monkeypatch.setattr(sync.cache, "get", counting_get)
    _answered(_start(alice, None, 1))
    _answered(_start(alice, None, 2))
    assert [key for key in asked if key.startswith("catalog-sync:")] == []
    sync.forget_sync()
    _start(alice, None, 3)
    assert [key for key in asked if key.startswith("catalog-sync:")] != []
