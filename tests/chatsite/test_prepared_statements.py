"""PostgreSQL plans a hot statement once per pooled connection, not on every call."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from django.db import connection

from accounts.models import User
from answers.replies import start_turn
from conversations.models import Message
from tests.conftest import settings_module

ROOT = Path(__file__).resolve().parents[2]


def _prepared_on_this_connection() -> list[str]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT statement FROM pg_prepared_statements")
        return [row[0] for row in cursor.fetchall()]


@pytest.mark.django_db
def test_a_statement_run_five_times_is_prepared_on_its_connection(alice: Any) -> None:
    if connection.vendor != "postgresql":
        pytest.skip("prepared statements are PostgreSQL's")
    assert connection.settings_dict["OPTIONS"]["server_side_binding"] is True

    for _ in range(6):
        assert User.objects.filter(pk=alice.pk, is_active=True).only("password").first() == alice

    prepared = _prepared_on_this_connection()
    assert any('FROM "accounts_user"' in statement and "$1" in statement for statement in prepared)


def _database_options(**env: str) -> dict[str, Any]:
    code = (
        "import django, json; django.setup(); from django.conf import settings; "
        "print(json.dumps({k: v for k, v in settings.DATABASES['default']['OPTIONS'].items()"
        " if k != 'pool'}))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60,
        env={**os.environ, "DJANGO_SETTINGS_MODULE": settings_module(),
             "DATABASE_URL": "postgres://postgres@127.0.0.1:5432/teamchat", **env},
    )
    assert result.returncode == 0, result.stderr
    options: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return options


@pytest.mark.slow  # starts a child process
def test_prepared_statements_are_on_by_default_and_can_be_turned_off() -> None:
    assert _database_options() == {"server_side_binding": True, "prepare_threshold": 5}
    assert _database_options(DB_PREPARED_STATEMENTS="false") == {}


def _plans_of(marker: str) -> list[tuple[int, int]]:
    """(generic, custom) plan counts of this connection's prepared statements that
    contain ``marker``."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT statement, generic_plans, custom_plans FROM pg_prepared_statements")
        return [(generic, custom) for statement, generic, custom in cursor.fetchall()
                if marker in statement]


def _a_month_of_answers(user: Any, rows: int = 3_000) -> None:
    """Finished messages enough that scanning them costs the planner more than the
    partial indexes do (a tiny table makes every plan cheap), with fresh statistics."""
    seed = start_turn(user=user, organization_id=None, conversation_id=None,
                      content="seed", reasoning_effort="low").assistant_message
    columns = ", ".join(connection.ops.quote_name(f.column)
                        for f in Message._meta.concrete_fields if not f.primary_key)
    with connection.cursor() as cursor:
        cursor.execute(f"INSERT INTO conversations_message ({columns}) SELECT {columns}"
                       " FROM conversations_message, generate_series(1, %s) WHERE id = %s",
                       [rows, seed.pk])
        cursor.execute("UPDATE conversations_message SET status = 'done'")
        cursor.execute("ANALYZE conversations_message")


@pytest.mark.django_db
def test_a_turn_s_start_is_planned_once_per_connection_not_on_every_send(
    alice: Any, o3_mini: Any, settings: Any
) -> None:
    """The statements that start a turn count the answers waiting for a worker and the
    sender's live answers through partial indexes (``status = 'pending'``). With those
    statuses as parameters a generic plan could not use the indexes, so PostgreSQL
    planned each send afresh (3.3 ms of its CPU per follow-up in the bench); written in
    as literals, it settles on a generic plan after five custom ones."""
    if connection.vendor != "postgresql":
        pytest.skip("prepared statements are PostgreSQL's")
    settings.SENDS_PER_MINUTE = 100
    _a_month_of_answers(alice)
    conversation_id = None
    for n in range(26):  # each kind: prepared after 5 runs, then 5 custom plans, then more
        # Every other send starts a conversation: both kinds of turn start are counted.
        turn = start_turn(user=alice, organization_id=None,
                          conversation_id=conversation_id if n % 2 else None,
                          content=f"Question {n}", reasoning_effort="low")
        conversation_id = turn.assistant_message.conversation_id
        Message.objects.filter(pk=turn.assistant_message.pk).update(status=Message.Status.DONE)

    follow_up_lookup = _plans_of('FOR NO KEY UPDATE OF "conversations_conversation"')
    new_conversation_lookup = _plans_of('FROM "accounts_membership"')
    saves = _plans_of("WITH ids AS")
    assert len(follow_up_lookup) == 1 and len(saves) == 2, (follow_up_lookup, saves)
    for generic, custom in [*follow_up_lookup, *new_conversation_lookup, *saves]:
        assert generic >= 1 and custom <= 5, (follow_up_lookup, new_conversation_lookup, saves)
