"""Full-text search over one person's conversations in one org.

PostgreSQL: ``websearch_to_tsquery`` against GIN indexes on stored tsvectors of message
text and conversation titles, ranked with ``ts_rank``, snippets from ``ts_headline``. Embedded
SQLite: an FTS5 table kept in sync by triggers, queried with the same websearch syntax
translated to FTS5 (quoted phrases, ``OR``, ``-word``). The indexes themselves are
``conversations.search_index``.

Snippets are HTML: everything is escaped except the ``<mark>`` around each hit. The
database marks hits with two private-use characters (stripped from the text first), so
escaping can never be confused with the highlight.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from django.db import connection, transaction

from conversations.access import get_membership
from conversations.models import Conversation
from conversations.search_index import (
    CONFIG,
    INDEX_BATCH,
    INDEX_PASS,
    LIVE_STATUSES_SQL,
    SEARCH_TABLE,
    sqlite_owner_token,
)

if TYPE_CHECKING:
    from accounts.models import User

MAX_QUERY_CHARS = 200
MAX_RESULTS = 20
START, STOP = "\ue000", "\ue001"


class BadQuery(ValueError):
    """A query we refuse, with a message a person can act on."""


@dataclass(frozen=True)
class Hit:
    conversation_id: int
    message_id: int | None
    title: str
    snippet_html: str
    rank: float

    @property
    def url(self) -> str:
        anchor = f"#m{self.message_id}" if self.message_id else ""
        return f"/c/{self.conversation_id}/{anchor}"

    def as_dict(self) -> dict[str, Any]:
        return {
            "conversation": self.conversation_id,
            "message": self.message_id,
            "title": self.title or "New conversation",
            "snippet": self.snippet_html,
            "url": self.url,
        }


def clean_query(query: str) -> str:
    if "\x00" in query:
        raise BadQuery("The search contains a NUL character. Remove it and search again.")
    query = " ".join(query.replace(START, " ").replace(STOP, " ").split())
    if len(query) > MAX_QUERY_CHARS:
        raise BadQuery(
            f"Searches are limited to {MAX_QUERY_CHARS} characters; this one has "
            f"{len(query):,}. Use fewer words."
        )
    return query


def search_conversations(
    *, user: User, organization_id: int | None, query: str, limit: int = MAX_RESULTS
) -> list[Hit]:
    """The best matches in the user's own, not deleted conversations of their current org:
    conversations whose title matches first, then messages, each ranked."""
    query = clean_query(query)
    if not to_fts5(query):
        # Nothing to look for (only punctuation, or only -words): both backends agree.
        return []
    organization = get_membership(user, organization_id).organization
    if connection.vendor == "postgresql":
        return _search_postgres(user.pk, organization.pk, query, limit)
    if connection.vendor == "sqlite":
        return _search_sqlite(user.pk, organization.pk, query, limit)
    raise BadQuery("Search is not available on this database.")


def _mark(text: str) -> str:
    escaped = html.escape(text, quote=False)
    return escaped.replace(START, "<mark>").replace(STOP, "</mark>")


def _strip(column: str) -> str:
    # Private-use marker characters in the stored text must not become highlights.
    return f"replace(replace({column}, '{START}', ''), '{STOP}', '')"


_PG_SQL = f"""
WITH q AS (SELECT websearch_to_tsquery('{CONFIG}', %(query)s) AS query),
-- Queued, not indexed yet (a few seconds' worth, more after a big import): this person's
-- are found first, through the queue's partial index, and only their vectors computed.
-- MATERIALIZED keeps the planner from testing every message's computed vector before
-- it knows which are queued (a sequential scan of all messages).
queued AS MATERIALIZED (
    SELECT m.conversation_id, m.id AS message_id, c.title, m.content
    FROM {SEARCH_TABLE} s
    JOIN conversations_message m ON m.id = s.message_id
    JOIN conversations_conversation c ON c.id = m.conversation_id
    WHERE s.vector IS NULL AND m.status NOT IN {LIVE_STATUSES_SQL}
      AND c.user_id = %(user)s AND c.organization_id = %(org)s AND c.deleted_at IS NULL
),
titles AS (
    SELECT c.id AS conversation_id, NULL::bigint AS message_id, c.title,
           ts_rank(c.title_vector, q.query) * 2 AS rank
    FROM conversations_conversation c, q
    WHERE c.user_id = %(user)s AND c.organization_id = %(org)s AND c.deleted_at IS NULL
      AND c.title_vector @@ q.query
    ORDER BY rank DESC, c.id DESC LIMIT %(limit)s
),
messages AS (
    (SELECT m.conversation_id, m.id AS message_id, c.title, ts_rank(s.vector, q.query) AS rank
     FROM {SEARCH_TABLE} s
     JOIN conversations_message m ON m.id = s.message_id
     JOIN conversations_conversation c ON c.id = m.conversation_id, q
     WHERE c.user_id = %(user)s AND c.organization_id = %(org)s AND c.deleted_at IS NULL
       AND s.vector @@ q.query)
    UNION ALL
    (SELECT queued.conversation_id, queued.message_id, queued.title,
            ts_rank(to_tsvector('{CONFIG}', queued.content), q.query)
     FROM queued, q
     WHERE to_tsvector('{CONFIG}', queued.content) @@ q.query)
    ORDER BY rank DESC, message_id DESC LIMIT %(limit)s
),
best AS (
    SELECT * FROM titles UNION ALL SELECT * FROM messages
    ORDER BY rank DESC, message_id DESC NULLS FIRST LIMIT %(limit)s
)
SELECT best.conversation_id, best.message_id, best.title, best.rank,
       CASE WHEN best.message_id IS NULL THEN
         ts_headline('{CONFIG}', {_strip('best.title')}, q.query,
                     'StartSel={START}, StopSel={STOP}, HighlightAll=true')
       ELSE
         ts_headline('{CONFIG}', {_strip('m.content')}, q.query,
                     'StartSel={START}, StopSel={STOP}, MaxWords=24, MinWords=8, MaxFragments=2')
       END
FROM best CROSS JOIN q
LEFT JOIN conversations_message m ON m.id = best.message_id
ORDER BY best.rank DESC, best.message_id DESC NULLS FIRST
"""


def index_messages(batch: int = 500) -> int:
    """Compute the search vectors of up to ``batch`` queued messages (PostgreSQL; a beat
    job every few seconds, conversations.search_index.INDEX_PASS). Returns how many."""
    if connection.vendor != "postgresql":
        return 0  # SQLite's triggers keep its FTS5 table
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(INDEX_BATCH, [batch])
        ids = [row[0] for row in cursor.fetchall()]
        if ids:
            for sql in INDEX_PASS:
                cursor.execute(sql, [ids])
    return len(ids)


def _search_postgres(user_id: int, org_id: int, query: str, limit: int) -> list[Hit]:
    params = {"query": query, "user": user_id, "org": org_id, "limit": limit}
    with connection.cursor() as cursor, connection.wrap_database_errors:
        # Planned afresh each time, never prepared (DB_PREPARED_STATEMENTS): the generic
        # plan PostgreSQL switches a prepared statement to after five runs cannot see the
        # words searched for, and took 160 ms where a fresh plan takes 5 (100,000
        # messages). Django's cursor cannot pass psycopg's ``prepare=False``; its own can
        # (docs/decisions.md#0046).
        cursor.cursor.execute(_PG_SQL, params, prepare=False)
        rows = cursor.cursor.fetchall()
    return [
        Hit(conversation_id=c, message_id=m, title=t, snippet_html=_mark(s or ""), rank=float(r))
        for c, m, t, r, s in rows
    ]


_TOKEN = re.compile(r'(-?)"([^"]*)"?|(\S+)')


def to_fts5(query: str) -> str:
    """websearch syntax → FTS5: ``"a phrase"``, ``word``, ``OR`` between terms, ``-word``
    excludes. Every term is quoted, so FTS5 operators inside words are only text."""
    positives: list[str] = []
    negatives: list[str] = []
    pending_or = False
    for match in _TOKEN.finditer(query):
        negate, phrase, word = match.group(1), match.group(2), match.group(3)
        if word is not None:
            if word == "OR":
                pending_or = bool(positives)
                continue
            negate = "-" if word.startswith("-") and len(word) > 1 else ""
            phrase = word[1:] if negate else word
        words = re.findall(r"\w+", phrase or "")
        if not words:
            continue
        term = '"' + " ".join(words) + '"'
        if negate:
            negatives.append(term)
        elif pending_or:
            positives[-1] = f"{positives[-1]} OR {term}"
            pending_or = False
        else:
            positives.append(term)
    if not positives:
        return ""
    expression = " AND ".join(f"({p})" for p in positives)
    if negatives:
        expression = f"{expression} NOT ({' OR '.join(negatives)})"
    return expression


# The owner's token is matched with the words (``sqlite_match``), so FTS5 hands over only
# the owner's rows; the join still checks the owner and skips deleted conversations. The
# owner column weighs nothing in the rank, which is then what it was with one column.
SQLITE_SQL = (
    "SELECT m.conversation_id, m.id, c.title, bm25(conversations_message_fts, 1.0, 0.0), "
    f"snippet(conversations_message_fts, 0, '{START}', '{STOP}', '…', 16) "
    "FROM conversations_message_fts "
    "JOIN conversations_message m ON m.id = conversations_message_fts.rowid "
    "JOIN conversations_conversation c ON c.id = m.conversation_id "
    "WHERE conversations_message_fts MATCH %s AND c.user_id = %s "
    "AND c.organization_id = %s AND c.deleted_at IS NULL "
    "ORDER BY bm25(conversations_message_fts, 1.0, 0.0), m.id DESC LIMIT %s"
)


def sqlite_match(user_id: int, org_id: int, expression: str) -> str:
    """The owner's rows, then the words of ``expression`` (from ``to_fts5``) in the text
    only: a word never matches the owner column."""
    return f'owner : "{sqlite_owner_token(user_id, org_id)}" AND content : ({expression})'


def _search_sqlite(user_id: int, org_id: int, query: str, limit: int) -> list[Hit]:
    match = to_fts5(query)
    if not match:
        return []
    hits: list[Hit] = []
    with connection.cursor() as cursor:
        cursor.execute(SQLITE_SQL, [sqlite_match(user_id, org_id, match), user_id, org_id, limit])
        for conversation_id, message_id, title, rank, snippet in cursor.fetchall():
            hits.append(Hit(conversation_id=conversation_id, message_id=message_id, title=title,
                            snippet_html=_mark(snippet or ""), rank=-float(rank)))
    # Titles: a person has at most a few thousand conversations; LIKE on each word is
    # enough for the embedded single-user database.
    words = [w for w in re.findall(r"\w+", match) if w not in ("AND", "OR", "NOT")]
    titles = Conversation.objects.not_deleted().filter(user_id=user_id, organization_id=org_id)
    for word in words[:1]:
        titles = titles.filter(title__icontains=word)
    title_hits = [
        Hit(conversation_id=c.pk, message_id=None, title=c.title,
            snippet_html=html.escape(c.title, quote=False), rank=float("inf"))
        for c in titles.only("id", "title").order_by("-updated_at")[:limit]
    ] if words else []
    return (title_hits + hits)[:limit]
