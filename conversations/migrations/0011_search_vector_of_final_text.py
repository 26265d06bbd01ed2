"""The messages' search vector is computed once an answer's text is final, not on every
write of a streaming answer (conversations.search_index.MESSAGE_VECTOR). PostgreSQL only;
rewrites the messages table once."""

from __future__ import annotations

from typing import Any

from django.db import migrations

from conversations.search_index import (
    MESSAGE_VECTOR,
    MESSAGE_VECTOR_BEFORE_0011,
    set_message_vector,
)


def final_text_only(apps: Any, schema_editor: Any) -> None:
    set_message_vector(schema_editor.connection, MESSAGE_VECTOR)


def every_write(apps: Any, schema_editor: Any) -> None:
    set_message_vector(schema_editor.connection, MESSAGE_VECTOR_BEFORE_0011)


class Migration(migrations.Migration):
    dependencies = [("conversations", "0010_background_responses")]

    operations = [migrations.RunPython(final_text_only, every_write)]
