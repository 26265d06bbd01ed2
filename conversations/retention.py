"""Retention: an org's conversations untouched for its ``retention_days`` are deleted by a
daily job (``conversations.tasks.apply_retention``), exactly as their owners' delete does
(``conversations.listing``): live answers end and settle first, texts, titles and
instructions go, and the rows with their token counts and costs stay, so usage reports
and budgets keep adding up. Share links are revoked with them, or kept readable, as the
org chose.

Deleting never locks out sends. It runs in batches of ``RETENTION_BATCH_SIZE``
conversations, each in a short transaction of its own that locks only the conversation
rows it takes (``SELECT ... FOR UPDATE SKIP LOCKED``) and writes only theirs, their
messages and their share links: no table lock, and nothing a send in any other
conversation waits on. A row a send holds is passed over (and caught the next day).

A live answer in a conversation untouched for ``retention_days`` is settled first, not
skipped. Every send and every finished answer moves ``updated_at`` under the
conversation's row lock, so such an answer has been live for longer than the retention
period: stuck past the reaper. Ending it (cancelled, charged the estimate of what it
showed, its stored provider response forgotten by the forget task) is what the person's
own delete does; skipping it would keep the conversation, and the budget its reservation
holds, forever.

Each run writes one ``retention.run`` audit entry per org with retention on, with its
counts.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from accounts import audit
from accounts.audit_models import AuditAction, AuditOutcome
from accounts.models import Organization
from conversations.listing import Erased, end_live_answers, erase_conversations
from conversations.models import Conversation

logger = logging.getLogger(__name__)


@dataclass
class OrgRun:
    """What one run did in one org."""

    organization_id: int
    older_than_days: int
    before: dt.datetime
    conversations_deleted: int = 0
    share_links_deleted: int = 0
    share_links_kept: int = 0
    live_answers_ended: int = 0
    batches: int = 0
    failed: bool = False

    def add(self, erased: Erased, live_answers: int) -> None:
        self.conversations_deleted += erased.conversations
        self.share_links_deleted += erased.share_links_deleted
        self.share_links_kept += erased.share_links_kept
        self.live_answers_ended += live_answers
        self.batches += 1


def apply_retention(*, now: dt.datetime | None = None,
                    batch_size: int | None = None) -> list[OrgRun]:
    """Delete every org's conversations untouched for its retention period, in batches,
    and audit each org's run. An org whose run fails is logged and audited as failed
    (with what it deleted before) and the others still run."""
    now = now or timezone.now()
    batch_size = batch_size or settings.RETENTION_BATCH_SIZE
    runs = []
    for organization in (Organization.objects.filter(retention_days__isnull=False)
                         .only("pk", "retention_days", "retention_keep_shares").order_by("pk")):
        runs.append(_apply_to(organization, now=now, batch_size=batch_size))
    return runs


def _apply_to(organization: Organization, *, now: dt.datetime, batch_size: int) -> OrgRun:
    days = organization.retention_days or 0
    run = OrgRun(organization_id=organization.pk, older_than_days=days,
                 before=now - dt.timedelta(days=days))
    try:
        while batch := _erase_batch(organization, run.before, now=now, limit=batch_size):
            run.add(*batch)
            logger.info("retention: org %s batch %d erased %d conversations",
                        organization.pk, run.batches, batch[0].conversations,
                        extra={"organization_id": organization.pk, "batch": run.batches})
    except Exception:
        run.failed = True
        logger.exception("retention: org %s stopped after %d batches; the next run goes on",
                         organization.pk, run.batches)
    audit.record(
        AuditAction.RETENTION_RUN, organization=organization.pk, request=None,
        outcome=AuditOutcome.FAILURE if run.failed else AuditOutcome.SUCCESS,
        what="conversations", older_than_days=days, before=run.before,
        conversations_deleted=run.conversations_deleted,
        share_links_deleted=run.share_links_deleted, share_links_kept=run.share_links_kept,
        live_answers_ended=run.live_answers_ended, batches=run.batches,
    )
    return run


def _erase_batch(organization: Organization, before: dt.datetime, *, now: dt.datetime,
                 limit: int) -> tuple[Erased, int] | None:
    """Erase up to ``limit`` of the org's oldest conversations untouched since ``before``,
    in one transaction; None when there are none left to take."""
    with transaction.atomic():
        # Race: a send in one of these conversations (start_turn) locks its row and moves
        # updated_at. SKIP LOCKED passes over a row a send holds instead of waiting for it,
        # and a row a send already committed no longer matches (PostgreSQL checks the
        # filter again on the row it locks); a send arriving after this lock finds the
        # conversation deleted.
        ids = list(
            Conversation.objects.select_for_update(skip_locked=True)
            .filter(organization_id=organization.pk, deleted_at__isnull=True,
                    updated_at__lt=before)
            .order_by("updated_at", "id")
            .values_list("pk", flat=True)[:limit]
        )
        if not ids:
            return None
        live_answers = end_live_answers(ids)
        erased = erase_conversations(ids, now=now,
                                     keep_share_links=organization.retention_keep_shares)
    return erased, live_answers
