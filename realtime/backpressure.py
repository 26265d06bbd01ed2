"""Back-pressure: where a waiting answer stands in the queue, and refusing new turns
when the whole instance already has more answers waiting than its workers will reach
soon (``MAX_QUEUED_TURNS``)."""

from __future__ import annotations

from django.conf import settings
from django.db.models import Count, Q

from chatsite.errors import Refused
from conversations.models import Message

# What a refused sender is told to wait before trying again: long enough for a few
# hundred answers of 10-60 s each to drain through the workers.
BUSY_RETRY_AFTER_SECONDS = 30


class Busy(Refused):
    """Too many answers wait for a worker; ``retry_after`` says when to try again."""

    def __init__(self, waiting: int) -> None:
        super().__init__(
            "busy",
            f"The service is busy: {waiting:,} answers are already waiting for the model, "
            f"the most it queues. Nothing was saved or charged; send your message again "
            f"in about {BUSY_RETRY_AFTER_SECONDS} seconds.",
        )
        self.retry_after = BUSY_RETRY_AFTER_SECONDS


def waiting_for_worker() -> Q:
    """Answers no worker has claimed yet (the claim moves them to streaming)."""
    return Q(status=Message.Status.PENDING, role=Message.Role.ASSISTANT)


def refuse_when_full(waiting: int) -> int:
    """Raise ``Busy`` when ``waiting`` (answers waiting for a worker, counted by the
    caller) reaches ``MAX_QUEUED_TURNS``; else return it (a new turn's place)."""
    if waiting >= settings.MAX_QUEUED_TURNS:
        raise Busy(waiting)
    return waiting


def queue_position(*, message_id: int) -> int | None:
    """How many unclaimed answers were created before ``message_id``; None once it is no
    longer waiting (claimed, cancelled, failed). One query."""
    counts = Message.objects.filter(waiting_for_worker(), pk__lte=message_id).aggregate(
        ahead=Count("pk", filter=Q(pk__lt=message_id)),
        itself=Count("pk", filter=Q(pk=message_id)),
    )
    return counts["ahead"] if counts["itself"] else None
