"""Starting, stopping and reaping turns: the domain functions behind the websocket."""

from __future__ import annotations

import functools
import logging
import operator
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import redis
from django.conf import settings
from django.contrib.postgres.expressions import ArraySubquery
from django.db import OperationalError, connection, transaction
from django.db.models import F, Func, Model, OuterRef, Subquery, Sum
from django.db.models.expressions import RawSQL
from django.utils import timezone

from accounts.model_access import profile_enabled, usable_profile
from accounts.models import Membership, User
from answers import lifecycle, reaper
from answers.dispatch import ServiceUnavailable, queue_reply
from answers.prompts import estimate_prompt_tokens
from answers.titles import fallback_title
from billing.quotas import reserve
from chatsite.compiled import CompiledSelect, CompiledUpdate, insert_statement
from chatsite.errors import NotFound, Refused
from chatsite.ratelimits import over_limit_for
from conversations.access import get_message_for_user, memberships_in_order, own_conversation
from conversations.models import Conversation, Message
from conversations.tree import AFTER_LEAF, ParentChoice, resolve_parent
from llm.catalog.sync import ensure_synced
from llm.models import ModelProfile
from llm.pricing import Prices
from llm.profiles import is_retired, openai_profiles_usable
from llm.tokens import message_tokens
from realtime.backpressure import refuse_when_full, waiting_for_worker
from realtime.turns import Turn

if TYPE_CHECKING:
    from django.db.models import QuerySet

logger = logging.getLogger(__name__)

Status = Message.Status
# Attempts at a turn's transaction when PostgreSQL ends it to break a deadlock.
TURN_ATTEMPTS = 3


def start_turn(
    *,
    user: User,
    organization_id: int | None,
    conversation_id: int | None,
    content: str,
    reasoning_effort: str | None,
    client_id: str = "",
    profile_name: str | None = None,
    parent_id: ParentChoice = AFTER_LEAF,
    question_id: int | None = None,
) -> Turn:
    """Save the question and a pending answer, and queue the answer after commit.

    The question follows ``parent_id`` (an answer of this conversation; None starts a new
    root, so editing a first question branches there; default: the branch on screen).
    With ``question_id`` (regenerate) no question is saved: the new answer becomes a
    sibling of that question's other answers.
    """
    content = content.strip()
    if not content:
        raise Refused("invalid_request", "Type a message first.")
    if len(content) > settings.MAX_MESSAGE_CHARS:
        raise Refused(
            "invalid_request",
            f"Messages are limited to {settings.MAX_MESSAGE_CHARS:,} characters; "
            f"this one has {len(content):,}.",
        )
    # Counted in the shared cache: a refused send writes nothing to the database. With
    # Redis down it cannot be counted, and the answer could not be queued either: the
    # sender gets service_unavailable before anything is written. (The broker alone
    # down: the saved answer fails at $0 after commit, see answers.dispatch.)
    _refuse_fast_senders(user)
    # A cache hit, except once per sync period, when it may ask the provider for its
    # models: never while this turn holds the locks below (usable_profile checks again).
    ensure_synced()
    # A turn that lost a deadlock (PostgreSQL rolled all of it back) starts again: the
    # other transaction has gone on, so the next attempt waits for it instead.
    for attempt in range(1, TURN_ATTEMPTS + 1):
        try:
            return _begin_turn(
                user=user, organization_id=organization_id, conversation_id=conversation_id,
                content=content, reasoning_effort=reasoning_effort, client_id=client_id,
                profile_name=profile_name, parent_id=parent_id, question_id=question_id,
            )
        except OperationalError as error:
            if attempt == TURN_ATTEMPTS or not _lost_a_lock_conflict(error):
                raise
            logger.warning("a turn of user %s lost a deadlock (attempt %d); starting it again",
                           user.pk, attempt)
    raise AssertionError("unreachable")  # pragma: no cover


def _lost_a_lock_conflict(error: OperationalError) -> bool:
    """Whether PostgreSQL rolled the transaction back to break a deadlock (40P01) or a
    serialization conflict (40001): the same work may succeed when run again."""
    return getattr(error.__cause__, "sqlstate", None) in {"40P01", "40001"}


def _begin_turn(
    *, user: User, organization_id: int | None, conversation_id: int | None, content: str,
    reasoning_effort: str | None, client_id: str, profile_name: str | None,
    parent_id: ParentChoice, question_id: int | None,
) -> Turn:
    """start_turn's transaction: the checks, locks and rows of one turn."""
    with transaction.atomic():
        # Each lookup below also takes the locks the checks after it need, and the turn's
        # rows are written in one statement (_save_turn), so a turn starts in a handful of
        # statements (tests/conversations: test_turn_query_budget, test_turn_statements).
        if conversation_id is None:
            existing = None
            membership, queued_ahead = _membership_locking_sender(user, organization_id)
            profile = usable_profile(membership.organization, profile_name, user=user)
            conversation = Conversation(
                organization=membership.organization,
                user=user,
                profile=profile,
                title=fallback_title(content),
            )
        else:
            conversation, queued_ahead = _conversation_locking_sender(user, conversation_id)
            existing = conversation
            # The conversation's own org decides: its budgets, profiles and instructions
            # apply, not the session's org (which only picks where new chats go).
            membership = _membership_of(conversation)
            # A send may name another of the org's models: the conversation goes on with
            # it. A regenerate may too, for that answer only (see below). Staying on the
            # conversation's model needs no query of its own: the lookup above checked it.
            profile = conversation.profile
            if profile_name not in (None, "", profile.name) or not (
                conversation.profile_enabled and not is_retired(profile)  # type: ignore[attr-defined]
            ):
                profile = usable_profile(conversation.organization, profile_name or profile.name,
                                         user=user)
        effort = _effort_for(profile, reasoning_effort)
        now = timezone.now()
        user_message = _question_for(
            existing, new=conversation, content=content, parent_id=parent_id,
            question_id=question_id, now=now,
        )
        assistant = Message(
            conversation=conversation,
            parent=user_message,
            role=Message.Role.ASSISTANT,
            status=Status.PENDING,
            profile=profile,
            model_name=profile.model,
            reasoning_effort=effort,
            max_completion_tokens=profile.completion_cap(effort),
            # Prices are fixed when the budget is reserved: an admin editing the profile
            # mid-answer changes neither this turn's reservation nor its bill.
            price_snapshot=Prices.of(profile).snapshot(),
            client_id=client_id,
            created_at=now,
            # Until a worker claims it, the lease is the deadline for claiming it.
            lease_expires_at=now + timedelta(seconds=settings.PENDING_TIMEOUT_SECONDS),
        )
        # Regenerating on another model changes that answer only: the conversation's
        # default model stays until the person picks another for the conversation.
        if conversation.profile_id != profile.pk and question_id is None:
            conversation.profile = profile
        conversation.updated_at = now
        history, history_tokens = _history_after(existing, user_message)
        _save_turn(user, conversation, user_message, assistant)
        reserve(
            membership=membership,
            message=assistant,
            profile=profile,
            prompt_tokens=estimate_prompt_tokens(
                conversation_id=conversation.pk if existing is not None else None,
                history=history,
                history_tokens=history_tokens,
                content=content,
                profile=profile,
                org_message=membership.organization.developer_message,
                custom=conversation.custom_instructions,
                completion_cap=assistant.max_completion_tokens or profile.max_completion_tokens,
            ),
        )
        transaction.on_commit(functools.partial(queue_reply, assistant.pk))
    return Turn(conversation, user_message, assistant, queued_ahead)


class SendsRateLimited(Refused):
    """Over SENDS_PER_MINUTE; ``retry_after`` is the seconds until the window resets."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(
            "rate_limited",
            f"You have sent {settings.SENDS_PER_MINUTE} messages in the last minute, the most "
            f"allowed. Wait {retry_after} second{'s' if retry_after != 1 else ''}, then send again.",
        )
        self.retry_after = retry_after


def _question_for(
    existing: Conversation | None, *, new: Conversation, content: str,
    parent_id: ParentChoice, question_id: int | None, now: datetime,
) -> Message:
    """The question the new answer follows: ``question_id``'s (regenerate) or a new one
    placed after ``parent_id`` (see start_turn). Runs under the conversation's lock."""
    if question_id is not None:
        question = Message.objects.filter(
            pk=question_id, conversation=new, role=Message.Role.USER
        ).first()
        if question is None:
            raise NotFound("message")
        return question
    parent = resolve_parent(existing, parent_id)
    # Saved with the answer (_save_turn), counted once for every later turn's estimate.
    return Message(conversation=new, parent=parent, role=Message.Role.USER, content=content,
                   content_tokens=message_tokens(content), created_at=now)


def _history_after(existing: Conversation | None,
                   question: Message) -> tuple[list[str] | None, int]:
    """What the turn's prompt estimate counts, as it will be once the turn's rows are
    saved: every message of the conversation (read with its lock, PostgreSQL), a new
    question, and the empty answer. Returns the texts still to tokenize (messages with no
    stored count) and the sum of the stored counts; None: not read yet (the estimate
    reads them)."""
    texts = getattr(existing, "history", None)
    if texts is None:
        return None, 0
    counted = getattr(existing, "history_tokens", 0) or 0
    if question._state.adding:
        counted += question.content_tokens or 0
    return [*texts, ""], counted


def _move_leaf(*, conversation: int, profile: int,
               now: datetime) -> tuple[QuerySet[Conversation], dict[str, Any]]:
    """A follow-up's conversation: its model, its place in the list and its new leaf (the
    answer whose id the turn's statement draws as ``ids.answer``)."""
    return (Conversation.objects.filter(pk=conversation),
            {"profile_id": profile, "updated_at": now,
             "current_leaf": RawSQL("SELECT answer FROM ids", ())})


# Compiled once per process (chatsite.compiled): part of every follow-up's statement.
_MOVE_LEAF = CompiledUpdate(_move_leaf, ints=("conversation", "profile"), times=("now",))


def _save_turn(user: User, conversation: Conversation, question: Message,
               assistant: Message) -> None:
    """Save the turn's rows (a new conversation, a new question, the pending answer, the
    conversation's new leaf) if the live-answer limits let it (_refuse_live_answers).

    On PostgreSQL this is one statement: the ids are drawn first, so a new conversation
    is written with its leaf and never updated in the same transaction (which would
    check all its foreign keys again), and the live answers are counted in it, after
    the sender's row was locked. A refusal raises and the transaction rolls the rows
    back."""
    new_conversation = conversation._state.adding
    connection = transaction.get_connection()
    if connection.vendor != "postgresql":
        counts = _LIVE_ANSWERS.first(user=user.pk, conversation=conversation.pk or 0)
        if counts is not None:
            _refuse_live_answers(counts.live, counts.here)  # type: ignore[attr-defined]
        if new_conversation:
            conversation.save(force_insert=True)
        if question._state.adding:
            question.save(force_insert=True)
        assistant.save(force_insert=True)
        conversation.current_leaf = assistant
        conversation.save(update_fields=["profile", "updated_at", "current_leaf"])
        return
    rows: dict[str, Model] = {"answer": assistant}
    if question._state.adding:
        rows = {"question": question, **rows}
    if new_conversation:
        rows = {"conversation": conversation, **rows}
    ids = ", ".join(f"nextval(pg_get_serial_sequence('{row._meta.db_table}', 'id')) AS {name}"
                    for name, row in rows.items())
    live, params = _LIVE_ANSWERS.statement(user=user.pk, conversation=conversation.pk or 0)
    parts = [f"ids AS (SELECT {ids})", f"live AS ({live})"]
    in_conversation = {"conversation_id": "ids.conversation"} if new_conversation else {}
    inserts = {
        "conversation": {"id": "ids.conversation", "current_leaf_id": "ids.answer"},
        "question": {"id": "ids.question", **in_conversation},
        "answer": {"id": "ids.answer", **in_conversation,
                   **({"parent_id": "ids.question"} if "question" in rows else {})},
    }
    for name, row in rows.items():
        insert, values = insert_statement(row, computed=inserts[name])
        parts.append(f"saved_{name} AS ({insert} FROM ids)")
        params.extend(values)
    if not new_conversation:
        update, update_params = _MOVE_LEAF.statement(
            conversation=conversation.pk, profile=conversation.profile_id,
            now=conversation.updated_at)
        parts.append(f"moved AS ({update})")
        params.extend(update_params)
    with connection.cursor() as cursor:
        cursor.execute(f"WITH {', '.join(parts)} SELECT live.live, live.here,"
                       f" {', '.join(f'ids.{name}' for name in rows)} FROM ids, live", params)
        live_answers, here, *saved = cursor.fetchone()
    _refuse_live_answers(live_answers, here)
    for row, pk in zip(rows.values(), saved, strict=True):
        row.pk = pk
        row._state.adding, row._state.db = False, connection.alias
    # The rows as saved: their foreign keys follow the ids just drawn.
    question.conversation = assistant.conversation = conversation
    assistant.parent = question
    conversation.current_leaf = assistant


def _refuse_fast_senders(user: User) -> None:
    # Counted in the shared cache, so every web process sees one count per person.
    try:
        limited, retry_after = over_limit_for(
            f"user:{user.pk}", group="chat-send", rate=f"{settings.SENDS_PER_MINUTE}/m"
        )
    except (redis.RedisError, OSError) as error:
        logger.warning("the shared cache is unreachable, refusing a turn: %s", error)
        raise ServiceUnavailable() from error
    if limited:
        raise SendsRateLimited(retry_after)


def _waiting_answers() -> Subquery:
    """How many answers wait for a worker, as a scalar subquery (see backpressure)."""
    return _count_of(Message.objects.filter(waiting_for_worker()))


def _count_of(rows: QuerySet[Message]) -> Subquery:
    """COUNT(*) of ``rows`` as a scalar subquery (no GROUP BY: one row)."""
    return Subquery(rows.order_by().annotate(n=Func(F("pk"), function="COUNT")).values("n")[:1])


def _membership_locking_sender(user: User, organization_id: int | None) -> tuple[Membership, int]:
    """The membership a new conversation goes to, with the sender's row locked, and
    how many answers wait for a worker (refused beyond MAX_QUEUED_TURNS): one query,
    compiled once per process.

    Race: two tabs sending at once with one live-answer slot left would both count the
    same live answers; the person's row lock makes the second count wait until the
    first turn has committed its pending answer (or rolled back)."""
    if organization_id is None:
        membership = _MEMBERSHIP_FOR_TURN.first(user=user.pk)
    else:
        membership = _CHOSEN_MEMBERSHIP_FOR_TURN.first(
            user=user.pk, organization=_id_or_not_found(organization_id, "organization"))
    if membership is None:
        raise NotFound("organization")
    return membership, refuse_when_full(getattr(membership, "waiting", 0) or 0)


def _id_or_not_found(value: object, what: str) -> int:
    """An id from a frame as the compiled lookups take it, an int; anything that is not
    an integer (a float, a string of digits) finds nothing, as an unknown id does."""
    try:
        return operator.index(value)  # type: ignore[arg-type]
    except TypeError as exc:
        raise NotFound(what) from exc


def _memberships_for_turn(*, user: int, organization: int | None = None) -> QuerySet[Membership]:
    # FOR NO KEY UPDATE, as everywhere a turn locks the sender: it serializes one person's
    # turns, and leaves other transactions' foreign-key checks on the row (KEY SHARE) free;
    # FOR UPDATE made them wait at their commit for a turn that waited for them.
    rows = (Membership.objects.select_related("organization", "user")
            .select_for_update(of=("user",), no_key=True).annotate(waiting=_waiting_answers()))
    return memberships_in_order(rows, user_id=user, organization_id=organization)[:1]


_MEMBERSHIP_FOR_TURN = CompiledSelect(_memberships_for_turn, "user")
_CHOSEN_MEMBERSHIP_FOR_TURN = CompiledSelect(_memberships_for_turn, "user", "organization")


def _conversation_locking_sender(user: User, conversation_id: int) -> tuple[Conversation, int]:
    """The user's conversation with its row and the sender's row locked, how many
    answers wait for a worker, and whether its model is still one the org may use: one
    query, compiled once per process (chatsite.compiled: Django's compile of this query
    cost more CPU than PostgreSQL's run of it).

    The conversation's lock orders a send against a delete in another tab
    (listing.delete_conversation): PostgreSQL re-checks ``deleted_at`` on the locked row.
    """
    conversation = _CONVERSATION_FOR_TURN.first(
        shape=openai_profiles_usable(),
        conversation=_id_or_not_found(conversation_id, "conversation"), user=user.pk,
    )
    if conversation is None:
        raise NotFound("conversation")
    return conversation, refuse_when_full(getattr(conversation, "waiting", 0) or 0)


def _conversation_for_turn(*, conversation: int, user: int) -> QuerySet[Conversation]:
    rows = (
        Conversation.objects.select_related("profile", "organization", "user", "current_leaf")
        .select_for_update(of=("self", "user"), no_key=True)
        .annotate(
            waiting=_waiting_answers(),
            profile_enabled=profile_enabled(organization_field="organization_id",
                                            profile_field="profile_id", user_field="user_id"),
            # The sender's membership in the conversation's org (the access rule requires
            # one): the fields the turn's budget checks read, in the same statement.
            **{f"membership_{name}": _sender_membership(name)
               for name in ("pk", "role", "monthly_budget_usd")},
        )
    )
    if connection.vendor == "postgresql":
        # For the turn's prompt estimate (_history_after): the stored token counts, summed,
        # and the texts of the messages that have none (a live answer, an import).
        messages = Message.objects.filter(conversation_id=OuterRef("pk")).order_by()
        rows = rows.annotate(
            history_tokens=Subquery(messages.values("conversation_id")
                                    .annotate(total=Sum("content_tokens")).values("total")),
            history=ArraySubquery(messages.filter(content_tokens__isnull=True).values("content")),
        )
    return own_conversation(rows, user_id=user, conversation_id=conversation)


_CONVERSATION_FOR_TURN = CompiledSelect(_conversation_for_turn, "conversation", "user")


def _sender_membership(field: str) -> Subquery:
    return Subquery(Membership.objects.filter(
        user_id=OuterRef("user_id"), organization_id=OuterRef("organization_id")
    ).values(field)[:1])


def _membership_of(conversation: Conversation) -> Membership:
    """The sender's membership in the conversation's org, from the annotations of
    ``_conversation_locking_sender``."""
    return Membership(
        pk=conversation.membership_pk,  # type: ignore[attr-defined]
        user=conversation.user,
        organization=conversation.organization,
        role=conversation.membership_role,  # type: ignore[attr-defined]
        monthly_budget_usd=conversation.membership_monthly_budget_usd,  # type: ignore[attr-defined]
    )


def _refuse_live_answers(live: int, here: int) -> None:
    """At most MAX_LIVE_ANSWERS_PER_USER answers pending or streaming per person, and one
    per conversation: ``live`` and ``here`` counted (_LIVE_ANSWERS) after the sender's row
    was locked, in a statement of their own, so they include every turn committed while
    this one waited for the lock."""
    if here:
        raise Refused(
            "invalid_request",
            "An answer is still being written in this conversation. Wait for it or stop it.",
        )
    limit = settings.MAX_LIVE_ANSWERS_PER_USER
    if live >= limit:
        raise Refused(
            "too_many_live_answers",
            f"You already have {live} answer{'s' if live != 1 else ''} being written, the most "
            f"at once is {limit}. Wait for one to finish or stop one, then send again.",
        )


def _live_answers(*, user: int, conversation: int) -> QuerySet[User]:
    """The sender's answers pending or streaming, in all and in this conversation."""
    live = Message.objects.filter(conversation__user_id=OuterRef("pk"), role=Message.Role.ASSISTANT,
                                  status__in=Message.LIVE_STATUSES)
    return User.objects.filter(pk=user).only("pk").annotate(
        live=_count_of(live), here=_count_of(live.filter(conversation_id=conversation)),
    )


# Compiled once per process (chatsite.compiled), as the lookups above.
_LIVE_ANSWERS = CompiledSelect(_live_answers, "user", "conversation")


def _effort_for(profile: ModelProfile, requested: str | None) -> str:
    """The one check of a turn's effort (send, edit and regenerate all come here)."""
    efforts = profile.offered_efforts()
    if not requested:
        return profile.default_effort
    if requested not in efforts:
        # "none" is itself an effort, so a model without efforts says so in words.
        choices = (
            "Send without one." if not efforts
            else f"Choose {efforts[0]}." if len(efforts) == 1
            else f"Choose {', '.join(efforts[:-1])} or {efforts[-1]}."
        )
        raise Refused(
            "invalid_request",
            f"{profile.display_name} does not take reasoning effort {requested!r}. {choices}",
        )
    return requested


def request_stop(*, user: User, message_id: int) -> Message:
    """Stop an answer. A pending one is cancelled here; a streaming one by its worker,
    which keeps the partial text (answers.lifecycle owns both transitions)."""
    message = get_message_for_user(user, message_id)
    if message.role != Message.Role.ASSISTANT:
        raise NotFound("answer")
    lifecycle.cancel(message)
    message.refresh_from_db()
    return message


# The reaper (answers.reaper) ends answers through answers.lifecycle's transitions.
reap_stale_replies = reaper.reap_stale_replies
QUEUE_TIMEOUT_DETAIL = lifecycle.QUEUE_TIMEOUT_DETAIL
