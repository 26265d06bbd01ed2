"""Starting, stopping and reaping turns: the domain functions behind the websocket."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from billing.quotas import reserve, settle
from chatsite.ratelimits import over_limit_for
from conversations.access import (
    get_conversation_for_user,
    get_membership,
    get_membership_in,
    get_message_for_user,
)
from conversations.exceptions import NotFound, TurnRefused
from conversations.llm.types import Usage
from conversations.models import Conversation, Message, ModelProfile
from conversations.profiles import usable_profile
from conversations.prompts import estimate_prompt_tokens
from conversations.realtime import publish
from conversations.titles import fallback_title

if TYPE_CHECKING:
    from accounts.models import User

logger = logging.getLogger(__name__)

Status = Message.Status


@dataclass(frozen=True)
class Turn:
    conversation: Conversation
    user_message: Message
    assistant_message: Message


def start_turn(
    *,
    user: User,
    organization_id: int | None,
    conversation_id: int | None,
    content: str,
    reasoning_effort: str | None,
    client_id: str = "",
    profile_name: str | None = None,
) -> Turn:
    """Save the question and a pending answer, and queue the answer after commit."""
    content = content.strip()
    if not content:
        raise TurnRefused("invalid_request", "Type a message first.")
    if len(content) > settings.MAX_MESSAGE_CHARS:
        raise TurnRefused(
            "invalid_request",
            f"Messages are limited to {settings.MAX_MESSAGE_CHARS:,} characters; "
            f"this one has {len(content):,}.",
        )
    from conversations.tasks import generate_reply

    # Counted before the transaction: a refused send writes nothing to the database.
    _refuse_fast_senders(user)
    membership = get_membership(user, organization_id)
    with transaction.atomic():
        _refuse_too_many_live_answers(user)
        if conversation_id is None:
            profile = usable_profile(membership.organization, profile_name)
            conversation = Conversation.objects.create(
                organization=membership.organization,
                user=user,
                profile=profile,
                title=fallback_title(content),
            )
        else:
            conversation = get_conversation_for_user(user, conversation_id)
            # The conversation's own org decides: its budgets, profiles and instructions
            # apply, not the session's org (which only picks where new chats go).
            membership = get_membership_in(user, conversation.organization_id)
            # Race: two tabs sending into one conversation at once; the row lock makes
            # the "one live answer per conversation" check below hold for both.
            Conversation.objects.select_for_update().filter(pk=conversation.pk).first()
            profile = usable_profile(conversation.organization, conversation.profile.name)
            if conversation.messages.filter(status__in=Message.LIVE_STATUSES).exists():
                raise TurnRefused(
                    "invalid_request",
                    "An answer is still being written in this conversation. Wait for it or stop it.",
                )
        effort = _effort_for(profile, reasoning_effort)
        now = timezone.now()
        user_message = Message.objects.create(
            conversation=conversation, role=Message.Role.USER, content=content, created_at=now
        )
        assistant = Message.objects.create(
            conversation=conversation,
            role=Message.Role.ASSISTANT,
            status=Status.PENDING,
            profile=profile,
            model_name=profile.model,
            reasoning_effort=effort,
            max_completion_tokens=profile.completion_cap(effort),
            client_id=client_id,
            created_at=now,
            # Until a worker claims it, the lease is the deadline for claiming it.
            lease_expires_at=now + timedelta(seconds=settings.PENDING_TIMEOUT_SECONDS),
        )
        reserve(
            membership=membership,
            message=assistant,
            profile=profile,
            prompt_tokens=estimate_prompt_tokens(
                conversation_id=conversation.pk if conversation_id else None,
                content=content,
                profile=profile,
                org_message=membership.organization.developer_message,
                custom=conversation.custom_instructions,
                completion_cap=assistant.max_completion_tokens or profile.max_completion_tokens,
            ),
        )
        if conversation.profile_id != profile.pk:
            conversation.profile = profile
        conversation.updated_at = now
        conversation.save(update_fields=["profile", "updated_at"])
        generate_reply.delay_on_commit(assistant.pk)
    return Turn(conversation, user_message, assistant)


class SendsRateLimited(TurnRefused):
    """Over SENDS_PER_MINUTE; ``retry_after`` is the seconds until the window resets."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(
            "rate_limited",
            f"You have sent {settings.SENDS_PER_MINUTE} messages in the last minute, the most "
            f"allowed. Wait {retry_after} second{'s' if retry_after != 1 else ''}, then send again.",
        )
        self.retry_after = retry_after


def _refuse_fast_senders(user: User) -> None:
    # Counted in the shared cache, so every web process sees one count per person.
    limited, retry_after = over_limit_for(
        f"user:{user.pk}", group="chat-send", rate=f"{settings.SENDS_PER_MINUTE}/m"
    )
    if limited:
        raise SendsRateLimited(retry_after)


def _refuse_too_many_live_answers(user: User) -> None:
    """Call inside start_turn's transaction, before anything is written."""
    from accounts.models import User as UserModel

    # Race: two tabs sending at once with one slot left would both count the same live
    # answers and both start; locking the person's row makes the second count wait until
    # the first turn has committed its pending answer (or rolled back).
    UserModel.objects.select_for_update().filter(pk=user.pk).first()
    live = Message.objects.filter(
        conversation__user=user, role=Message.Role.ASSISTANT, status__in=Message.LIVE_STATUSES
    ).count()
    limit = settings.MAX_LIVE_ANSWERS_PER_USER
    if live >= limit:
        raise TurnRefused(
            "too_many_live_answers",
            f"You already have {live} answer{'s' if live != 1 else ''} being written, the most "
            f"at once is {limit}. Wait for one to finish or stop one, then send again.",
        )


def _effort_for(profile: ModelProfile, requested: str | None) -> str:
    efforts = profile.reasoning_efforts or []
    if not requested:
        return profile.default_effort
    if requested not in efforts:
        raise TurnRefused(
            "invalid_request",
            f"{profile.display_name} accepts reasoning effort "
            + (" / ".join(efforts) if efforts else "none")
            + f", not {requested!r}.",
        )
    return requested


def request_stop(*, user: User, message_id: int) -> Message:
    """Stop an answer. A pending one is cancelled here; a streaming one by its worker,
    which keeps the partial text."""
    message = get_message_for_user(user, message_id)
    if message.role != Message.Role.ASSISTANT:
        raise NotFound("answer")
    now = timezone.now()
    with transaction.atomic():
        # Race: the worker may be claiming this very message; only one update can win.
        cancelled = Message.objects.filter(pk=message.pk, status=Status.PENDING).update(
            status=Status.CANCELLED, finish_reason="cancelled", finished_at=now,
            lease_expires_at=None,
        )
        if cancelled:
            settle(message_id=message.pk, cost=Decimal(0), estimated=False)
    if cancelled:
        message.refresh_from_db()
        publish(
            message.pk,
            {
                "type": "done",
                "message": message.pk,
                "seq": message.stream_seq + 1,
                "status": Status.CANCELLED,
                "finish_reason": "cancelled",
                "usage": message.usage_dict(),
                "cost_usd": str(message.cost_usd),
            },
        )
        return message
    Message.objects.filter(pk=message.pk, status=Status.STREAMING).update(cancel_requested=True)
    message.refresh_from_db()
    return message


def reap_stale_replies() -> int:
    """End answers nobody is working on: a pending one no worker claimed in time fails
    as ``queue_timeout`` at $0; a streaming one whose lease lapsed (its worker died or
    stopped making progress) is marked interrupted, keeping its partial text.

    Each row is handled in its own transaction: one row that cannot be ended is logged
    and skipped, never blocking the rows behind it.
    """
    now = timezone.now()
    stale = list(
        Message.objects.filter(status__in=Message.LIVE_STATUSES, lease_expires_at__lt=now)
        .order_by("lease_expires_at")
        .values_list("pk", "status", "content", "stream_seq")[:500]
    )
    reaped = 0
    for pk, status, content, seq in stale:
        try:
            if status == Status.PENDING:
                reaped += _expire_pending(pk, now)
            else:
                reaped += _reap_streaming(pk, status, now, content, seq)
        except Exception:
            logger.exception("could not reap message %s; will retry on the next pass", pk)
    reaped += _settle_leaked_reservations()
    if reaped:
        logger.warning("reaped %d stale answers or leaked reservations", reaped)
    return reaped


def _reap_streaming(pk: int, status: str, now: datetime, content: str, seq: int) -> bool:
    from conversations.replay import read_text

    text, last_seq = read_text(pk, content, seq)
    with transaction.atomic():
        updated = _interrupt(pk, status, now, text, last_seq)
    if updated:
        publish(
            pk,
            {
                "type": "error",
                "message": pk,
                "seq": last_seq + 1,
                "code": "interrupted",
                "detail": "The answer was interrupted. What was written so far is kept.",
                "partial": bool(text),
            },
        )
    return updated


QUEUE_TIMEOUT_DETAIL = (
    "No worker picked this question up in time (the service is busy or restarting), so "
    "nothing was charged. Send it again."
)


def _expire_pending(pk: int, now: datetime) -> bool:
    """pending → failed (queue_timeout) at $0, releasing the whole reservation."""
    with transaction.atomic():
        # Race: a worker may claim this message right now; the status and deadline in
        # the filter let exactly one of the claim and this update win.
        expired = Message.objects.filter(
            pk=pk, status=Status.PENDING, lease_expires_at__lt=now
        ).update(
            status=Status.FAILED,
            finish_reason="error",
            error_code="queue_timeout",
            error_detail=QUEUE_TIMEOUT_DETAIL,
            cost_usd=Decimal(0),
            usage_estimated=False,
            lease_expires_at=None,
            finished_at=now,
        )
        if expired:
            settle(message_id=pk, cost=Decimal(0), estimated=False)
    if expired:
        publish(
            pk,
            {
                "type": "error",
                "message": pk,
                "seq": 1,
                "code": "queue_timeout",
                "detail": QUEUE_TIMEOUT_DETAIL,
                "partial": False,
                "usage": Usage().as_dict(),
                "cost_usd": "0.000000",
            },
        )
    return bool(expired)


def _settle_leaked_reservations() -> int:
    """Defence in depth: a final message whose reservation is still open (which the
    same-transaction settlement should make impossible) is settled to its recorded cost."""
    from billing.models import Reservation

    leaked = Reservation.objects.filter(
        settled_at=None, message__status__in=Message.FINAL_STATUSES
    ).values_list("message_id", "message__cost_usd", "message__usage_estimated")[:500]
    settled = 0
    for message_id, cost, estimated in leaked:
        try:
            with transaction.atomic():
                settled += settle(message_id=message_id, cost=cost, estimated=estimated)
        except Exception:
            logger.exception("could not settle the reservation of message %s", message_id)
    return settled


def _interrupt(pk: int, status: str, now: datetime, text: str, last_seq: int) -> bool:
    """Mark one stale answer interrupted and settle its reservation to an estimate."""
    from conversations.generation import estimate_cost

    # Race: the worker may come back and finish between our read and this write;
    # the status and lease in the filter let only one of us end the message.
    message = (
        # of=("self",): the profile join is an outer join, which PostgreSQL cannot lock.
        Message.objects.select_for_update(of=("self",))
        .select_related("profile")
        .filter(pk=pk, status=status, lease_expires_at__lt=now)
        .first()
    )
    if message is None:
        return False
    usage, cost = estimate_cost(message, text)
    Message.objects.filter(pk=pk).update(
        status=Status.INTERRUPTED,
        content=text,
        stream_seq=last_seq,
        error_code="interrupted",
        error_detail="The answer was interrupted (its worker stopped). What was written "
        "so far is kept; send the question again to regenerate.",
        finish_reason="interrupted",
        usage_estimated=True,
        prompt_tokens=usage.prompt_tokens,
        completion_tokens=usage.completion_tokens,
        reasoning_tokens=usage.reasoning_tokens,
        cost_usd=cost,
        lease_expires_at=None,
        finished_at=now,
    )
    settle(message_id=pk, cost=cost, estimated=True)
    return True
