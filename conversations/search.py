"""Full-text search over one person's conversations in one org.

PostgreSQL: ``websearch_to_tsquery`` against GIN indexes on stored tsvectors of message
text and conversation titles, ranked with ``ts_rank``, snippets from ``ts_headline``. Embedded
SQLite: an FTS5 table kept in sync by triggers, queried with the same websearch syntax
translated to FTS5 (quoted phrases, ``OR``, ``-word``).

Snippets are HTML: everything is escaped except the ``<mark>`` around each hit. The
database marks hits with two private-use characters (stripped from the text first), so
escaping can never be confused with the highlight.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from django.db import connection

from conversations.access import get_membership

if TYPE_CHECKING:
    from django.db.backends.base.base import BaseDatabaseWrapper

    from accounts.models import User

MAX_QUERY_CHARS = 200
MAX_RESULTS = 20
START, STOP = "\ue000", "\ue001"
CONFIG = "english"

# PostgreSQL keeps each text's tsvector in a stored generated column (maintained by the
# database on every write, never by Django, which does not know the column) with a GIN
# index on it: ranking then reads the stored vector instead of re-parsing every matching
# message. ``install_search_index`` is run by migration 0004.
#
# A message's vector is computed once its text is final (migration 0011): PostgreSQL
# recomputes a stored generated column on every UPDATE of the row, and a streaming answer's
# row is written many times. A live answer is found once it has ended. See
# docs/decisions.md#0026.
MESSAGE_VECTOR = (f"CASE WHEN status IN ('pending', 'streaming') THEN NULL "
                  f"ELSE to_tsvector('{CONFIG}', content) END")
MESSAGE_VECTOR_BEFORE_0011 = f"to_tsvector('{CONFIG}', content)"
# Only rows with a vector are indexed (migration 0012): GIN keeps an entry for a NULL too
# (docs/decisions.md#0032). A search's ``search_vector @@ query`` implies the column is
# not NULL, so it uses this index.
MESSAGE_INDEX_WHERE = "search_vector IS NOT NULL"
MESSAGE_INDEX = ("CREATE INDEX IF NOT EXISTS message_content_search ON conversations_message "
                 f"USING gin (search_vector) WHERE {MESSAGE_INDEX_WHERE}")
PG_INDEXES = (
    "ALTER TABLE conversations_message ADD COLUMN IF NOT EXISTS search_vector tsvector "
    f"GENERATED ALWAYS AS ({MESSAGE_VECTOR}) STORED",
    MESSAGE_INDEX,
    "ALTER TABLE conversations_conversation ADD COLUMN IF NOT EXISTS title_vector tsvector "
    f"GENERATED ALWAYS AS (to_tsvector('{CONFIG}', title)) STORED",
    "CREATE INDEX IF NOT EXISTS conversation_title_search ON conversations_conversation "
    "USING gin (title_vector)",
)
PG_DROP = (
    "DROP INDEX IF EXISTS message_content_search",
    "DROP INDEX IF EXISTS conversation_title_search",
    "ALTER TABLE conversations_message DROP COLUMN IF EXISTS search_vector",
    "ALTER TABLE conversations_conversation DROP COLUMN IF EXISTS title_vector",
)
# Each message's row carries its owner (person and org) as a token of an indexed column,
# and every search matches that token first: FTS5 intersects the owner's short list of
# rows with the words' lists, so other people's messages are never read, however many
# there are (migration 0015; before it, every matching message of everyone was read and
# then filtered by owner). The table keeps its own copy of the text, so deleting or
# re-owning a message needs nothing but its id.
SQLITE_TABLE = (
    "CREATE VIRTUAL TABLE IF NOT EXISTS conversations_message_fts USING fts5("
    "content, owner, tokenize='porter unicode61')"
)
SQLITE_OWNER = "'u' || {conversation}.user_id || 'o' || {conversation}.organization_id"
_NEW_OWNER = (f"(SELECT {SQLITE_OWNER.format(conversation='c')} FROM conversations_conversation c "
              "WHERE c.id = new.conversation_id)")
# Dropped before migrations run and re-created (and the index refilled) after: see
# drop_sqlite_triggers and ensure_sqlite_triggers.
SQLITE_TRIGGERS = (
    "CREATE TRIGGER IF NOT EXISTS conversations_message_fts_ai AFTER INSERT ON "
    "conversations_message BEGIN INSERT INTO conversations_message_fts(rowid, content, owner) "
    f"VALUES (new.id, new.content, {_NEW_OWNER}); END",
    "CREATE TRIGGER IF NOT EXISTS conversations_message_fts_ad AFTER DELETE ON "
    "conversations_message BEGIN DELETE FROM conversations_message_fts WHERE rowid = old.id; END",
    "CREATE TRIGGER IF NOT EXISTS conversations_message_fts_au AFTER UPDATE OF content, "
    "conversation_id ON conversations_message BEGIN "
    "DELETE FROM conversations_message_fts WHERE rowid = old.id; "
    "INSERT INTO conversations_message_fts(rowid, content, owner) "
    f"VALUES (new.id, new.content, {_NEW_OWNER}); END",
    "CREATE TRIGGER IF NOT EXISTS conversations_message_fts_owner AFTER UPDATE OF user_id, "
    "organization_id ON conversations_conversation BEGIN "
    f"UPDATE conversations_message_fts SET owner = {SQLITE_OWNER.format(conversation='new')} "
    "WHERE rowid IN (SELECT id FROM conversations_message WHERE conversation_id = new.id); END",
)
SQLITE_FILL = (
    "DELETE FROM conversations_message_fts",
    "INSERT INTO conversations_message_fts(rowid, content, owner) "
    f"SELECT m.id, m.content, {SQLITE_OWNER.format(conversation='c')} "
    "FROM conversations_message m JOIN conversations_conversation c ON c.id = m.conversation_id",
)
SQLITE_DROP = (
    "DROP TRIGGER IF EXISTS conversations_message_fts_ai",
    "DROP TRIGGER IF EXISTS conversations_message_fts_ad",
    "DROP TRIGGER IF EXISTS conversations_message_fts_au",
    "DROP TRIGGER IF EXISTS conversations_message_fts_owner",
    "DROP TABLE IF EXISTS conversations_message_fts",
)


def sqlite_owner_token(user_id: int, organization_id: int) -> str:
    """The owner column's token of a person's messages in one org (``SQLITE_OWNER``)."""
    return f"u{user_id}o{organization_id}"


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


def install_search_index(db: BaseDatabaseWrapper) -> None:
    with db.cursor() as cursor:
        if db.vendor == "postgresql":
            for sql in PG_INDEXES:
                cursor.execute(sql)
        elif db.vendor == "sqlite":
            # Only the table: its triggers read two tables, and SQLite cannot rebuild a
            # table (as later migrations do) that a trigger on another one reads. They are
            # installed, and the table filled, after migrate (ensure_sqlite_triggers).
            cursor.execute(SQLITE_TABLE)


def set_message_vector(db: BaseDatabaseWrapper, expression: str) -> None:
    """Recreate the messages' stored vector (and its index) with ``expression``: a
    generated column's expression cannot be altered in place. Rewrites the table."""
    if db.vendor != "postgresql":
        return  # SQLite's full-text table is kept by triggers, not a generated column
    with db.cursor() as cursor:
        cursor.execute("DROP INDEX IF EXISTS message_content_search")
        cursor.execute("ALTER TABLE conversations_message DROP COLUMN IF EXISTS search_vector")
        cursor.execute("ALTER TABLE conversations_message ADD COLUMN search_vector tsvector "
                       f"GENERATED ALWAYS AS ({expression}) STORED")
        cursor.execute(MESSAGE_INDEX)


def drop_search_index(db: BaseDatabaseWrapper) -> None:
    if db.vendor not in ("postgresql", "sqlite"):
        return
    with db.cursor() as cursor:
        for sql in PG_DROP if db.vendor == "postgresql" else SQLITE_DROP:
            cursor.execute(sql)


def drop_sqlite_triggers(db: BaseDatabaseWrapper) -> None:
    """Before migrations run on SQLite: a trigger that reads another table would make
    SQLite refuse to rebuild that table. ``ensure_sqlite_triggers`` puts them back."""
    if db.vendor != "sqlite":
        return
    with db.cursor() as cursor:
        for sql in SQLITE_DROP[:-1]:
            cursor.execute(sql)


def ensure_sqlite_triggers(db: BaseDatabaseWrapper) -> None:
    """After migrate on SQLite: triggers that a table rebuild (or ``drop_sqlite_triggers``)
    dropped are put back, and the index refilled, since writes went unseen meanwhile."""
    if db.vendor != "sqlite":
        return
    with db.cursor() as cursor:
        cursor.execute("SELECT name FROM pragma_table_info('conversations_message_fts')")
        columns = {name for (name,) in cursor.fetchall()}
    if "owner" not in columns:
        return  # migration 0015 has not run (or was reversed): no owner column to fill
    with db.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM sqlite_master WHERE type = 'trigger' "
            "AND name LIKE 'conversations_message_fts_%%'"
        )
        (triggers,) = cursor.fetchone()
        if triggers < len(SQLITE_TRIGGERS):
            for sql in SQLITE_DROP[:-1] + SQLITE_TRIGGERS + SQLITE_FILL:
                cursor.execute(sql)


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
titles AS (
    SELECT c.id AS conversation_id, NULL::bigint AS message_id, c.title,
           ts_rank(c.title_vector, q.query) * 2 AS rank
    FROM conversations_conversation c, q
    WHERE c.user_id = %(user)s AND c.organization_id = %(org)s AND c.deleted_at IS NULL
      AND c.title_vector @@ q.query
    ORDER BY rank DESC, c.id DESC LIMIT %(limit)s
),
messages AS (
    SELECT m.conversation_id, m.id AS message_id, c.title,
           ts_rank(m.search_vector, q.query) AS rank
    FROM conversations_message m
    JOIN conversations_conversation c ON c.id = m.conversation_id, q
    WHERE c.user_id = %(user)s AND c.organization_id = %(org)s AND c.deleted_at IS NULL
      AND m.search_vector @@ q.query
    ORDER BY rank DESC, m.id DESC LIMIT %(limit)s
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


def _search_postgres(user_id: int, org_id: int, query: str, limit: int) -> list[Hit]:
    with connection.cursor() as cursor:
        cursor.execute(_PG_SQL, {"query": query, "user": user_id, "org": org_id, "limit": limit})
        rows = cursor.fetchall()
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
    from conversations.models import Conversation

    titles = Conversation.objects.not_deleted().filter(user_id=user_id, organization_id=org_id)
    for word in words[:1]:
        titles = titles.filter(title__icontains=word)
    title_hits = [
        Hit(conversation_id=c.pk, message_id=None, title=c.title,
            snippet_html=html.escape(c.title, quote=False), rank=float("inf"))
        for c in titles.only("id", "title").order_by("-updated_at")[:limit]
    ] if words else []
    return (title_hits + hits)[:limit]
