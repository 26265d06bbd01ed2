"""Three foreign keys lose their database constraint, whose check ran on every turn and
protected nothing another constraint or lock does not: a message's parent and a
conversation's current leaf (always messages of the same conversation, written under its
lock; the messages' constraint to their conversation stays) and an answer's model profile
(PROTECT in Django; its check locked the one row every answer shares). Django still
cascades, nulls and protects them on delete. docs/decisions.md#0045."""

from __future__ import annotations

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("conversations", "0018_search_off_the_hot_path"),
        ("llm", "0001_initial"),
    ]

    operations = [
        migrations.AlterField(
            model_name="conversation",
            name="current_leaf",
            field=models.ForeignKey(blank=True, db_constraint=False, null=True,
                                    on_delete=django.db.models.deletion.SET_NULL,
                                    related_name="+", to="conversations.message"),
        ),
        migrations.AlterField(
            model_name="message",
            name="parent",
            field=models.ForeignKey(blank=True, db_constraint=False, null=True,
                                    on_delete=django.db.models.deletion.CASCADE,
                                    related_name="children", to="conversations.message"),
        ),
        migrations.AlterField(
            model_name="message",
            name="profile",
            field=models.ForeignKey(blank=True, db_constraint=False, null=True,
                                    on_delete=django.db.models.deletion.PROTECT,
                                    related_name="+", to="llm.modelprofile"),
        ),
    ]
