"""Three indexes that another index already serves go: a message's conversation (the
(conversation, created_at) index leads with it), a conversation's person (the list's
(user, organization, -updated_at) index leads with it) and a conversation's updated_at
alone (no query reads it without the person or the org, whose indexes carry it). Each
turn inserts two messages, updates its answer three times and moves its conversation up
the list, and each of those writes an entry into every index of the row.
docs/decisions.md#0053."""

from __future__ import annotations

import django.db.models.deletion
import django.utils.timezone
from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("conversations", "0020_content_token_counts"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.AlterField(
            model_name="conversation",
            name="updated_at",
            field=models.DateTimeField(default=django.utils.timezone.now),
        ),
        migrations.AlterField(
            model_name="conversation",
            name="user",
            field=models.ForeignKey(
                blank=True, db_index=False, null=True,
                on_delete=django.db.models.deletion.SET_NULL, related_name="conversations",
                to=settings.AUTH_USER_MODEL,
            ),
        ),
        migrations.AlterField(
            model_name="message",
            name="conversation",
            field=models.ForeignKey(
                db_index=False, on_delete=django.db.models.deletion.CASCADE,
                related_name="messages", to="conversations.conversation",
            ),
        ),
    ]
