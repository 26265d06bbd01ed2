# Reserved in the migration chain for one piece of work; its operations are added by hand
# (copy them from `manage.py makemigrations --dry-run -v 3`) so parallel work stays linear.
from __future__ import annotations

from typing import Any

from django.db import migrations, models

from conversations import search_index


def install_search_index(apps: Any, schema_editor: Any) -> None:
    # PostgreSQL: GIN expression indexes; SQLite: an FTS5 table and its triggers.
    search_index.install_search_index(schema_editor.connection)


def drop_search_index(apps: Any, schema_editor: Any) -> None:
    search_index.drop_search_index(schema_editor.connection)


class Migration(migrations.Migration):
    dependencies = [("conversations", "0003_alter_modelprofile_api_key_env")]

    operations: list = [
        migrations.AddField(
            model_name="conversation",
            name="archived_at",
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name="conversation",
            name="deleted_at",
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name="conversation",
            name="pinned_at",
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.RunPython(install_search_index, drop_search_index),
    ]
