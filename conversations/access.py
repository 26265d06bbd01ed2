"""The only permission-checked fetches. A numeric id is never authorisation."""

from __future__ import annotations

from typing import TYPE_CHECKING

from django.db.models import Case, Value, When

from accounts.models import Membership
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


def get_membership(user: User, organization_id: int | None) -> Membership:
    """The user's membership in the given org, or their first one when none is chosen
    (one query either way)."""
    membership = memberships_in_order(
        Membership.objects.select_related("organization"),
        user_id=user.pk, organization_id=organization_id,
    ).first()
    if membership is None:
        raise NotFound("organization")
    return membership


def memberships_in_order(rows: QuerySet[Membership], *, user_id: int,
                         organization_id: int | None) -> QuerySet[Membership]:
    """The user's memberships among ``rows`` in the order ``get_membership`` picks from:
    the chosen org first, else the oldest membership."""
    memberships = rows.filter(user_id=user_id)
    if organization_id is None:
        return memberships.order_by("joined_at", "id")
    return memberships.annotate(
        chosen=Case(When(organization_id=organization_id, then=Value(0)), default=Value(1))
    ).order_by("chosen", "joined_at", "id")


def get_membership_in(user: User, organization_id: int) -> Membership:
    """The user's membership in exactly this org (no fallback to another one)."""
    try:
        return Membership.objects.select_related("organization").get(
            user=user, organization_id=organization_id
        )
    except Membership.DoesNotExist as exc:
        raise NotFound("organization") from exc
