"""A message's token count, stored once its text is final, so a turn's prompt estimate
and context cut add up counts instead of tokenizing the whole conversation again.
Nullable, with no backfill: rows from before it are counted from their text when read,
as every row was until now."""

from __future__ import annotations

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("conversations", "0019_fewer_foreign_key_checks"),
    ]

    operations = [
        migrations.AddField(
            model_name="message",
            name="content_tokens",
            field=models.PositiveIntegerField(blank=True, editable=False, null=True),
        ),
    ]
