# Reserved in the migration chain for one piece of work; its operations are added by hand
# (copy them from `manage.py makemigrations --dry-run -v 3`) so parallel work stays linear.
from __future__ import annotations

from typing import Any

import django.db.models.deletion
from django.db import migrations, models

BATCH = 2000


def link_existing_messages(apps: Any, schema_editor: Any) -> None:
    """Before the tree, a conversation was one line: chain its messages in id order."""
    Message = apps.get_model("conversations", "Message")
    Conversation = apps.get_model("conversations", "Conversation")
    pending: list[Any] = []
    leaves: list[Any] = []
    previous_conversation: int | None = None
    previous_id: int | None = None
    rows = Message.objects.order_by("conversation_id", "id").values_list("id", "conversation_id")
    for message_id, conversation_id in rows.iterator(chunk_size=BATCH):
        if conversation_id != previous_conversation:
            if previous_conversation is not None:
                leaves.append(Conversation(pk=previous_conversation, current_leaf_id=previous_id))
            previous_id = None
        pending.append(Message(pk=message_id, parent_id=previous_id))
        previous_conversation, previous_id = conversation_id, message_id
        if len(pending) >= BATCH:
            Message.objects.bulk_update(pending, ["parent"])
            pending = []
        if len(leaves) >= BATCH:
            Conversation.objects.bulk_update(leaves, ["current_leaf"])
            leaves = []
    if previous_conversation is not None:
        leaves.append(Conversation(pk=previous_conversation, current_leaf_id=previous_id))
    Message.objects.bulk_update(pending, ["parent"])
    Conversation.objects.bulk_update(leaves, ["current_leaf"])


class Migration(migrations.Migration):
    dependencies = [("conversations", "0004_conversation_list")]

    operations: list = [
        migrations.AddField(
            model_name="conversation",
            name="current_leaf",
            field=models.ForeignKey(
                blank=True,
                null=True,
                on_delete=django.db.models.deletion.SET_NULL,
                related_name="+",
                to="conversations.message",
            ),
        ),
        migrations.AddField(
            model_name="message",
            name="parent",
            field=models.ForeignKey(
                blank=True,
                null=True,
                on_delete=django.db.models.deletion.CASCADE,
                related_name="children",
                to="conversations.message",
            ),
        ),
        migrations.RunPython(link_existing_messages, migrations.RunPython.noop),
    ]
