"""The full-text indexes that ``conversations.search`` reads, as DDL: PostgreSQL's stored
tsvector columns and their GIN indexes, embedded SQLite's FTS5 table and its triggers.

Used by migrations and by the app's migrate hooks, so it imports no model.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from django.db.backends.base.base import BaseDatabaseWrapper

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
# Since migration 0018 the vector is not on the message's row: PostgreSQL computes it off
# the turn's path, into a side table. A trigger on the messages queues a message there
# (a row without a vector) when its text becomes final or changes; ``INDEX_PASS`` (a beat
# job every few seconds, conversations.search.index_messages) computes the queued vectors;
# until then a search computes a queued message's vector on the fly, so search is current
# at once. Ending an answer thus writes one small row instead of computing a tsvector and
# writing its GIN entries (docs/decisions.md#0045).
SEARCH_TABLE = "conversations_message_search"
LIVE_STATUSES_SQL = "('pending', 'streaming')"
PG_SEARCH_TABLE = (
    f"CREATE TABLE IF NOT EXISTS {SEARCH_TABLE} (message_id bigint PRIMARY KEY, vector tsvector)",
    f"CREATE INDEX IF NOT EXISTS message_content_search ON {SEARCH_TABLE} "
    "USING gin (vector) WHERE vector IS NOT NULL",
    f"CREATE INDEX IF NOT EXISTS message_search_queued ON {SEARCH_TABLE} (message_id) "
    "WHERE vector IS NULL",
    "CREATE OR REPLACE FUNCTION conversations_message_search_queue() RETURNS trigger "
    f"LANGUAGE plpgsql AS $$ BEGIN INSERT INTO {SEARCH_TABLE} (message_id) VALUES (NEW.id) "
    "ON CONFLICT (message_id) DO UPDATE SET vector = NULL; RETURN NULL; END $$",
    "CREATE OR REPLACE FUNCTION conversations_message_search_forget() RETURNS trigger "
    f"LANGUAGE plpgsql AS $$ BEGIN DELETE FROM {SEARCH_TABLE} WHERE message_id IN "
    "(SELECT id FROM gone); RETURN NULL; END $$",
    "CREATE OR REPLACE FUNCTION conversations_message_search_empty() RETURNS trigger "
    f"LANGUAGE plpgsql AS $$ BEGIN TRUNCATE {SEARCH_TABLE}; RETURN NULL; END $$",
    "CREATE TRIGGER message_search_inserted AFTER INSERT ON conversations_message "
    f"FOR EACH ROW WHEN (NEW.status NOT IN {LIVE_STATUSES_SQL}) "
    "EXECUTE FUNCTION conversations_message_search_queue()",
    "CREATE TRIGGER message_search_updated AFTER UPDATE OF content, status ON "
    f"conversations_message FOR EACH ROW WHEN (NEW.status NOT IN {LIVE_STATUSES_SQL} AND "
    f"(OLD.content IS DISTINCT FROM NEW.content OR OLD.status IN {LIVE_STATUSES_SQL})) "
    "EXECUTE FUNCTION conversations_message_search_queue()",
    "CREATE TRIGGER message_search_deleted AFTER DELETE ON conversations_message "
    "REFERENCING OLD TABLE AS gone FOR EACH STATEMENT "
    "EXECUTE FUNCTION conversations_message_search_forget()",
    "CREATE TRIGGER message_search_emptied AFTER TRUNCATE ON conversations_message "
    "FOR EACH STATEMENT EXECUTE FUNCTION conversations_message_search_empty()",
)
# The vectors the generated column had computed move over as they are.
PG_SEARCH_FILL = (
    f"INSERT INTO {SEARCH_TABLE} (message_id, vector) SELECT id, search_vector "
    f"FROM conversations_message WHERE status NOT IN {LIVE_STATUSES_SQL} "
    "ON CONFLICT (message_id) DO NOTHING",
)
PG_SEARCH_DROP = (
    "DROP TRIGGER IF EXISTS message_search_inserted ON conversations_message",
    "DROP TRIGGER IF EXISTS message_search_updated ON conversations_message",
    "DROP TRIGGER IF EXISTS message_search_deleted ON conversations_message",
    "DROP TRIGGER IF EXISTS message_search_emptied ON conversations_message",
    "DROP FUNCTION IF EXISTS conversations_message_search_queue()",
    "DROP FUNCTION IF EXISTS conversations_message_search_forget()",
    "DROP FUNCTION IF EXISTS conversations_message_search_empty()",
    f"DROP TABLE IF EXISTS {SEARCH_TABLE}",
)
# One pass of the indexer, in one transaction: lock a batch of queued rows (skipping
# any another pass or a writer holds), then compute their vectors in a second statement,
# whose snapshot is taken after the locks: a text changed since was committed before it
# (and is read here) or waits for this pass to commit (and queues its message again).
# Rows whose message is gone are dropped.
INDEX_BATCH = (f"SELECT message_id FROM {SEARCH_TABLE} WHERE vector IS NULL "
               "ORDER BY message_id LIMIT %s FOR UPDATE SKIP LOCKED")
INDEX_PASS = (
    f"UPDATE {SEARCH_TABLE} AS s SET vector = to_tsvector('{CONFIG}', m.content) "
    "FROM conversations_message m WHERE s.message_id = ANY(%s) AND m.id = s.message_id",
    f"DELETE FROM {SEARCH_TABLE} AS s WHERE s.message_id = ANY(%s) AND s.vector IS NULL "
    "AND NOT EXISTS (SELECT 1 FROM conversations_message m WHERE m.id = s.message_id)",
)
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


def move_search_off_the_row(db: BaseDatabaseWrapper) -> None:
    """Migration 0018: the side table, its triggers and the vectors computed so far; then
    the generated column (and its index) go."""
    if db.vendor != "postgresql":
        return
    with db.cursor() as cursor:
        for sql in (*PG_SEARCH_TABLE[:1], *PG_SEARCH_FILL,
                    "DROP INDEX IF EXISTS message_content_search",  # the row's: the name moves
                    "ALTER TABLE conversations_message DROP COLUMN IF EXISTS search_vector",
                    *PG_SEARCH_TABLE[1:]):
            cursor.execute(sql)


def put_search_back_on_the_row(db: BaseDatabaseWrapper) -> None:
    """Migration 0018 reversed: the generated column of migration 0011 again."""
    if db.vendor != "postgresql":
        return
    with db.cursor() as cursor:
        for sql in PG_SEARCH_DROP:
            cursor.execute(sql)
    set_message_vector(db, MESSAGE_VECTOR)
