"""The reaper: answers nobody is working on, and reservations a crash left open.

Run by beat (``answers.tasks.reap_stale_replies``) and by a draining worker. Every end it
reaches goes through ``answers.lifecycle``'s transitions, so a race with a live worker,
Stop or a second reaper is decided by the same conditional UPDATE.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from answers.lifecycle import (
    GENERATE_REPLY,
    MAX_CLAIMS,
    ZERO_COST,
    expire_pending,
    forget_response,
    interrupt,
)
from billing.models import Reservation
from billing.quotas import LEDGER_FIELDS, settle, settle_title
from chatsite.celery import app
from conversations.models import Message
from llm.types import Usage

logger = logging.getLogger(__name__)

Status = Message.Status


def reap_stale_replies() -> int:
    """Deal with answers nobody is working on: a pending one no worker claimed in time
    fails as ``queue_timeout`` at $0; a streaming one whose lease lapsed is handed back
    to the workers when it has a background response to resume (``hand_back``), and
    interrupted otherwise.

    Each row is handled in its own transaction: one row that cannot be ended is logged
    and skipped, never blocking the rows behind it.
    """
    now = timezone.now()
    stale = list(
        Message.objects.filter(status__in=Message.LIVE_STATUSES, lease_expires_at__lt=now)
        .order_by("lease_expires_at")
        .values_list("pk", "status", "provider_response_id", "claims", "lease_expires_at")[:500]
    )
    reaped = 0
    for pk, status, response_id, claims, lapsed_at in stale:
        try:
            if status == Status.PENDING:
                reaped += expire_pending(pk, now)
            elif _resumable(response_id, claims, lapsed_at, now):
                hand_back(pk)
                reaped += 1
            elif interrupt(pk, now=now):
                reaped += 1
                if response_id:
                    _cancel_background_response(pk, response_id)
        except Exception:
            logger.exception("could not reap message %s; will retry on the next pass", pk)
    reaped += settle_leaked_reservations()
    if reaped:
        logger.warning("reaped %d stale answers or leaked reservations", reaped)
    return reaped


def _resumable(response_id: str, claims: int, lapsed_at: datetime | None, now: datetime) -> bool:
    """Whether a streaming answer whose lease lapsed should be resumed by another worker:
    it has a background response, has not used up its claims, and has not waited longer
    than a queued answer may."""
    waited = now - (lapsed_at or now)
    return bool(response_id) and claims < MAX_CLAIMS and waited < timedelta(
        seconds=settings.PENDING_TIMEOUT_SECONDS
    )


def resumable(message_ids: list[int]) -> set[int]:
    """Of these answers, the streaming ones a successor could resume: a background
    response to follow and claims left (the rest can only be interrupted)."""
    return set(
        Message.objects.filter(pk__in=message_ids, status=Status.STREAMING, claims__lt=MAX_CLAIMS)
        .exclude(provider_response_id="")
        .values_list("pk", flat=True)
    )


def hand_back(message_id: int) -> None:
    """Queue a background answer whose worker is gone for any worker, which resumes it
    (``reclaim`` lets one task have it). Writes nothing: until a worker reclaims it, its
    lease stays lapsed and later passes queue it again (the extra tasks find nothing to
    do); one that no worker reclaims within PENDING_TIMEOUT_SECONDS is interrupted, as
    a queued answer would time out."""
    app.send_task(GENERATE_REPLY, args=[message_id], ignore_result=True)
    logger.warning("handed message %s back to the workers to resume", message_id)


def _cancel_background_response(message_id: int, response_id: str) -> None:
    """An interrupted answer's background response may still be generating at the
    provider, billed, for nobody: cancel it there, then delete it, as a worker does when
    an answer ends, so the provider keeps none of it (best effort, each)."""
    profile_id = Message.objects.filter(pk=message_id).values_list("profile_id", flat=True).first()
    if profile_id is not None:
        forget_response(profile_id=profile_id, response_id=response_id)


def settle_leaked_reservations() -> int:
    """Defence in depth: a final message whose reservation is still open (which the
    same-transaction settlement should make impossible) is settled to its recorded cost."""
    leaked = Reservation.objects.filter(
        settled_at=None, message__status__in=Message.FINAL_STATUSES
    ).values_list("message_id", "message__cost_usd", "message__usage_estimated",
                  "message__status", *(f"message__{name}" for name in LEDGER_FIELDS))[:500]
    settled = 0
    for message_id, cost, estimated, status, *tokens in leaked:
        try:
            with transaction.atomic():
                settled += settle(message_id=message_id, cost=cost, estimated=estimated,
                                  outcome=status, usage=Usage(**dict(zip(LEDGER_FIELDS, tokens,
                                                                         strict=True))))
        except Exception:
            logger.exception("could not settle the reservation of message %s", message_id)
    return settled + _release_abandoned_title_holds()


def _release_abandoned_title_holds() -> int:
    """A title request whose worker died between reserving and settling would hold its
    worst case forever. Past the longest the call may take (the provider read timeout,
    plus a minute) it is released at $0: no usage report ever arrived to bill."""
    cutoff = timezone.now() - timedelta(seconds=settings.LLM_READ_TIMEOUT + 60)
    released = 0
    for pk in Reservation.objects.filter(
        kind=Reservation.Kind.TITLE, settled_at=None, created_at__lt=cutoff
    ).values_list("pk", flat=True)[:500]:
        try:
            with transaction.atomic():
                released += settle_title(reservation_id=pk, cost=ZERO_COST, usage={})
        except Exception:
            logger.exception("could not release the title reservation %s", pk)
    return released
