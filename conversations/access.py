"""The only permission-checked fetches. A numeric id is never authorisation."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from django.db.models import Case, Value, When

from accounts.models import Membership
from conversations.exceptions import NotFound
from conversations.models import Conversation, Message

if TYPE_CHECKING:
    from django.db.models import QuerySet

    from accounts.models import User


def get_conversation_for_user(
    user: User, conversation_id: int,
    within: Callable[[QuerySet[Conversation]], QuerySet[Conversation]] = lambda rows: rows,
) -> Conversation:
    """A conversation the user owns, in an org they still belong to, not deleted.
    ``within`` refines the query (locks, more related rows, annotations)."""
    try:
        return within(Conversation.objects.select_related("profile", "organization")).get(
            pk=conversation_id,
            user=user,
            organization__memberships__user=user,
            deleted_at__isnull=True,
        )
    except (Conversation.DoesNotExist, ValueError, TypeError) as exc:
        raise NotFound("conversation") from exc


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


def get_membership(
    user: User, organization_id: int | None,
    within: Callable[[QuerySet[Membership]], QuerySet[Membership]] = lambda rows: rows,
) -> Membership:
    """The user's membership in the given org, or their first one when none is chosen
    (one query either way). ``within`` refines the query (locks, annotations)."""
    memberships = within(Membership.objects.select_related("organization").filter(user=user))
    if organization_id is not None:
        # The chosen org first, else the oldest membership.
        memberships = memberships.annotate(
            chosen=Case(When(organization_id=organization_id, then=Value(0)), default=Value(1))
        ).order_by("chosen", "joined_at", "id")
    else:
        memberships = memberships.order_by("joined_at", "id")
    membership = memberships.first()
    if membership is None:
        raise NotFound("organization")
    return membership


def get_membership_in(user: User, organization_id: int) -> Membership:
    """The user's membership in exactly this org (no fallback to another one)."""
    try:
        return Membership.objects.select_related("organization").get(
            user=user, organization_id=organization_id
        )
    except Membership.DoesNotExist as exc:
        raise NotFound("organization") from exc
