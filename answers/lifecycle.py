"""Every state change of an answer, in one place: DESIGN's state machine.

::

    pending ──claim──▶ streaming ──finish──▶ done | failed | cancelled
       │                   │ ↺ reclaim (lease lapsed, a background response to resume)
       │                   └──interrupt (lease lapsed, nothing to resume)──▶ interrupted
       ├──cancel_pending (Stop before a worker claimed it)──▶ cancelled
       └──fail_pending (never started: queue timeout, …)──▶ failed

Each transition is one conditional ``UPDATE ... WHERE status = <expected>`` whose row
count decides the winner (a redelivered task, Stop, the reaper and a late worker race
for the same row; a worker's own writes also name its claim, so one that outlived its
lease loses to the worker that took the answer over), then the settlement of the turn's
reservation in the same transaction, then the final frame, built from the saved row by
``frames.final_frame`` and published even if an after-commit hook fails. A losing
transition changes nothing and sends nothing.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.db import transaction
from django.db.models import F, QuerySet
from django.db.models.expressions import RawSQL
from django.db.models.signals import pre_delete
from django.dispatch import Signal, receiver
from django.utils import timezone

from accounts.erasure import organization_deleting, person_erasing
from answers.draft import AnswerDraft
from billing.quotas import settle
from chatsite import metrics
from chatsite.celery import app
from chatsite.compiled import CompiledSelect, CompiledUpdate
from conversations.models import Conversation, Message
from conversations.signals import live_answer_deleting
from llm import client as llm
from llm.models import ModelProfile
from llm.pricing import MICRO, Prices, estimate_usage, prices_for_answer, usage_cost
from llm.tokens import message_tokens
from llm.types import Usage
from realtime import replay
from realtime.frames import final_frame
from realtime.publishing import publish

if TYPE_CHECKING:
    from accounts.models import Organization, User

logger = logging.getLogger(__name__)

Status = Message.Status
ZERO_COST = Decimal(0).quantize(MICRO)

# Sent after an answer's final state committed (receivers: title scheduling). A signal,
# so this module does not import the task module that imports it.
# kwargs: message_id, status, conversation_id, titled (the conversation had its title when
# the answer was claimed; None: not known)
answer_finished = Signal()

QUEUE_TIMEOUT_DETAIL = (
    "No worker picked this question up in time (the service is busy or restarting), so "
    "nothing was charged. Send it again."
)
INTERRUPTED_DETAIL = (
    "The answer was interrupted (its worker stopped). What was written so far is kept; "
    "send the question again to regenerate. Its cost is an estimate."
)


# Celery task names this module sends by name (answers.tasks defines them; dispatch
# sends the first too). The wire contract between the web and worker processes of two
# releases during a rolling deploy: they keep the names they were first published under.
GENERATE_REPLY = "conversations.tasks.generate_reply"
FORGET_RESPONSE = "conversations.tasks.forget_background_response"

# A first claim and two resumes: an answer whose resuming keeps killing its worker (or
# that no worker reclaims within PENDING_TIMEOUT_SECONDS) is interrupted instead.
MAX_CLAIMS = 3


class Abandoned(Exception):
    """The message is no longer ours: the reaper declared it interrupted, or another
    worker took it over to resume it."""


def answer_prices(message: Message) -> Prices:
    """The prices snapshotted when the turn reserved its budget."""
    return prices_for_answer(snapshot=message.price_snapshot, profile=message.profile)


def _as_saved(usage: Usage) -> Usage:
    """An estimate's token counts as an ended answer's row saves them (no cached or
    cache-write tokens), for its ledger row."""
    return Usage(prompt_tokens=usage.prompt_tokens, completion_tokens=usage.completion_tokens,
                 reasoning_tokens=usage.reasoning_tokens)


def estimate_cost(message: Message, text: str) -> tuple[Usage, Decimal]:
    """Flagged usage and cost for an answer that ended without a usage chunk."""
    prompt_tokens = getattr(getattr(message, "reservation", None), "prompt_tokens_estimate", 0)
    usage = estimate_usage(effort=message.reasoning_effort,
                           completion_cap=message.max_completion_tokens,
                           prompt_tokens=prompt_tokens, visible_text=text)
    return usage, usage_cost(answer_prices(message), usage)


# --- pending → streaming -------------------------------------------------------------------


def claim(message_id: int) -> Message | None:
    """pending → streaming, once, and the answer read with what its prompt and budget
    need (one statement on PostgreSQL). A redelivered task (or one that lost to Stop or
    the queue timeout) finds nothing to claim."""
    now = timezone.now()
    lease = now + timedelta(seconds=settings.STREAM_LEASE_SECONDS)
    if transaction.get_connection().vendor != "postgresql":
        pending, changes = _claim_update(message=message_id, now=now, lease=lease)
        return _claimed(message_id) if pending.update(**changes) else None
    update, params = _CLAIM.statement(message=message_id, now=now, lease=lease)
    message = _CLAIMING.first(message=message_id,
                              with_=(f"claimed AS ({update} RETURNING id, claims)", params))
    if message is None:
        return None
    # The read saw the row as it was before the claim wrote it.
    message.status, message.started_at, message.lease_expires_at = Status.STREAMING, now, lease
    message.claims = message.claims_now  # type: ignore[attr-defined]
    return message


def _claim_update(*, message: int, now: datetime,
                  lease: datetime) -> tuple[QuerySet[Message], dict[str, Any]]:
    # Race: a redelivered task, Stop and the queue-timeout reaper all target this pending
    # row; the status filter lets exactly one of them change it.
    pending = Message.objects.filter(pk=message, status=Status.PENDING)
    return pending, {"status": Status.STREAMING, "started_at": now, "lease_expires_at": lease,
                     "claims": F("claims") + 1}


# Compiled once per process (chatsite.compiled): the claim's UPDATE, on every answer.
_CLAIM = CompiledUpdate(_claim_update, ints=("message",), times=("now", "lease"))


def reclaim(message_id: int) -> Message | None:
    """streaming → streaming under a new claim: take over a background answer whose
    worker is gone (its lease lapsed), to resume the provider's stream. None while a
    live worker renews the lease, once the answer ended, when it has no background
    response to resume, or after MAX_CLAIMS claims."""
    now = timezone.now()
    # Race: the redelivered task, the reaper's hand-back tasks and the reaper's interrupt
    # all target a row whose lease lapsed; the lease in the filter (renewed here) lets
    # exactly one of them have it.
    taken = (
        Message.objects.filter(pk=message_id, status=Status.STREAMING, lease_expires_at__lt=now,
                               claims__lt=MAX_CLAIMS)
        .exclude(provider_response_id="")
        .update(lease_expires_at=now + timedelta(seconds=settings.STREAM_LEASE_SECONDS),
                claims=F("claims") + 1)
    )
    return _claimed(message_id) if taken else None


def _claimed(message_id: int) -> Message:
    message = _CLAIMED.first(message=message_id)
    if message is None:  # deleted with its conversation since the claim
        raise Message.DoesNotExist(message_id)
    return message


def _claimed_rows(*, message: int) -> QuerySet[Message]:
    return Message.objects.select_related(
        "profile", "conversation", "conversation__organization", "reservation"
    ).filter(pk=message)


# Compiled once per process (chatsite.compiled): read on every claim. The reservation
# comes along: a tool round's budget is measured against it.
_CLAIMED = CompiledSelect(_claimed_rows, "message")
# The same read in the claim's own statement: only the row the claim's UPDATE (the WITH
# clause ``claimed``) changed, with its new claim count.
_CLAIMING = CompiledSelect(
    lambda *, message: _claimed_rows(message=message)
    .filter(pk__in=RawSQL("SELECT id FROM claimed", ()))
    .annotate(claims_now=RawSQL("SELECT claims FROM claimed", ())),
    "message",
)


def _owned(message_id: int, claim: int | None) -> QuerySet[Message]:
    """The row, while it is still streaming under ``claim`` (any claim when None)."""
    rows = Message.objects.filter(pk=message_id, status=Status.STREAMING)
    return rows if claim is None else rows.filter(claims=claim)


# The columns an answer's final state writes (finish), besides its lease and end time.
_FINISHING_FIELDS = (
    "service_tier", "status", "content", "content_tokens", "refusal", "reasoning_summary",
    "reasoning_items", "stream_seq", "finish_reason", "error_code", "error_detail",
    "tool_calls", "history_truncated", "prompt_tokens", "cached_tokens", "completion_tokens",
    "reasoning_tokens", "cache_write_tokens", "usage_estimated", "cost_usd", "price_snapshot",
)
# Compiled once per process (chatsite.compiled): the final state's UPDATE, on every answer.
_FINISHING = CompiledUpdate(
    lambda *, message, claim, now: (_owned(message, claim),
                                    {"lease_expires_at": None, "finished_at": now}),
    ints=("message", "claim"), times=("now",), fields=_FINISHING_FIELDS,
)


def checkpoint(*, message_id: int, content: str, refusal: str, seq: int,
               reasoning_summary: str = "", provider_seq: int | None = None,
               claim: int | None = None) -> bool:
    """Save the text streamed so far (and, for a background answer, the provider event
    it ends with); False once the answer is no longer ours."""
    # Race: the reaper may have interrupted this answer, or another worker taken it over;
    # then the row is not overwritten.
    saved = {"content": content, "refusal": refusal, "stream_seq": seq,
             "reasoning_summary": reasoning_summary, "provider_seq": provider_seq}
    if claim is None:
        return bool(_owned(message_id, claim).update(**saved))
    update, params = _CHECKPOINTING.statement(message=message_id, claim=claim, **saved)
    with transaction.get_connection().cursor() as cursor:
        cursor.execute(update, params)
        return cursor.rowcount > 0


# Compiled once per process (chatsite.compiled): a streaming answer's checkpoint, every
# STREAM_CHECKPOINT_SECONDS of a long answer.
_CHECKPOINTING = CompiledUpdate(
    lambda *, message, claim: (_owned(message, claim), {}),
    ints=("message", "claim"),
    fields=("content", "refusal", "stream_seq", "reasoning_summary", "provider_seq"),
)


def track_response(*, message_id: int, claim: int | None, response_id: str) -> bool:
    """Record the background response the answer streams ("": none a successor could
    resume); False once the answer is no longer ours."""
    # Race: as for checkpoint().
    return bool(_owned(message_id, claim).update(
        provider_response_id=response_id, provider_seq=None
    ))


# --- streaming → done | failed | cancelled -------------------------------------------------


def finish(message: Message, draft: AnswerDraft) -> dict[str, Any]:
    """streaming → final state and settlement in one transaction, once; then the final
    frame. Raises Abandoned when the reaper ended the answer first. Returns the frame."""
    usage, estimated = draft.billable_usage()
    prices = answer_prices(message).at_tier(draft.service_tier)
    cost = usage_cost(prices, usage)
    now = timezone.now()
    changes: dict[str, Any] = {
        "service_tier": draft.service_tier,
        "status": draft.status,
        "content": draft.text,
        # Counted once, here: every later turn of the conversation adds it up.
        "content_tokens": message_tokens(draft.text),
        "refusal": draft.refusal,
        "reasoning_summary": draft.reasoning_summary,
        "reasoning_items": draft.reasoning_items,
        "stream_seq": draft.seq,
        "finish_reason": draft.finish_reason,
        "error_code": draft.error_code,
        "error_detail": draft.detail,
        "tool_calls": draft.tool_calls,
        "history_truncated": draft.history_left_out,
        "prompt_tokens": usage.prompt_tokens,
        "cached_tokens": usage.cached_tokens,
        "completion_tokens": usage.completion_tokens,
        "reasoning_tokens": usage.reasoning_tokens,
        "cache_write_tokens": usage.cache_write_tokens,
        "usage_estimated": estimated,
        "cost_usd": cost,
        "price_snapshot": prices.snapshot(),
        "lease_expires_at": None,
        "finished_at": now,
    }
    with transaction.atomic():
        # Race: the reaper may have declared this answer interrupted while it streamed, or
        # another worker taken it over; only one final state can be written, once.
        if not _end_owned(message, changes, now):
            raise Abandoned()
        settle(message_id=message.pk, cost=cost, estimated=estimated, outcome=draft.status,
               usage=usage)
        _after_commit(message, draft.status)
    return _announce(message, changes)


def _end_owned(message: Message, changes: dict[str, Any], now: datetime) -> bool:
    """Write the answer's final state while it is still ours, and move its conversation
    up the list: one statement on PostgreSQL. False: the answer is no longer ours."""
    connection = transaction.get_connection()
    if connection.vendor != "postgresql":
        if not _owned(message.pk, message.claims).update(**changes):
            return False
        Conversation.objects.filter(pk=message.conversation_id).update(updated_at=now)
        return True
    # The compiled statement writes the lease's end and the time itself, and refuses any
    # other column finish added but _FINISHING_FIELDS does not name.
    written = {name: value for name, value in changes.items()
               if name not in ("lease_expires_at", "finished_at")}
    update, params = _FINISHING.statement(message=message.pk, claim=message.claims, now=now,
                                          **written)
    conversations = connection.ops.quote_name(Conversation._meta.db_table)
    with connection.cursor() as cursor:
        cursor.execute(
            f"WITH ended AS ({update} RETURNING conversation_id),"
            f" touched AS (UPDATE {conversations} SET updated_at = %s"
            f" WHERE id IN (SELECT conversation_id FROM ended))"
            " SELECT count(*) FROM ended",
            [*params, now],
        )
        (ended,) = cursor.fetchone()
    return bool(ended)


# --- pending → cancelled | failed ----------------------------------------------------------


def cancel_pending(message: Message) -> dict[str, Any] | None:
    """Stop before any worker claimed the answer: cancelled at $0. None if it was no
    longer pending (then its worker stops it, keeping the partial text)."""
    changes = {"status": Status.CANCELLED, "finish_reason": "cancelled", "cost_usd": ZERO_COST,
               "usage_estimated": False, "lease_expires_at": None, "finished_at": timezone.now()}
    with transaction.atomic():
        # Race: the worker may be claiming this very message; only one update can win.
        if not Message.objects.filter(pk=message.pk, status=Status.PENDING).update(**changes):
            return None
        settle(message_id=message.pk, cost=ZERO_COST, estimated=False, outcome=Status.CANCELLED)
    return _announce(message, changes)


def request_cancel(message: Message) -> bool:
    """Ask the worker streaming this answer to stop (its monitor polls the flag)."""
    return bool(Message.objects.filter(pk=message.pk, status=Status.STREAMING).update(
        cancel_requested=True
    ))


def cancel(message: Message) -> dict[str, Any] | None:
    """Stop a live answer: a pending one ends here (returns its final frame); a streaming
    one is flagged and ended by its worker, keeping its partial text."""
    frame = cancel_pending(message)
    if frame is None:
        request_cancel(message)
    return frame


def fail_pending(message_id: int, *, code: str, detail: str,
                 deadline_before: datetime | None = None) -> dict[str, Any] | None:
    """pending → failed at $0, releasing the whole reservation: the answer never started.
    With ``deadline_before`` only if its claim deadline has passed by then."""
    now = timezone.now()
    changes = {"status": Status.FAILED, "finish_reason": "error", "error_code": code,
               "error_detail": detail, "cost_usd": ZERO_COST, "usage_estimated": False,
               "lease_expires_at": None, "finished_at": now}
    rows = Message.objects.filter(pk=message_id, status=Status.PENDING)
    if deadline_before is not None:
        rows = rows.filter(lease_expires_at__lt=deadline_before)
    with transaction.atomic():
        # Race: a worker may claim this message right now; the status (and deadline) in
        # the filter let exactly one of the claim and this update win.
        if not rows.update(**changes):
            return None
        settle(message_id=message_id, cost=ZERO_COST, estimated=False, outcome=Status.FAILED)
    message = Message.objects.get(pk=message_id)
    return _publish_final(message)


def expire_pending(message_id: int, now: datetime) -> bool:
    """An answer no worker claimed before its deadline fails as ``queue_timeout``."""
    return fail_pending(message_id, code="queue_timeout", detail=QUEUE_TIMEOUT_DETAIL,
                        deadline_before=now) is not None


# --- streaming → interrupted ---------------------------------------------------------------


def interrupt(message_id: int, *, now: datetime) -> bool:
    """A streaming answer whose lease lapsed (its worker died or stopped making progress)
    ends interrupted with its partial text (checkpoint plus buffered deltas), billed a
    flagged estimate."""
    row = (Message.objects.filter(pk=message_id, status=Status.STREAMING, lease_expires_at__lt=now)
           .values_list("content", "stream_seq").first())
    if row is None:
        return False
    text, last_seq = replay.read_text(message_id, row[0], row[1])
    with transaction.atomic():
        # Race: the worker may come back and finish between our read and this write;
        # the row lock plus status and lease in the filter let only one of us end it.
        message = (
            # of=("self",): the profile join is an outer join, which PostgreSQL cannot lock.
            Message.objects.select_for_update(of=("self",))
            .select_related("profile", "reservation")
            .filter(pk=message_id, status=Status.STREAMING, lease_expires_at__lt=now)
            .first()
        )
        if message is None:
            return False
        usage, cost = estimate_cost(message, text)
        changes = {
            "status": Status.INTERRUPTED, "content": text, "stream_seq": last_seq,
            "error_code": "interrupted", "error_detail": INTERRUPTED_DETAIL,
            "finish_reason": "interrupted", "usage_estimated": True,
            "prompt_tokens": usage.prompt_tokens, "cached_tokens": 0,
            "completion_tokens": usage.completion_tokens,
            "reasoning_tokens": usage.reasoning_tokens, "cost_usd": cost,
            "lease_expires_at": None, "finished_at": now,
        }
        Message.objects.filter(pk=message_id).update(**changes)
        settle(message_id=message_id, cost=cost, estimated=True, outcome=Status.INTERRUPTED,
               usage=_as_saved(usage))
    _announce(message, changes)
    return True


# --- deleting a live answer -----------------------------------------------------------------


def end_for_deletion(message_id: int) -> dict[str, Any] | None:
    """Before a live answer's row (or its owner's data) is deleted: cancel it and settle
    its reservation, so no budget stays held for a row that is gone. A pending answer
    costs $0; a streaming one is charged the flagged estimate of what it showed (as the
    reaper does), and its worker, finding it no longer streaming, charges nothing more."""
    row = (Message.objects.filter(pk=message_id, status__in=Message.LIVE_STATUSES)
           .values_list("status", "content", "stream_seq").first())
    if row is None:
        return None
    status, content, seq = row
    text, last_seq = replay.read_text(message_id, content, seq) if status == Status.STREAMING else (
        content, seq)
    now = timezone.now()
    with transaction.atomic():
        # Race: the worker may claim, checkpoint or finish right now; the row lock and
        # the status filter let exactly one of us end the answer, and settle() charges once.
        message = (
            Message.objects.select_for_update(of=("self",))
            .select_related("profile", "reservation")
            .filter(pk=message_id, status=status).first()
        )
        if message is None:
            return None
        changes: dict[str, Any] = {
            "status": Status.CANCELLED, "finish_reason": "cancelled", "cost_usd": ZERO_COST,
            "usage_estimated": False, "cancel_requested": True, "lease_expires_at": None,
            "finished_at": now,
        }
        if status == Status.STREAMING:
            usage, cost = estimate_cost(message, text)
            changes.update(
                content=text, stream_seq=last_seq, cost_usd=cost, usage_estimated=True,
                prompt_tokens=usage.prompt_tokens, cached_tokens=0,
                completion_tokens=usage.completion_tokens,
                reasoning_tokens=usage.reasoning_tokens,
            )
        Message.objects.filter(pk=message_id).update(**changes)
        settle(message_id=message_id, cost=changes["cost_usd"],
               estimated=changes["usage_estimated"], outcome=Status.CANCELLED,
               usage=_as_saved(usage) if status == Status.STREAMING else None)
        if message.provider_response_id and message.profile_id is not None:
            # Its background response runs on at the provider (billed) and stays stored
            # there: cancelled and deleted by a task once the deletion committed, so the
            # request never waits on the provider (its worker, if alive, only cancels).
            profile_id, response_id = message.profile_id, message.provider_response_id
            transaction.on_commit(lambda: forget_later(profile_id, response_id), robust=True)
    return _announce(message, changes)


def forget_later(profile_id: int, response_id: str) -> None:
    """Queue ``forget_response`` for any worker (ids only)."""
    app.send_task(FORGET_RESPONSE, args=[profile_id, response_id], ignore_result=True)


def forget_response(*, profile_id: int, response_id: str) -> None:
    """Cancel a stored background response at the provider, then delete it, so it bills
    nothing more and the provider keeps none of it. Best effort: each failure is logged."""
    profile = ModelProfile.objects.filter(pk=profile_id).first()
    if profile is None:
        logger.warning("background response %s: its profile %s is gone; not forgotten",
                       response_id, profile_id)
        return
    for step in (llm.cancel_response, llm.delete_response):
        try:
            step(profile, response_id)
        except llm.LLMError as error:
            logger.warning("background response %s: %s failed: %s", response_id,
                           step.__name__, error.detail)


@receiver(pre_delete, sender=Message, dispatch_uid="answers.lifecycle.end_before_delete")
def _end_before_delete(sender: Any, instance: Message, **kwargs: Any) -> None:
    """An admin deleting a live answer (or anything cascading to it) ends it first."""
    if instance.status in Message.LIVE_STATUSES:
        end_for_deletion(instance.pk)


@receiver(live_answer_deleting, dispatch_uid="answers.lifecycle.end_live_answer")
def _end_live_answer(sender: Any, message_id: int, **kwargs: Any) -> None:
    """A person deleting a conversation: its live answers end (and settle) first."""
    end_for_deletion(message_id)


@receiver(person_erasing, dispatch_uid="answers.lifecycle.end_for_erasure")
def _end_erased_persons_answers(sender: Any, user: User, **kwargs: Any) -> None:
    """A person being deleted: their live answers end (and settle) before their data goes."""
    for message_id in Message.objects.filter(
        conversation__user=user, status__in=Message.LIVE_STATUSES
    ).values_list("pk", flat=True):
        end_for_deletion(message_id)


@receiver(organization_deleting, dispatch_uid="answers.lifecycle.end_for_org_deletion")
def _end_deleted_orgs_answers(sender: Any, organization: Organization, **kwargs: Any) -> None:
    """An org being deleted: its live answers end first, so their tabs get a final frame."""
    for message_id in Message.objects.filter(
        conversation__organization=organization, status__in=Message.LIVE_STATUSES
    ).values_list("pk", flat=True):
        end_for_deletion(message_id)


# --- after a final state -------------------------------------------------------------------


def _after_commit(message: Message, status: str) -> None:
    """Follow-up work (titles) once the final state committed. Robust: a failing hook is
    logged and never stops the final frame or the other hooks."""
    message_id, conversation_id = message.pk, message.conversation_id
    # As the claim read the conversation: a title made since is caught by the title task's
    # own check, so the hook needs no query to skip a titled conversation (most turns).
    cached = Message._meta.get_field("conversation").is_cached(message)  # type: ignore[attr-defined]
    titled = message.conversation.title_generated if cached else None

    def run() -> None:
        answer_finished.send_robust(
            sender=Message, message_id=message_id, status=status, conversation_id=conversation_id,
            titled=titled,
        )

    transaction.on_commit(run, robust=True)


def _announce(message: Message, changes: dict[str, Any]) -> dict[str, Any]:
    for name, value in changes.items():
        setattr(message, name, value)
    return _publish_final(message)


def _publish_final(message: Message) -> dict[str, Any]:
    metrics.turn_ended(message.status, message.error_code)  # every ending passes here, once
    frame = final_frame(message)
    publish(message.pk, frame)
    return frame
