"""chatsite.compiled: hot SELECTs compiled once per process, run with new ids."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any
from unittest import mock

import pytest
from django.db import connection, transaction
from django.db.models import Count, F, QuerySet
from django.db.models.sql.compiler import SQLCompiler, SQLUpdateCompiler
from django.db.transaction import TransactionManagementError
from django.utils import timezone

from accounts.models import Organization, User
from chatsite import compiled
from chatsite.compiled import CompiledSelect, CompiledUpdate, ShapeError
from conversations.access import own_conversation
from conversations.models import Conversation, Message
from llm.models import ModelProfile

pytestmark = pytest.mark.django_db


def _conversations(*, conversation: int, user: int) -> QuerySet[Conversation]:
    rows = Conversation.objects.select_related("profile", "organization", "current_leaf").annotate(
        message_count=Count("messages"))
    return own_conversation(rows, user_id=user, conversation_id=conversation)


@pytest.fixture
def two_conversations(alice: User, org_a: Organization, charlie: User) -> tuple[Conversation, Conversation]:
    profile = ModelProfile.objects.get(name="o3-mini")
    mine = Conversation.objects.create(organization=org_a, user=alice, profile=profile, title="Mine")
    question = Message.objects.create(conversation=mine, role="user", content="q")
    answer = Message.objects.create(conversation=mine, role="assistant", parent=question, content="a",
                                    tool_calls=[{"name": "calculate"}])
    mine.current_leaf = answer
    mine.save(update_fields=["current_leaf"])
    theirs = Conversation.objects.create(organization=charlie.memberships.get().organization,
                                         user=charlie, profile=profile, title="Theirs")
    return mine, theirs


def test_rows_equal_the_querysets_own_with_related_rows_converters_and_annotations(
    alice: User, charlie: User, two_conversations: tuple[Conversation, Conversation]
) -> None:
    statement = CompiledSelect(_conversations, "conversation", "user")
    for conversation, user in ((two_conversations[0], alice), (two_conversations[1], charlie)):
        ours = statement.first(conversation=conversation.pk, user=user.pk)
        django = _conversations(conversation=conversation.pk, user=user.pk).get()
        assert ours is not None
        assert ours.__dict__.keys() == django.__dict__.keys()
        assert {k: v for k, v in ours.__dict__.items() if k != "_state"} == {
            k: v for k, v in django.__dict__.items() if k != "_state"}
        # select_related rows came along, decoded as Django decodes them (JSON, decimals).
        for name in ("profile", "organization"):
            assert getattr(ours, name) == getattr(django, name)
        assert ours.profile.reasoning_efforts == django.profile.reasoning_efforts
        assert ours.profile.input_price == django.profile.input_price
        assert (ours.current_leaf is None) == (django.current_leaf is None)
    mine = statement.first(conversation=two_conversations[0].pk, user=alice.pk)
    assert mine is not None and mine.current_leaf is not None
    assert mine.current_leaf.tool_calls == [{"name": "calculate"}]
    assert mine.message_count == 2  # type: ignore[attr-defined]


def test_another_orgs_user_gets_nothing(
    alice: User, charlie: User, two_conversations: tuple[Conversation, Conversation]
) -> None:
    statement = CompiledSelect(_conversations, "conversation", "user")
    mine, theirs = two_conversations
    assert statement.first(conversation=mine.pk, user=charlie.pk) is None
    assert statement.first(conversation=theirs.pk, user=alice.pk) is None
    assert statement.fetch(conversation=mine.pk, user=alice.pk) == [mine]


def test_the_sql_is_compiled_once_per_process(
    alice: User, two_conversations: tuple[Conversation, Conversation], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(compiled, "CHECKS", False)
    statement = CompiledSelect(_conversations, "conversation", "user")
    with mock.patch.object(SQLCompiler, "as_sql", autospec=True, side_effect=SQLCompiler.as_sql) as as_sql:
        for _ in range(5):
            assert statement.first(conversation=two_conversations[0].pk, user=alice.pk) is not None
    assert as_sql.call_count == 1


def test_the_row_converters_are_worked_out_once_per_thread(
    alice: User, two_conversations: tuple[Conversation, Conversation], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(compiled, "CHECKS", False)
    statement = CompiledSelect(_conversations, "conversation", "user")
    mine = two_conversations[0]
    with mock.patch.object(SQLCompiler, "get_converters", autospec=True,
                           side_effect=SQLCompiler.get_converters) as get_converters:
        rows = [statement.first(conversation=mine.pk, user=alice.pk) for _ in range(5)]
        assert get_converters.call_count == 1
        # Another thread works them out with its own connection, once.
        other = threading.Thread(target=lambda: [
            statement.fetch(conversation=mine.pk, user=alice.pk) for _ in range(3)])
        other.start()
        other.join()
        assert get_converters.call_count == 2
    # Still decoded each time (JSON, decimals), and each row is a model of its own.
    assert all(row is not None and row.current_leaf is not None
               and row.current_leaf.tool_calls == [{"name": "calculate"}] for row in rows)
    assert len({id(row) for row in rows}) == 5


@pytest.mark.django_db(transaction=True)
def test_locking_statements_run_inside_the_transaction(
    alice: User, two_conversations: tuple[Conversation, Conversation]
) -> None:
    statement = CompiledSelect(
        lambda *, conversation, user: own_conversation(
            Conversation.objects.select_for_update(), user_id=user, conversation_id=conversation),
        "conversation", "user")
    with transaction.atomic():
        assert statement.first(conversation=two_conversations[0].pk, user=alice.pk) is not None
        [plan] = statement._plans.values()
        assert plan.sql.endswith("FOR UPDATE") == connection.features.has_select_for_update
    # Outside one, the cached plan refuses as Django's compile does: a lock taken and
    # released at once would lock nothing.
    with pytest.raises(TransactionManagementError):
        statement.first(conversation=two_conversations[0].pk, user=alice.pk)


def test_values_must_be_the_named_ints() -> None:
    statement = CompiledSelect(_conversations, "conversation", "user")
    with pytest.raises(TypeError, match="expected values"):
        statement.first(conversation=1)
    for bad in ("1", 1.0, True, None):
        with pytest.raises(TypeError, match="must be an int"):
            statement.first(conversation=bad, user=1)  # type: ignore[arg-type]


def test_a_value_the_query_does_not_take_is_refused_at_compile() -> None:
    statement = CompiledSelect(
        lambda *, conversation, user: Conversation.objects.filter(pk=conversation), "conversation", "user")
    with pytest.raises(ShapeError, match="user"):
        statement.first(conversation=1, user=2)


def test_a_hidden_input_is_caught_when_checks_are_on(
    alice: User, two_conversations: tuple[Conversation, Conversation]
) -> None:
    """What the queryset reads besides its values must be passed as ``shape``; a test
    that changes it fails instead of running stale SQL."""
    hidden: dict[str, Any] = {"title": "Mine"}
    statement = CompiledSelect(
        lambda *, conversation, user: _conversations(conversation=conversation, user=user).filter(
            title=hidden["title"]), "conversation", "user")
    assert statement.first(conversation=two_conversations[0].pk, user=alice.pk) is not None
    hidden["title"] = "Other"
    with pytest.raises(ShapeError, match="as shape"):
        statement.first(conversation=two_conversations[0].pk, user=alice.pk)
    # Passed as shape, each variant has its own SQL.
    statement = CompiledSelect(
        lambda *, conversation, user: _conversations(conversation=conversation, user=user).filter(
            title=hidden["title"]), "conversation", "user")
    for title, found in (("Mine", True), ("Other", False)):
        hidden["title"] = title
        row = statement.first(shape=title, conversation=two_conversations[0].pk, user=alice.pk)
        assert (row is not None) == found


# --- CompiledUpdate ------------------------------------------------------------------------


def _reopen(*, message: int, now: datetime) -> tuple[QuerySet[Message], dict[str, Any]]:
    return (Message.objects.filter(pk=message, status=Message.Status.DONE),
            {"status": Message.Status.STREAMING, "started_at": now, "claims": F("claims") + 1})


def _run_update(sql: str, params: list[Any]) -> list[tuple[Any, ...]]:
    with connection.cursor() as cursor:
        cursor.execute(f"{sql} RETURNING id, claims", params)
        return cursor.fetchall()


def test_an_update_changes_the_named_row_as_the_querysets_own_update_does(
    two_conversations: tuple[Conversation, Conversation]
) -> None:
    statement = CompiledUpdate(_reopen, ints=("message",), times=("now",))
    answers = [Message.objects.create(conversation=c, role="assistant", content="b")
               for c in two_conversations]
    first = timezone.now()
    assert _run_update(*statement.statement(message=answers[0].pk, now=first)) == [(answers[0].pk, 1)]
    # Once changed it no longer matches its filter (status): nothing to update.
    assert _run_update(*statement.statement(message=answers[0].pk, now=first)) == []
    later = first + timedelta(seconds=5)
    assert _run_update(*statement.statement(message=answers[1].pk, now=later)) == [(answers[1].pk, 1)]
    rows = {m.pk: m for m in Message.objects.filter(pk__in=[a.pk for a in answers])}
    assert [(rows[a.pk].status, rows[a.pk].started_at, rows[a.pk].claims) for a in answers] == [
        ("streaming", first, 1), ("streaming", later, 1)]


@pytest.mark.skipif("connection.vendor != 'postgresql'")
def test_an_update_is_compiled_once_with_its_fixed_values_written_in(
    two_conversations: tuple[Conversation, Conversation], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(compiled, "CHECKS", False)
    statement = CompiledUpdate(_reopen, ints=("message",), times=("now",))
    answer = two_conversations[0].messages.get(role="assistant")
    with mock.patch.object(SQLUpdateCompiler, "as_sql", autospec=True,
                           side_effect=SQLUpdateCompiler.as_sql) as as_sql:
        for _ in range(3):
            now = timezone.now()
            sql, params = statement.statement(message=answer.pk, now=now)
    assert as_sql.call_count == 1
    # Only the moment and the id stay parameters; the statuses and the 1 are literals.
    assert "'streaming'" in sql and "'done'" in sql and " + 1" in sql
    assert params == [now, answer.pk]


def test_update_values_must_be_the_named_types() -> None:
    statement = CompiledUpdate(_reopen, ints=("message",), times=("now",))
    with pytest.raises(TypeError, match="expected values"):
        statement.statement(message=1)
    with pytest.raises(TypeError, match="must be int"):
        statement.statement(message="1", now=timezone.now())
    with pytest.raises(TypeError, match="must be datetime"):
        statement.statement(message=1, now=timezone.now().date())


@pytest.mark.skipif("connection.vendor != 'postgresql'")
def test_a_changed_update_is_caught_when_checks_are_on(
    two_conversations: tuple[Conversation, Conversation]
) -> None:
    hidden = {"status": Message.Status.DONE}
    statement = CompiledUpdate(
        lambda *, message, now: (Message.objects.filter(pk=message, status=hidden["status"]),
                                 {"started_at": now}),
        ints=("message",), times=("now",))
    answer = two_conversations[0].messages.get(role="assistant")
    statement.statement(message=answer.pk, now=timezone.now())
    hidden["status"] = Message.Status.FAILED
    with pytest.raises(ShapeError, match="compiled update"):
        statement.statement(message=answer.pk, now=timezone.now())


@pytest.mark.skipif("connection.vendor != 'postgresql'")
def test_a_value_the_update_does_not_take_is_refused() -> None:
    statement = CompiledUpdate(
        lambda *, message, now: (Message.objects.filter(pk=message), {"content": "x"}),
        ints=("message",), times=("now",))
    with pytest.raises(ShapeError, match="now"):
        statement.statement(message=1, now=timezone.now())


def test_an_updates_fields_are_written_as_djangos_own_update_writes_them(
    two_conversations: tuple[Conversation, Conversation]
) -> None:
    """JSON, decimals, booleans and None (NULL) go through their fields' preparation; the
    compiled statement and the queryset's own update leave equal rows."""
    statement = CompiledUpdate(
        lambda *, message, claim: (Message.objects.filter(pk=message, claims=claim), {}),
        ints=("message", "claim"),
        fields=("tool_calls", "cost_usd", "usage_estimated", "content_tokens", "content"))
    ours, theirs = (Message.objects.create(conversation=c, role="assistant", content="b", claims=2)
                    for c in two_conversations)
    values = {"tool_calls": [{"name": "calculate", "arguments": "{\"x\": 1}"}],
              "cost_usd": Decimal("0.0012345"), "usage_estimated": True,
              "content_tokens": None, "content": "100% done"}
    for _ in range(2):  # the first call compiles, the second reuses
        sql, params = statement.statement(message=ours.pk, claim=2, **values)
        assert _run_update(sql, params) == [(ours.pk, 2)]
    Message.objects.filter(pk=theirs.pk, claims=2).update(**values)
    # Another claim number matches nothing.
    assert _run_update(*statement.statement(message=ours.pk, claim=3, **values)) == []
    fields = ["tool_calls", "cost_usd", "usage_estimated", "content_tokens", "content"]
    [mine] = Message.objects.filter(pk=ours.pk).values(*fields)
    [django] = Message.objects.filter(pk=theirs.pk).values(*fields)
    assert mine == django
    assert mine["cost_usd"] == Decimal("0.001235") and mine["content_tokens"] is None


def test_an_updates_field_values_must_all_be_given() -> None:
    statement = CompiledUpdate(lambda *, message: (Message.objects.filter(pk=message), {}),
                               ints=("message",), fields=("content",))
    with pytest.raises(TypeError, match="expected values"):
        statement.statement(message=1)
