"""The only permission-checked fetches. A numeric id is never authorisation."""

from __future__ import annotations

from typing import TYPE_CHECKING

# The membership fetches are accounts' (they read no conversation); re-exported for the
# callers that fetch a conversation and its org together.
from accounts.members import get_membership as get_membership
from accounts.members import get_membership_in as get_membership_in
from accounts.members import memberships_in_order as memberships_in_order
from chatsite.errors import NotFound
from conversations.models import Conversation, Message

if TYPE_CHECKING:
    from django.db.models import QuerySet

    from accounts.models import User


def get_conversation_for_user(user: User, conversation_id: int) -> Conversation:
    """A conversation the user owns, in an org they still belong to, not deleted."""
    try:
        return own_conversation(
            Conversation.objects.select_related("profile", "organization"),
            user_id=user.pk, conversation_id=conversation_id,
        ).get()
    except (Conversation.DoesNotExist, ValueError, TypeError) as exc:
        raise NotFound("conversation") from exc


def own_conversation(rows: QuerySet[Conversation], *, user_id: int,
                     conversation_id: int) -> QuerySet[Conversation]:
    """The rule of ``get_conversation_for_user`` applied to ``rows``, for a query that is
    built elsewhere (``replies`` compiles its turn lookup once per process)."""
    return rows.filter(
        pk=conversation_id,
        user_id=user_id,
        organization__memberships__user_id=user_id,
        deleted_at__isnull=True,
    )


def conversations_for_user(user: User) -> QuerySet[Conversation]:
    """Every conversation the user owns in the orgs they still belong to (the same rule
    as ``get_conversation_for_user``), for bulk reads such as "Export my data"."""
    return Conversation.objects.filter(
        user=user, organization__memberships__user=user, deleted_at__isnull=True
    )


def get_message_for_user(user: User, message_id: int) -> Message:
    try:
        return Message.objects.select_related("conversation").get(
            pk=message_id,
            conversation__user=user,
            conversation__organization__memberships__user=user,
            conversation__deleted_at__isnull=True,
        )
    except (Message.DoesNotExist, ValueError, TypeError) as exc:
        raise NotFound("message") from exc
