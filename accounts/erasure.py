"""Deleting people and organizations without losing the money.

A person's conversations hold personal data (their questions, the answers, titles,
instructions, share links); the org's usage and budgets hold numbers the org needs
after the person is gone. So deleting a person first ends their live answers (each
settled, see ``lifecycle.end_for_deletion``), empties every conversation of theirs, and
only then deletes the account: the emptied conversations stay, without an owner
(``Conversation.user`` is SET_NULL), because their answers' token counts and costs are
the org's usage report; their member budget rows go (the org's rows keep the totals);
settled reservations stay with the org's rows (``Reservation.member_period`` SET_NULL).
Deleting an org deletes everything of it, and nothing of any other org.

``erase_person`` also runs on a plain ``user.delete()`` (the Django admin, a shell)
through a ``pre_delete`` receiver, so every path erases the same way.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from django.db import transaction
from django.utils import timezone

from answers import lifecycle
from conversations.models import Conversation, Message

if TYPE_CHECKING:
    from accounts.models import Organization, User


def erase_person(*, user: User) -> None:
    """End the person's live answers and empty their conversations (rows stay)."""
    from sharing.models import ShareLink

    for message_id in Message.objects.filter(
        conversation__user=user, status__in=Message.LIVE_STATUSES
    ).values_list("pk", flat=True):
        lifecycle.end_for_deletion(message_id)
    now = timezone.now()
    conversations = Conversation.objects.filter(user=user)
    with transaction.atomic():
        Message.objects.filter(conversation__in=conversations).update(
            content="", refusal="", reasoning_summary="", tool_calls=[], error_detail="",
            client_id="",
        )
        ShareLink.objects.filter(conversation__in=conversations).delete()
        conversations.update(title="", custom_instructions="", import_source="", import_id="",
                             pinned_at=None)
        conversations.filter(deleted_at__isnull=True).update(deleted_at=now)


def delete_user(*, user: User) -> None:
    """Erase the person's data, then delete the account (one transaction)."""
    with transaction.atomic():
        user.delete()  # the pre_delete receiver runs erase_person first


def delete_organization(*, organization: Organization) -> None:
    """End the org's live answers (their tabs get a final frame), then delete the org
    with its conversations, memberships, budgets and billing rows."""
    for message_id in Message.objects.filter(
        conversation__organization=organization, status__in=Message.LIVE_STATUSES
    ).values_list("pk", flat=True):
        lifecycle.end_for_deletion(message_id)
    with transaction.atomic():
        organization.delete()
