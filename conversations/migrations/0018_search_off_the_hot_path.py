"""The messages' search vectors move off the message row into a side table, computed by
PostgreSQL a few seconds after a text becomes final instead of in the statement that
ends an answer (conversations.search_index, docs/decisions.md#0045). PostgreSQL only;
SQLite keeps its FTS5 table."""

from __future__ import annotations

from typing import Any

from django.db import migrations

from conversations.search_index import move_search_off_the_row, put_search_back_on_the_row


def forwards(apps: Any, schema_editor: Any) -> None:
    move_search_off_the_row(schema_editor.connection)


def backwards(apps: Any, schema_editor: Any) -> None:
    put_search_back_on_the_row(schema_editor.connection)


class Migration(migrations.Migration):
    dependencies = [("conversations", "0017_retention_index")]

    operations = [migrations.RunPython(forwards, backwards)]
