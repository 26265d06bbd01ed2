"""Indexes for what every turn counts, and a search index without live answers.

Each turn counts the answers waiting for a worker and the sender's live answers. Both
read the lease index, which holds an entry for every version of every live row written
since the last vacuum (each claim and lease renewal writes one): 12,613 entries for no
live answer in the benchmark's database. The new partial indexes hold one entry per
waiting or live answer. The messages' search index leaves out rows without a vector
(live answers, conversations.search.MESSAGE_INDEX); PostgreSQL only for that part.
"""

from __future__ import annotations

from typing import Any

from django.db import migrations, models


def index_final_text_only(apps: Any, schema_editor: Any) -> None:
    from conversations.search import MESSAGE_INDEX, set_message_index

    set_message_index(schema_editor.connection, MESSAGE_INDEX)


def index_every_row(apps: Any, schema_editor: Any) -> None:
    from conversations.search import MESSAGE_INDEX_BEFORE_0012, set_message_index

    set_message_index(schema_editor.connection, MESSAGE_INDEX_BEFORE_0012)


class Migration(migrations.Migration):
    dependencies = [("conversations", "0011_search_vector_of_final_text")]

    operations = [
        migrations.AddIndex(
            model_name="message",
            index=models.Index(condition=models.Q(("role", "assistant"), ("status", "pending")),
                               fields=["id"], name="waiting_answer"),
        ),
        migrations.AddIndex(
            model_name="message",
            index=models.Index(
                condition=models.Q(("role", "assistant"), ("status__in", ["pending", "streaming"])),
                fields=["conversation"], name="live_answer",
            ),
        ),
        migrations.RunPython(index_final_text_only, index_every_row),
    ]
