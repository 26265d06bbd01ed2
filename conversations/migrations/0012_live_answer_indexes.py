"""Indexes for what every turn counts, and a search index without live answers.

Each turn counts the answers waiting for a worker and the sender's live answers. Both
read the lease index, which holds an entry for every version of every live row written
since the last vacuum (each claim and lease renewal writes one): 12,613 entries for no
live answer in the benchmark's database. The new partial indexes hold one entry per
waiting or live answer. The messages' search index now leaves out rows without a vector
(live answers; conversations.search_index.MESSAGE_INDEX).

Not atomic: on PostgreSQL every index is built CONCURRENTLY, and the search index is
built beside the old one before that is dropped, so messages stay writable and
searchable while a large table is indexed. The SQL is frozen here.
"""

from __future__ import annotations

from typing import Any

from django.db import migrations, models

LIVE_INDEXES = (
    models.Index(condition=models.Q(("role", "assistant"), ("status", "pending")),
                 fields=["id"], name="waiting_answer"),
    models.Index(condition=models.Q(("role", "assistant"), ("status__in", ["pending", "streaming"])),
                 fields=["conversation"], name="live_answer"),
)
SEARCH_INDEX_TEXT = {
    "final": "USING gin (search_vector) WHERE search_vector IS NOT NULL",
    "every row": "USING gin (search_vector)",
}


def _change_live_indexes(apps: Any, schema_editor: Any, change: str) -> None:
    model = apps.get_model("conversations", "Message")
    concurrently = {"concurrently": True} if schema_editor.connection.vendor == "postgresql" else {}
    for index in LIVE_INDEXES:
        getattr(schema_editor, change)(model, index, **concurrently)


def add_live_indexes(apps: Any, schema_editor: Any) -> None:
    _change_live_indexes(apps, schema_editor, "add_index")


def remove_live_indexes(apps: Any, schema_editor: Any) -> None:
    _change_live_indexes(apps, schema_editor, "remove_index")


def _rebuild_search_index(schema_editor: Any, text: str) -> None:
    if schema_editor.connection.vendor != "postgresql":
        return  # SQLite searches an FTS5 table (conversations.search)
    with schema_editor.connection.cursor() as cursor:
        cursor.execute("DROP INDEX CONCURRENTLY IF EXISTS message_content_search_new")
        cursor.execute(f"CREATE INDEX CONCURRENTLY message_content_search_new ON conversations_message {text}")
        cursor.execute("DROP INDEX CONCURRENTLY IF EXISTS message_content_search")
        cursor.execute("ALTER INDEX message_content_search_new RENAME TO message_content_search")


def index_final_text_only(apps: Any, schema_editor: Any) -> None:
    _rebuild_search_index(schema_editor, SEARCH_INDEX_TEXT["final"])


def index_every_row(apps: Any, schema_editor: Any) -> None:
    _rebuild_search_index(schema_editor, SEARCH_INDEX_TEXT["every row"])


class Migration(migrations.Migration):
    atomic = False
    dependencies = [("conversations", "0011_search_vector_of_final_text")]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[migrations.AddIndex(model_name="message", index=index)
                              for index in LIVE_INDEXES],
            database_operations=[migrations.RunPython(add_live_indexes, remove_live_indexes)],
        ),
        migrations.RunPython(index_final_text_only, index_every_row),
    ]
