"""A person's notifications (budget alerts, budget requests and answers)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from django.db.models import QuerySet
from django.utils import timezone

from billing.models import Notification
from chatsite.errors import NotFound

if TYPE_CHECKING:
    from accounts.models import User

PAGE_SIZE = 100


def notifications_for(user: User) -> QuerySet[Notification]:
    return Notification.objects.filter(user=user).select_related("organization")


def unread_count(user: User) -> int:
    return Notification.objects.filter(user=user, read_at=None).count()


def mark_read(*, user: User, notification_id: int | None = None) -> int:
    """Mark one of the user's notifications (or all of them) read; returns how many changed.

    Someone else's notification id answers NotFound, exactly like a missing one.
    """
    mine = Notification.objects.filter(user=user)
    if notification_id is not None:
        mine = mine.filter(pk=notification_id)
        if not mine.exists():
            raise NotFound("notification")
    return mine.filter(read_at=None).update(read_at=timezone.now())
