"""The tables every turn writes carry no index that another of their indexes already
serves: each index is one more entry written per insert and per non-HOT update
(docs/decisions.md#0053)."""

from __future__ import annotations

import pytest
from django.db import connection

pytestmark = [
    pytest.mark.django_db,
    pytest.mark.skipif("connection.vendor != 'postgresql'"),
]

TURN_TABLES = (
    "conversations_message",
    "conversations_conversation",
    "billing_reservation",
    "billing_usageperiod",
    "billing_grouphold",
    "billing_groupusageperiod",
)

# Pairs (an index, an index that leads with the same columns) on one table: the first is
# redundant unless it enforces uniqueness or covers rows the other leaves out.
REDUNDANT = """
SELECT table_.relname, short.relname, long.relname
FROM pg_index a
JOIN pg_index b ON b.indrelid = a.indrelid AND b.indexrelid <> a.indexrelid
JOIN pg_class table_ ON table_.oid = a.indrelid
JOIN pg_class short ON short.oid = a.indexrelid
JOIN pg_class long ON long.oid = b.indexrelid
JOIN pg_am am_a ON am_a.oid = short.relam
JOIN pg_am am_b ON am_b.oid = long.relam
WHERE table_.relname = ANY(%s)
  AND am_a.amname = 'btree' AND am_b.amname = 'btree'
  AND NOT a.indisunique
  AND a.indpred IS NULL AND b.indpred IS NULL
  AND a.indexprs IS NULL AND b.indexprs IS NULL
  AND a.indnatts <= b.indnatts
  AND (b.indkey::int2[])[0:a.indnatts - 1] = (a.indkey::int2[])[0:a.indnatts - 1]
ORDER BY 1, 2
"""


def _redundant() -> list[tuple[str, str, str]]:
    with connection.cursor() as cursor:
        cursor.execute(REDUNDANT, [list(TURN_TABLES)])
        return cursor.fetchall()


def test_no_index_of_a_turns_tables_is_served_by_another() -> None:
    assert _redundant() == []


def test_the_check_finds_a_redundant_index() -> None:
    """The control: an index on a conversation's person alone is what the list's index
    already serves, and the check names it."""
    with connection.cursor() as cursor:
        cursor.execute("CREATE INDEX redundant_person ON conversations_conversation (user_id)")
    assert _redundant() == [
        ("conversations_conversation", "redundant_person", "conversatio_user_id_5934fa_idx")]


def test_lookups_by_conversation_and_by_person_still_use_an_index() -> None:
    """The indexes that serve the dropped ones' lookups are there to use: with sequential
    scans off, the plans name them."""
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")
        plans = {}
        for name, sql in (
            ("messages", "SELECT id FROM conversations_message WHERE conversation_id = 1"),
            ("conversations", "SELECT id FROM conversations_conversation WHERE user_id = 1"),
        ):
            cursor.execute(f"EXPLAIN {sql}")
            plans[name] = " ".join(row[0] for row in cursor.fetchall())
    assert "conversatio_convers_4b968d_idx" in plans["messages"]
    assert "conversatio_user_id_5934fa_idx" in plans["conversations"]
