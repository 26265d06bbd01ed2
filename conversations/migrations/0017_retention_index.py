"""An index for retention (conversations.retention): each batch takes an org's oldest
undeleted conversations. Deleted conversations keep their rows (usage is summed from
them), so an index of every conversation by age would be walked past all of them on every
batch; this one holds only the undeleted.

Not atomic: on PostgreSQL it is built CONCURRENTLY, so conversations stay writable while
a large table is indexed.
"""

from __future__ import annotations

from typing import Any

from django.db import migrations, models

RETENTION_INDEX = models.Index(
    condition=models.Q(("deleted_at__isnull", True)), fields=["organization", "updated_at"],
    name="retention_candidate",
)


def _change_index(apps: Any, schema_editor: Any, change: str) -> None:
    model = apps.get_model("conversations", "Conversation")
    concurrently = {"concurrently": True} if schema_editor.connection.vendor == "postgresql" else {}
    getattr(schema_editor, change)(model, RETENTION_INDEX, **concurrently)


def add_index(apps: Any, schema_editor: Any) -> None:
    _change_index(apps, schema_editor, "add_index")


def remove_index(apps: Any, schema_editor: Any) -> None:
    _change_index(apps, schema_editor, "remove_index")


class Migration(migrations.Migration):
    atomic = False
    dependencies = [("conversations", "0016_model_profile_in_llm")]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[migrations.AddIndex(model_name="conversation", index=RETENTION_INDEX)],
            database_operations=[migrations.RunPython(add_index, remove_index)],
        ),
    ]
