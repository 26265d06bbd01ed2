"""The streaming loop for one assistant answer, testable without Celery.

``run_generation`` claims a pending message, streams it from the provider, publishes
coalesced deltas, checkpoints text a bounded number of times, and ends the message in
exactly one final state. It never writes per token.

A high-effort Responses answer runs as a background response at the provider: its id is
saved once and each checkpoint also saves the provider's sequence number, so when the
worker dies mid-answer the next one (the redelivered task, or the reaper's hand-back)
takes the answer over and resumes the provider's stream right after the checkpoint.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, TypeVar

from django.conf import settings
from django.db import connection
from django.utils import timezone

from answers import lifecycle
from answers.lifecycle import Abandoned, Ending, answer_prices, claim
from answers.live import LiveReply, monitor
from answers.prompts import (
    build_prompt,
    extra_tokens,
    message_tokens,
    prompt_cache_key,
    tools_tokens,
)
from billing import quotas
from conversations.models import Message
from llm import client as llm
from llm.models import ModelProfile
from llm.pricing import (
    Prices,
    add_usage,
    affordable_completion_tokens,
    estimate_usage,
    usage_cost,
    worst_case_cost,
)
from llm.tools import run_tool, tool_schemas
from llm.types import (
    ChatRequest,
    Finished,
    LLMError,
    ReasoningItem,
    ReasoningSummaryDelta,
    RefusalDelta,
    ResponseStarted,
    TextDelta,
    ToolCallDelta,
    Usage,
    UsageReport,
)
from realtime import frames, replay
from realtime.publishing import publish

logger = logging.getLogger(__name__)

Status = Message.Status

# Before following a still-reasoning background response again after its connection gave out.
FOLLOW_PAUSE_SECONDS = 1.0

# A tool round with a smaller completion budget than this would mostly end in reasoning.
MIN_TOOL_ROUND_TOKENS = 1024
# Under an answer whose next tool round the budget could not cover (the answer keeps what
# the rounds before it wrote).
BUDGET_STOP_NOTICE = "Stopped before another tool step: budget reached"
PROMPT_OVER_BUDGET = (
    "Your budget cannot cover this question with the conversation's history and tools. "
    "Start a new conversation, or use “Request more” to ask an admin."
)
# Resumes of one background response after its connection dropped mid-answer: each picks
# up after the last event read, so a few ride out a flaky network; a provider that keeps
# dropping the connection ends the answer instead of looping.
MAX_FOLLOWS = 5
# How often a background response the provider still has ``queued`` is polled before
# it is resumed (a GET each: cheap, and its deadline is a setting).
QUEUED_POLL_SECONDS = 2.0


T = TypeVar("T")
# Runs a database call off the event loop and returns its result (answers.engine).
Db = Callable[[Callable[[], T]], Awaitable[T]]


class Cancelled(Exception):
    pass


def _release_db() -> None:
    # A live answer holds no database connection between writes: 200 concurrent answers
    # share a small pool instead of needing 200 connections.
    if not connection.in_atomic_block:
        connection.close()


@dataclass
class Streamer:
    """Coalesces deltas (one frame per flush window) and checkpoints text."""

    message_id: int
    claim: int | None = None  # this worker's claim: its writes lose to a later one's
    text_parts: list[str] = field(default_factory=list)
    refusal_parts: list[str] = field(default_factory=list)
    summary_parts: list[str] = field(default_factory=list)
    pending: list[str] = field(default_factory=list)
    pending_refusal: list[str] = field(default_factory=list)
    seq: int = 0
    checkpoints: int = 0
    frames: int = 0
    last_flush: float = 0.0
    last_checkpoint: float = field(default_factory=time.monotonic)
    # A background answer's first round: the provider response a successor could
    # resume, and the stream being read (whose sequence number each checkpoint saves).
    resumable: bool = False
    response_id: str = ""
    upstream: llm.ChatStream | None = None
    # A resumed answer: text tabs were shown after the checkpoint, which the provider is
    # about to send again.
    replayed_text: str = ""
    replayed_refusal: str = ""
    # Where frames go: the event loop's batching publisher for an answer the engine runs,
    # else ``publish`` (sync callers and tests).
    sink: Callable[[int, dict[str, Any]], None] | None = None
    # A checkpoint is due: the answer's coroutine awaits the write (its database calls
    # run off the loop); ``checkpoint`` writes one at once.
    checkpoint_due: bool = False

    @property
    def text(self) -> str:
        return "".join(self.text_parts)

    @property
    def refusal(self) -> str:
        return "".join(self.refusal_parts)

    @property
    def shown_anything(self) -> bool:
        return bool(self.seq or self.pending or self.pending_refusal)

    @property
    def provider_seq(self) -> int | None:
        """The provider event the text so far ends with, when a successor could resume
        the stream right after it."""
        stream = self.upstream
        if not self.response_id or stream is None or stream.response_id != self.response_id:
            return None
        return stream.sequence_number

    def add_text(self, text: str) -> None:
        if self.replayed_text:
            self.replayed_text, text = _past_replay(self.replayed_text, text, self.message_id)
            if not text:
                return
        self.text_parts.append(text)
        self.pending.append(text)
        self._after_add()

    def add_refusal(self, text: str) -> None:
        if self.replayed_refusal:
            self.replayed_refusal, text = _past_replay(self.replayed_refusal, text, self.message_id)
            if not text:
                return
        self.refusal_parts.append(text)
        self.pending_refusal.append(text)
        self._after_add()

    def add_summary(self, text: str) -> None:
        self.summary_parts.append(text)
        self.send(frames.reasoning_frame(self.message_id, text))
        self.frames += 1

    def send(self, frame: dict[str, Any]) -> None:
        (self.sink or publish)(self.message_id, frame)

    def _after_add(self) -> None:
        now = time.monotonic()
        # The first token goes out at once (it ends the thinking timer); later ones wait
        # for the flush window so a stream costs at most ~20 frames per second.
        if self.seq == 0 or (now - self.last_flush) * 1000 >= settings.STREAM_FLUSH_MS:
            self.flush(now)
        if (
            now - self.last_checkpoint >= settings.STREAM_CHECKPOINT_SECONDS
            and self.checkpoints < settings.STREAM_MAX_CHECKPOINTS
        ):
            self.checkpoint_due = True

    def flush(self, now: float | None = None) -> None:
        for kind, buffer in (("text", self.pending), ("refusal", self.pending_refusal)):
            if not buffer:
                continue
            self.seq += 1
            frame = frames.delta_frame(self.message_id, self.seq, "".join(buffer),
                                       refusal=kind == "refusal")
            buffer.clear()
            self.send(frame)
            self.frames += 1
        self.last_flush = now if now is not None else time.monotonic()

    def checkpoint(self, now: float) -> None:
        """Save text up to the last flushed seq, so a reload + resume loses nothing."""
        self._save_checkpoint(self._begin_checkpoint(now))

    async def checkpoint_async(self, db: Db, now: float) -> None:
        """``checkpoint`` from the event loop: frames go out on the loop, the write off it."""
        fields = self._begin_checkpoint(now)
        await db(lambda: self._save_checkpoint(fields))

    def _begin_checkpoint(self, now: float) -> dict[str, Any]:
        self.flush(now)
        self.last_checkpoint = now
        self.checkpoints += 1
        self.checkpoint_due = False
        return {"message_id": self.message_id, "content": self.text, "refusal": self.refusal,
                "seq": self.seq, "reasoning_summary": "".join(self.summary_parts),
                "provider_seq": self.provider_seq, "claim": self.claim}

    @staticmethod
    def _save_checkpoint(fields: dict[str, Any]) -> None:
        saved = lifecycle.checkpoint(**fields)
        _release_db()
        if not saved:
            raise Abandoned()

    def track(self, response_id: str) -> None:
        """Save the id of this answer's background response once (one UPDATE per upstream
        request), so that if this worker dies the next one can resume it."""
        if self._retrack(response_id):
            self._save_response_id()

    async def track_async(self, db: Db, response_id: str) -> None:
        if self._retrack(response_id):
            await db(self._save_response_id)

    def _retrack(self, response_id: str) -> bool:
        if not self.resumable or response_id == self.response_id:
            return False
        self.response_id = response_id
        return True

    async def untrack(self, db: Db) -> None:
        """The resumable first round ended and tool rounds follow, which a successor could
        not resume (it would not have their inputs): the answer is no longer resumable."""
        self.resumable = False
        if self.response_id:
            self.response_id = ""
            await db(self._save_response_id)

    def _save_response_id(self) -> None:
        saved = lifecycle.track_response(
            message_id=self.message_id, claim=self.claim, response_id=self.response_id
        )
        _release_db()
        if not saved:
            raise Abandoned()


def _past_replay(replayed: str, text: str, message_id: int) -> tuple[str, str]:
    """Split a delta of a resumed stream into the part tabs were already shown (still
    ahead in ``replayed``) and the new part: returns (rest of replayed, new text)."""
    seen = min(len(replayed), len(text))
    if text[:seen] != replayed[:seen]:
        # The provider replays a stored response's own events, so this cannot happen
        # short of a provider bug; the saved answer then keeps what tabs were shown.
        logger.error("message %s: the resumed stream differs from the text shown", message_id)
    return replayed[seen:], text[seen:]


@dataclass(frozen=True)
class Resume:
    """Where the previous worker of a background answer left it: the provider's
    response and the last provider event its checkpoint covers (None: none yet)."""

    response_id: str
    starting_after: int | None


@dataclass
class Outcome:
    status: str
    finish_reason: str = ""
    error_code: str = ""
    error_detail: str = ""
    notice: str = ""


@dataclass
class RoundResult:
    finish_reason: str = ""
    usage: Usage | None = None
    service_tier: str = ""
    tool_calls: dict[int, dict[str, Any]] = field(default_factory=dict)
    reasoning_items: list[dict[str, Any]] = field(default_factory=list)


def _backoff(attempt: int, retry_after: float | None) -> float:
    if retry_after is not None:
        return retry_after
    base: float = min(0.5 * 2 ** (attempt - 1), 8.0)
    return base * (1 - 0.25 * random.random())  # jitter spreads a thundering herd


@dataclass
class Runtime:
    """How an answer's coroutine reaches the world outside its event loop: ``db`` runs a
    database call off the loop, ``send`` publishes a frame without blocking, and
    ``sent`` waits until every frame published so far has gone out (before the final
    frame, which the ending's own transaction publishes)."""

    db: Db
    send: Callable[[int, dict[str, Any]], None] | None
    sent: Callable[[], Awaitable[None]]


async def _stream_round(
    profile: ModelProfile,
    request: ChatRequest,
    streamer: Streamer,
    live: LiveReply,
    state: dict[str, Any],
    runtime: Runtime,
    resume: Resume | None = None,
    *,
    budget: TurnBudget | None = None,
) -> RoundResult:
    attempt = 0
    # A background response still reasoning when our connection to it gave out: it is
    # followed again from the last event read, in the same attempt and phase.
    follow: Resume | None = None
    follows = 0  # of the attempt's background response after its connection dropped mid-answer
    stream: llm.AsyncChatStream | None = None
    while True:
        if follow is None:
            attempt += 1
            live.begin_round()
            stream = None  # else the followed one, cancelled if following it fails
            # Whether this attempt made the model produce anything (a followed response
            # keeps what it produced before): a request the provider rejected before any
            # output costs nothing unless the provider reported usage.
            produced = False
            _begin_attempt(state, streamer, request, resumed=resume is not None and attempt == 1)
        result = RoundResult()
        try:
            # A retry sends the request afresh: only the first attempt follows on from
            # the previous worker's stream.
            resuming = follow or (resume if attempt == 1 else None)
            if resuming is not None:
                await _wait_while_queued(profile, resuming.response_id, live,
                                         cancel=stream is None)
            stream = await _open(profile, request, resuming, runtime)
            follow = None
            live.attach(stream)
            streamer.upstream = stream
            async for event in stream:
                # Content is progress of this answer (it renews the lease and restarts the
                # stall clock), reasoning summaries and the usage included; the lifecycle
                # event ``response.created`` is not: silence after it is the model reasoning.
                live.heard(event)
                if live.cancelled.is_set():
                    raise Cancelled()
                if isinstance(event, TextDelta):
                    produced = True
                    live.output()
                    streamer.add_text(event.text)
                elif isinstance(event, RefusalDelta):
                    produced = True
                    live.output()
                    streamer.add_refusal(event.text)
                elif isinstance(event, ReasoningSummaryDelta):
                    produced = True
                    streamer.add_summary(event.text)
                elif isinstance(event, ReasoningItem):
                    produced = True
                    result.reasoning_items.append(event.item)
                elif isinstance(event, ToolCallDelta):
                    produced = True
                    live.output()
                    call = result.tool_calls.setdefault(
                        event.index, {"id": "", "name": "", "arguments": ""}
                    )
                    call["id"] = event.id or call["id"]
                    call["name"] = event.name or call["name"]
                    call["arguments"] += event.arguments
                elif isinstance(event, Finished):
                    produced = True
                    result.finish_reason = event.reason
                elif isinstance(event, UsageReport):
                    result.usage = event.usage
                    result.service_tier = event.service_tier
                elif isinstance(event, ResponseStarted) and stream.background:
                    _note_stored(state, event.response_id)
                    await streamer.track_async(runtime.db, event.response_id)
                if streamer.checkpoint_due:
                    await streamer.checkpoint_async(runtime.db, time.monotonic())
            if live.cancelled.is_set():
                raise Cancelled()
            if live.stalled and live.stalled_waiting:
                raise LLMError(
                    "upstream_error",
                    f"The model sent nothing for {settings.LLM_READ_TIMEOUT} seconds. Try "
                    "again, or pick a lower reasoning effort.",
                )
            if live.stalled:
                raise LLMError("upstream_error", "The model stopped sending mid-answer.")
            if not result.finish_reason:
                raise LLMError(
                    "upstream_error", "The answer ended early: the provider closed the stream.",
                    reason="closed",
                )
            _count_attempt(state, result.usage, unreported=True)
            _count_tier(state, result.service_tier)
            return result
        except Cancelled:
            # Stopped mid-attempt: the model may have reasoned already; estimate (flagged).
            _count_attempt(state, result.usage, unreported=True)
            await _cancel_upstream(profile, stream)
            raise
        except Abandoned:
            # Another worker has the answer now and resumes its response: stop reading
            # it here, and leave it running upstream.
            if stream is not None:
                stream.close()
            raise
        except LLMError as error:
            if follow is None and follows < MAX_FOLLOWS and _dropped_mid_answer(live, stream, error):
                assert stream is not None
                follows += 1
                logger.warning("message %s: the connection to background response %s dropped "
                               "mid-answer; resuming it after event %s", streamer.message_id,
                               stream.response_id, stream.sequence_number)
                follow = Resume(stream.response_id, stream.sequence_number)
                continue
            if follow is None and await _still_reasoning(live, stream, error):
                assert stream is not None
                logger.info("following background response %s again after event %s (%s)",
                            stream.response_id, stream.sequence_number, error.reason)
                follow = Resume(stream.response_id, stream.sequence_number)
                # A pause first, so a connection that keeps failing at once is no busy loop.
                # Stop ends it early; the followed stream then ends as stopped (cancelled
                # upstream and billed as an estimate) in the try above.
                await live.wait_async(FOLLOW_PAUSE_SECONDS)
                continue
            follow = None
            # A failed attempt costs what the provider reported, an estimate if it had
            # started producing output without a usage chunk, and nothing otherwise.
            _count_attempt(state, result.usage, unreported=produced)
            await _cancel_upstream(profile, stream)
            if live.cancelled.is_set():
                raise Cancelled() from error
            if error.retryable and not streamer.shown_anything and attempt < settings.LLM_MAX_ATTEMPTS:
                wait = _backoff(attempt, error.retry_after)
                # A retry is another billed request: it is reserved like any other, and
                # one the budget cannot cover is not sent (the answer fails with the error).
                if wait <= settings.LLM_MAX_RETRY_WAIT and (budget is None or await budget.cover(
                        request.max_completion_tokens, streamer, state, runtime)):
                    logger.info("retrying message %s in %.2fs (%s)", streamer.message_id, wait, error.code)
                    if await live.wait_async(wait):
                        raise Cancelled() from error
                    continue
            if error.code == "rate_limited" and error.retry_after:
                error.detail += f" Try again in about {int(error.retry_after + 0.999)} seconds."
            elif error.code == "rate_limited":
                error.detail += " Try again in a minute."
            raise
        except Exception:
            _count_attempt(state, result.usage, unreported=produced)
            await _cancel_upstream(profile, stream)
            raise


def _dropped_mid_answer(live: LiveReply, stream: llm.AsyncChatStream | None,
                       error: LLMError) -> bool:
    """Whether our connection to a background response gave out after its content began
    (dropped, or closed without the terminal event): the provider runs it on whatever
    happens to the connection, so its stream is resumed right after the last event read
    (``starting_after``) and tabs see one answer, rather than the answer failing."""
    return (
        stream is not None
        and stream.running_upstream
        and error.reason in ("connection", "closed")
        and not live.awaiting_content
        and not live.stalled
        and not live.cancelled.is_set()
    )


async def _wait_while_queued(profile: ModelProfile, response_id: str, live: LiveReply, *,
                             cancel: bool) -> None:
    """Before resuming a background response, poll it while the provider says ``queued``.

    A response can stay ``queued`` for good after a client disconnected right at its
    ``response.created`` (community.openai.com thread 1382584): past
    ``BACKGROUND_QUEUED_DEADLINE_SECONDS`` it is cancelled (here when ``cancel``; else
    the caller cancels the stream it followed) and the answer fails with an error that
    says so. Stop ends the wait at once (the resumed stream then ends as stopped).
    """
    deadline = time.monotonic() + settings.BACKGROUND_QUEUED_DEADLINE_SECONDS
    while True:
        if live.cancelled.is_set():
            return
        try:
            status = await asyncio.to_thread(llm.response_status, profile, response_id)
        except LLMError as error:
            # The resume itself reports what is wrong (gone, unreachable) as it would have.
            logger.info("could not poll background response %s: %s", response_id, error.detail)
            return
        if status != "queued":
            return
        left = deadline - time.monotonic()
        if left <= 0:
            break
        await live.wait_async(min(left, QUEUED_POLL_SECONDS))  # Stop ends it early
    logger.warning("background response %s stayed queued; cancelling it", response_id)
    if cancel:
        with contextlib.suppress(LLMError):
            await asyncio.to_thread(llm.cancel_response, profile, response_id)
    raise LLMError(
        "upstream_error",
        "The model provider never started this answer: it stayed queued for over "
        f"{settings.BACKGROUND_QUEUED_DEADLINE_SECONDS} seconds, so it was cancelled there. "
        "What was shown is kept; send the question again.",
        reason="stuck_queued",
    )


async def _still_reasoning(
    live: LiveReply, stream: llm.AsyncChatStream | None, error: LLMError
) -> bool:
    """Whether a read that gave out before the first content (no byte within the read
    timeout, or the connection dropped) left a background response the provider still
    works on: such a response has no wall limit, and is followed again, not retried."""
    if (
        stream is None
        or not stream.running_upstream
        or error.reason not in ("connection", "timeout")
        or not live.awaiting_content
        or live.stalled
        or live.cancelled.is_set()
    ):
        return False
    try:
        status = await asyncio.to_thread(stream.provider_status)
    except LLMError:
        return False
    return live.keeps_waiting(status)


async def _open(
    profile: ModelProfile, request: ChatRequest, resume: Resume | None, runtime: Runtime
) -> llm.AsyncChatStream:
    if resume is None:
        return await llm.open_stream_async(profile, request, db=runtime.db)
    return await llm.resume_stream_async(profile, resume.response_id,
                                         starting_after=resume.starting_after)


def _note_stored(state: dict[str, Any], response_id: str) -> None:
    """Remember a background response the provider stores, to delete it at the end."""
    stored = state.setdefault("stored_responses", [])
    if response_id not in stored:
        stored.append(response_id)


async def _cancel_upstream(profile: ModelProfile, stream: llm.ChatStream | None) -> None:
    """A background response runs on at the provider, and is billed, whatever happens to
    our connection: one this answer gives up on (Stop, a failure, before a retry) is
    cancelled there. Best effort: the answer's own ending does not wait on it."""
    if stream is None or not stream.running_upstream:
        return
    try:
        # A rare control call, made with the sync client off the loop.
        await asyncio.to_thread(llm.cancel_response, profile, stream.response_id)
    except LLMError as error:
        logger.warning("could not cancel background response %s: %s", stream.response_id,
                       error.detail)


def _delete_stored(profile: ModelProfile, state: dict[str, Any]) -> None:
    """Once the answer ended, delete the background responses it had the provider store:
    with them gone it keeps no more of the conversation than with store=false."""
    for response_id in state.get("stored_responses", ()):
        try:
            llm.delete_response(profile, response_id)
        except LLMError as error:
            logger.info("could not delete background response %s: %s", response_id, error.detail)


def runs_in_background(profile: ModelProfile, effort: str, *,
                       zero_data_retention: bool = False) -> bool:
    """Whether an answer runs as a background response: a Responses-style profile at one
    of ``BACKGROUND_EFFORTS``, the efforts whose answers take long enough that losing
    one to a worker restart would hurt. Never for an org with Zero Data Retention: a
    background response is stored at the provider (store=true, kept about 10 minutes)."""
    return (
        not zero_data_retention
        and profile.api_style == ModelProfile.ApiStyle.RESPONSES
        and bool(effort)
        and effort in settings.BACKGROUND_EFFORTS
    )


def _count_tier(state: dict[str, Any], tier: str) -> None:
    """The turn is billed at a tier's prices only when every round reported that tier;
    mixed or unreported tiers bill at the standard prices, which the reservation covers."""
    seen = state.setdefault("tiers", set())
    seen.add(tier)
    state["service_tier"] = tier if len(seen) == 1 else ""


def _count_attempt(state: dict[str, Any], usage: Usage | None, *, unreported: bool) -> None:
    """Add one upstream attempt's usage to the turn; flag an estimate when the attempt
    made the model work but the provider never reported what it cost."""
    if usage is not None:
        state["usage"] = add_usage(state.get("usage"), usage)
    elif unreported:
        state["usage_missing"] = True
        if state.get("attempts"):
            state.setdefault("unreported", []).append(len(state["attempts"]) - 1)


def _begin_attempt(state: dict[str, Any], streamer: Streamer, request: ChatRequest, *,
                   resumed: bool) -> None:
    """Note an upstream attempt's prompt, cap and where its text starts: one the provider
    reports no usage for is estimated from these (``billable_usage``), so the estimate
    stays within the worst case reserved for that attempt. A resumed stream's usage
    covers the text before the resume too."""
    start = (0, 0) if resumed else (len(streamer.text), len(streamer.refusal))
    state.setdefault("attempts", []).append(
        (state.get("prompt_tokens", 0), request.max_completion_tokens, *start)
    )


@dataclass
class Prepared:
    """What an answer needs from the database before its first request."""

    messages: list[dict[str, Any]]
    prompt_tokens: int
    left_out: int
    reserved: Decimal | None


def _prepare(message: Message) -> Prepared:
    """The prompt (database reads, run off the loop) and the turn's reservation, which
    the claim loaded with the answer."""
    conversation = message.conversation
    assert message.profile is not None
    prompt = build_prompt(
        message,
        profile=message.profile,
        org_message=conversation.organization.developer_message,
        custom=conversation.custom_instructions,
    )
    _release_db()
    reservation = getattr(message, "reservation", None)
    reserved = reservation.amount_usd if reservation is not None else None
    return Prepared(list(prompt.messages), prompt.prompt_tokens, prompt.left_out, reserved)


@dataclass
class TurnBudget:
    """The turn's reservation, which every upstream request (each tool round, each retry)
    must fit before it is sent: charged <= reserved, always.

    ``prompt_tokens`` bounds the prompt of the request about to be sent, everything it
    carries counted (``prompts.request_tokens``); it grows with each tool round.
    """

    message: Message
    reserved: Decimal | None  # None: a turn without a reservation has nothing to keep to
    prompt_tokens: int
    # The answer's snapshotted prices: fixed for the whole turn, so read once.
    prices: Prices = field(init=False)

    def __post_init__(self) -> None:
        self.prices = answer_prices(self.message)

    def committed(self, streamer: Streamer, state: dict[str, Any]) -> Decimal:
        """What settlement would charge if the turn ended now, at the dearest of the
        answer's tiers (the one the provider reports is not known yet)."""
        usage, _ = billable_usage(self.message, streamer, state)
        return max(usage_cost(tier, usage) for tier in self.prices.billable_tiers())

    def worst_case(self, cap: int) -> Decimal:
        return worst_case_cost(self.prices, prompt_tokens=self.prompt_tokens, completion_cap=cap)

    async def cover(self, cap: int, streamer: Streamer, state: dict[str, Any],
                    runtime: Runtime) -> bool:
        """Whether the next request, with completion cap ``cap``, fits the reservation,
        extending the reservation first (against both budgets) when what is left of it
        falls short. False: the request must not be sent."""
        if self.reserved is None:
            return True
        short = self.committed(streamer, state) + self.worst_case(cap) - self.reserved
        if short <= 0:
            return True
        extended = await runtime.db(lambda: _extend_released(self.message.pk, short))
        if extended is None:
            logger.info("message %s: the budget cannot cover another request ($%s short)",
                        self.message.pk, short)
            return False
        self.reserved = extended
        return True

    def affordable_cap(self, streamer: Streamer, state: dict[str, Any]) -> int:
        """The largest completion cap what is left of the reservation covers."""
        assert self.reserved is not None
        left = self.reserved - self.committed(streamer, state) - self.worst_case(0)
        return affordable_completion_tokens(self.prices, left, prompt_tokens=self.prompt_tokens)


def _extend_released(message_id: int, amount: Decimal) -> Decimal | None:
    try:
        return quotas.extend(message_id=message_id, amount=amount)
    finally:
        _release_db()


async def _cap_for_round(budget: TurnBudget, full_cap: int, streamer: Streamer,
                         state: dict[str, Any], runtime: Runtime) -> int:
    """The completion cap of the round about to be sent: the turn's whole cap when the
    budget covers it (reserving more if needed), else what the reservation still covers;
    0 when that is too little for a round worth sending."""
    if await budget.cover(full_cap, streamer, state, runtime):
        return full_cap
    cap = budget.affordable_cap(streamer, state)
    if cap < min(MIN_TOOL_ROUND_TOKENS, full_cap):
        return 0
    assert budget.reserved is not None
    covered = budget.committed(streamer, state) + budget.worst_case(cap) <= budget.reserved
    return cap if covered else 0


async def _generate(
    message: Message, live: LiveReply, streamer: Streamer, state: dict[str, Any],
    runtime: Runtime, resume: Resume | None = None, prepared: Prepared | None = None,
) -> Outcome:
    profile = message.profile
    assert profile is not None
    if prepared is None:
        prepared = await runtime.db(lambda: _prepare(message))
    state["prompt_tokens"] = prepared.prompt_tokens
    state["left_out"] = prepared.left_out
    if prepared.left_out and resume is None:  # a resumed answer's tabs were told already
        streamer.send(frames.context_frame(message.pk, prepared.left_out))
    messages = prepared.messages
    # Chat Completions refuses function tools with reasoning for some models: the answer
    # goes without tools rather than failing, and says so under it.
    tools_off = profile.chat_tools_refused_at(message.reasoning_effort)
    tools = tool_schemas() if profile.accepts("tools") and not tools_off else []
    full_cap = cap = message.max_completion_tokens or profile.max_completion_tokens
    # build_prompt counted the messages' text (prepared.prompt_tokens); the request also
    # carries the tool schemas and any reasoning items.
    budget = TurnBudget(message, prepared.reserved, prepared.prompt_tokens + tools_tokens(tools)
                        + sum(extra_tokens(m) for m in messages))
    # The claim loaded the org with the answer: no query on the loop.
    background = runs_in_background(
        profile, message.reasoning_effort,
        zero_data_retention=message.conversation.organization.zero_data_retention,
    )
    # Only the first round can be resumed by a successor: later ones need its tool calls.
    streamer.resumable = background or resume is not None
    for round_number in range(settings.MAX_TOOL_ROUNDS + 1):
        if round_number or resume is None:  # a resumed first round sends no new request
            # Every round is reserved before it is sent: the turn's reservation held one
            # worst case, and a tool round's prompt carries all the rounds before it.
            cap = await _cap_for_round(budget, full_cap, streamer, state, runtime)
            if not cap and round_number:
                return Outcome(Status.DONE, finish_reason="tool_calls", notice=BUDGET_STOP_NOTICE)
            if not cap:
                return Outcome(Status.FAILED, finish_reason="error", error_code="quota_exceeded",
                               error_detail=PROMPT_OVER_BUDGET)
        request = ChatRequest(
            messages=messages,
            reasoning_effort=message.reasoning_effort,
            max_completion_tokens=cap,
            tools=tools if round_number < settings.MAX_TOOL_ROUNDS else [],
            prompt_cache_key=prompt_cache_key(message.conversation_id),
            background=background,
        )
        result = await _stream_round(profile, request, streamer, live, state, runtime,
                                     resume if round_number == 0 else None, budget=budget)
        # The reasoning behind the round's output: sent back before the tool calls in the
        # next round, and kept with the answer for later turns when this round is the last.
        state["reasoning_items"] = result.reasoning_items
        if result.finish_reason != "tool_calls" or not result.tool_calls:
            outcome = _outcome_for(result.finish_reason, streamer, message)
            if tools_off and outcome.status == Status.DONE:
                outcome.notice = " ".join(filter(None, (outcome.notice, tools_off_notice(profile))))
            return outcome
        await streamer.untrack(runtime.db)
        calls = [result.tool_calls[index] for index in sorted(result.tool_calls)]
        messages.append(
            {
                "role": "assistant",
                "content": None,
                **({"reasoning_items": result.reasoning_items} if result.reasoning_items else {}),
                "tool_calls": [
                    {"id": c["id"], "type": "function",
                     "function": {"name": c["name"], "arguments": c["arguments"]}}
                    for c in calls
                ],
            }
        )
        for call in calls:
            # Tools are bounded local computations; off the loop all the same, so one
            # heavy expression never holds up the other answers' frames.
            output, ok = await asyncio.to_thread(run_tool, call["name"], call["arguments"])
            record = {"name": call["name"], "arguments": call["arguments"], "result": output, "ok": ok}
            state["tool_calls"].append(record)
            streamer.send(frames.tool_frame(message.pk, record))
            messages.append(
                {"role": "tool", "tool_call_id": call["id"], "content": json.dumps(output)}
            )
        budget.prompt_tokens += sum(message_tokens(m) + extra_tokens(m)
                                    for m in messages[-1 - len(calls):])
        # An estimate for a later round's attempt starts from that round's prompt.
        state["prompt_tokens"] = budget.prompt_tokens
    return Outcome(Status.DONE, finish_reason="tool_calls")


def tools_off_notice(profile: ModelProfile) -> str:
    """Said under an answer that went without tools because its model takes them on Chat
    Completions only at reasoning effort none."""
    return (f"Tools were off for this answer: {profile.model} takes tools on Chat Completions "
            "only at reasoning effort none. Choose effort none to use them, or ask an admin to "
            "switch the model profile to the Responses API.")


def _outcome_for(finish_reason: str, streamer: Streamer, message: Message) -> Outcome:
    if finish_reason == "content_filter":
        return Outcome(
            Status.FAILED,
            finish_reason=finish_reason,
            error_code="content_filtered",
            error_detail="The provider's content filter stopped this answer. What was shown "
            "is kept; rephrase the question to try again.",
        )
    if finish_reason == "length" and not streamer.text.strip():
        return Outcome(
            Status.DONE,
            finish_reason=finish_reason,
            notice=(
                f"The model spent its whole budget of {message.max_completion_tokens} tokens "
                "reasoning and wrote no answer. Try a lower reasoning effort, or ask an admin "
                "for a larger completion cap."
            ),
        )
    if finish_reason == "length":
        return Outcome(
            Status.DONE,
            finish_reason=finish_reason,
            notice="The answer reached the completion cap and was cut short.",
        )
    return Outcome(Status.DONE, finish_reason=finish_reason or "stop")


def run_generation(message_id: int) -> None:
    """Claim the answer and stream it to its end, in the calling thread's time: the
    answer runs on the process's event loop while this thread serves its database calls
    (tests, and callers whose data lives in their own transaction). Workers hand answers
    to the loop instead (answers.engine) and return once they are claimed."""
    taken = take(message_id)
    if taken is None:
        return
    from answers.engine import engine

    engine.run_here(*taken)


async def answer(message: Message, resume: Resume | None, runtime: Runtime,
                 prepared: Prepared | None = None) -> None:
    """Stream a claimed answer to exactly one final state (or hand it on when another
    worker took it over). ``prepared``: its prompt, when the claim built it already."""
    live = monitor.register(message.pk)
    streamer = Streamer(message.pk, claim=message.claims, sink=runtime.send)
    state: dict[str, Any] = {"tool_calls": [], "prompt_tokens": 0}
    try:
        if resume is None:
            # The answer is now with the model: say so at once rather than on the monitor's tick.
            live.last_thinking = live.started
            streamer.send(frames.thinking_frame(message.pk, 0))
        else:
            shown = await runtime.db(
                lambda: replay.read_tail(message.pk, after_seq=message.stream_seq)
            )
            _pick_up(message, streamer, live, shown)
            _note_stored(state, resume.response_id)
        outcome = await _generate(message, live, streamer, state, runtime, resume, prepared)
    except Cancelled:
        outcome = Outcome(Status.CANCELLED, finish_reason="cancelled")
    except Abandoned:
        logger.warning("message %s was taken over (reaper or another worker)", message.pk)
        return
    except LLMError as error:
        outcome = Outcome(
            Status.FAILED, error_code=error.code, error_detail=error.detail, finish_reason="error"
        )
    except Exception:
        logger.exception("generation for message %s failed", message.pk)
        outcome = Outcome(
            Status.FAILED,
            error_code="upstream_error",
            error_detail="Something went wrong while answering. Try again.",
            finish_reason="error",
        )
    finally:
        monitor.unregister(message.pk)
    try:
        streamer.flush()
        # The final frame goes out from the ending's transaction: every delta before it.
        await runtime.sent()
        await runtime.db(lambda: _finish_released(message, outcome, streamer, state))
    except Abandoned:
        logger.warning("message %s was taken over (reaper or another worker)", message.pk)
        return
    assert message.profile is not None
    await asyncio.to_thread(_delete_stored, message.profile, state)


def _finish_released(message: Message, outcome: Outcome, streamer: Streamer,
                     state: dict[str, Any]) -> None:
    try:
        finish(message, outcome, streamer, state)
    finally:
        _release_db()


def take(message_id: int) -> tuple[Message, Resume | None, Prepared | None] | None:
    """Claim a queued answer; else take over a background answer whose worker is gone
    (its lease lapsed), to resume it. None when there is nothing to do: the answer is
    ended, or still being streamed by a live worker, whose lease decides."""
    message = claim(message_id)
    resume = None
    if message is None:
        message = lifecycle.reclaim(message_id)
        if message is not None:
            resume = Resume(message.provider_response_id, message.provider_seq)
            logger.warning("resuming message %s (background response %s after event %s)",
                           message.pk, resume.response_id, resume.starting_after)
    if message is None or resume is not None:
        # Nothing to prepare here (a resumed answer picks up from its checkpoint on the
        # loop): hold no connection while the task ends.
        _release_db()
        return None if message is None else (message, resume, None)
    return message, None, _prepare_after_claim(message)  # it releases the connection


def _prepare_after_claim(message: Message) -> Prepared | None:
    """The prompt's reads in the claiming thread, right after the claim: the answer's
    first request then needs no database call from the loop (docs/decisions.md#0032).
    A failure here is left to the loop, which prepares again and ends the answer as it
    would any failed read."""
    try:
        return _prepare(message)
    except Exception:
        logger.warning("preparing message %s after its claim failed; the loop retries",
                       message.pk, exc_info=True)
        _release_db()
        return None


def _pick_up(message: Message, streamer: Streamer, live: LiveReply, shown: replay.Tail) -> None:
    """Continue a background answer where its previous worker left it.

    Tabs were shown the checkpointed text plus any deltas the replay buffer holds beyond
    it (``shown``). The provider's stream resumes right after the checkpoint's event, so
    it sends those deltas' text again: the streamer skips exactly that much and numbers
    its frames after the last buffered one, and tabs see the answer go on without a gap
    or a repeat.
    """
    streamer.text_parts = [message.content, shown.text]
    streamer.refusal_parts = [message.refusal, shown.refusal]
    streamer.summary_parts = [message.reasoning_summary]
    streamer.seq = shown.seq
    streamer.replayed_text, streamer.replayed_refusal = shown.text, shown.refusal
    streamer.response_id = message.provider_response_id
    assert message.started_at is not None
    live.continue_from(
        elapsed=(timezone.now() - message.started_at).total_seconds(), shown=shown.seq > 0
    )
    if shown.seq == 0:
        streamer.send(frames.thinking_frame(message.pk, live.elapsed_ms))
    # Summary deltas carry no sequence number, so tabs may hold some the provider is about
    # to send again: they restart from the checkpointed summary.
    streamer.send(frames.reasoning_frame(message.pk, message.reasoning_summary, replace=True))
    if message.cancel_requested:
        live.cancel()  # Stop arrived while no worker had the answer


def billable_usage(message: Message, streamer: Streamer, state: dict[str, Any]) -> tuple[Usage, bool]:
    """What the turn is billed for, and whether that is an estimate (``_count_attempt``
    keeps the tally per upstream attempt).

    Reported usage (of every round and every failed attempt) is billed as reported. An
    attempt that made the model work without a usage chunk (stopped, dropped mid-answer)
    adds a flagged estimate. A failure with nothing reported costs nothing: a request the
    provider rejected (404, 401, quota, context too long, prompt filter, 5xx after
    retries, a configuration error before any call) is not billed as if the model reasoned.
    """
    usage: Usage | None = state.get("usage")
    if not state.get("usage_missing"):
        return usage or Usage(), False
    attempts = state.get("attempts")
    if attempts:
        # Each unreported attempt on its own (``_begin_attempt``): its prompt, its cap and
        # the text it wrote, which ends where the next attempt's begins.
        text, refusal = streamer.text, streamer.refusal
        ends = [start[2:] for start in attempts[1:]] + [(len(text), len(refusal))]
        for index in state.get("unreported", ()):
            prompt_tokens, cap, text_from, refusal_from = attempts[index]
            text_to, refusal_to = ends[index]
            usage = add_usage(usage, estimate_usage(
                effort=message.reasoning_effort, completion_cap=cap, prompt_tokens=prompt_tokens,
                visible_text=text[text_from:text_to] + refusal[refusal_from:refusal_to],
            ))
        return usage or Usage(), True
    estimate = estimate_usage(
        effort=message.reasoning_effort, completion_cap=message.max_completion_tokens,
        prompt_tokens=state["prompt_tokens"], visible_text=streamer.text + streamer.refusal,
    )
    return add_usage(usage, estimate), True


def finish(message: Message, outcome: Outcome, streamer: Streamer, state: dict[str, Any]) -> None:
    """streaming → final state (answers.lifecycle.finish), once; then the frame."""
    usage, estimated = billable_usage(message, streamer, state)
    lifecycle.finish(message, Ending(
        status=outcome.status,
        finish_reason=outcome.finish_reason,
        content=streamer.text,
        refusal=streamer.refusal,
        reasoning_summary="".join(streamer.summary_parts),
        reasoning_items=state.get("reasoning_items"),
        service_tier=state.get("service_tier", ""),
        seq=streamer.seq,
        error_code=outcome.error_code,
        error_detail=outcome.error_detail or outcome.notice,
        tool_calls=state["tool_calls"],
        history_truncated=state.get("left_out", 0),
        usage=usage,
        usage_estimated=estimated,
    ))
