"""Embedded SQLite search reads only the searcher's own messages: the FTS5 table gets an
owner column (person and org) that every search matches first (conversations.search).
PostgreSQL is untouched. The table keeps its own copy of the text from now on; its
triggers are installed and the table filled after migrate (ensure_sqlite_triggers). The
layout it replaces is frozen here for the way back.
"""

from typing import Any

from django.db import migrations

from conversations.search_index import SQLITE_DROP, install_search_index

BEFORE = (
    "CREATE VIRTUAL TABLE IF NOT EXISTS conversations_message_fts USING fts5("
    "content, content='conversations_message', content_rowid='id', "
    "tokenize='porter unicode61')",
    "CREATE TRIGGER IF NOT EXISTS conversations_message_fts_ai AFTER INSERT ON "
    "conversations_message BEGIN INSERT INTO conversations_message_fts(rowid, content) "
    "VALUES (new.id, new.content); END",
    "CREATE TRIGGER IF NOT EXISTS conversations_message_fts_ad AFTER DELETE ON "
    "conversations_message BEGIN INSERT INTO conversations_message_fts("
    "conversations_message_fts, rowid, content) VALUES ('delete', old.id, old.content); END",
    "CREATE TRIGGER IF NOT EXISTS conversations_message_fts_au AFTER UPDATE OF content ON "
    "conversations_message BEGIN INSERT INTO conversations_message_fts("
    "conversations_message_fts, rowid, content) VALUES ('delete', old.id, old.content); "
    "INSERT INTO conversations_message_fts(rowid, content) VALUES (new.id, new.content); END",
    "INSERT INTO conversations_message_fts(conversations_message_fts) VALUES ('rebuild')",
)


def _drop(cursor: Any) -> None:
    for sql in SQLITE_DROP:
        cursor.execute(sql)


def by_owner(apps: Any, schema_editor: Any) -> None:
    if schema_editor.connection.vendor != "sqlite":
        return
    with schema_editor.connection.cursor() as cursor:
        _drop(cursor)
    install_search_index(schema_editor.connection)


def back_to_one_column(apps: Any, schema_editor: Any) -> None:
    if schema_editor.connection.vendor != "sqlite":
        return
    with schema_editor.connection.cursor() as cursor:
        _drop(cursor)
        for sql in BEFORE:
            cursor.execute(sql)


class Migration(migrations.Migration):

    dependencies = [
        ("conversations", "0014_data_jobs"),
    ]

    operations = [
        migrations.RunPython(by_owner, back_to_one_column),
    ]
