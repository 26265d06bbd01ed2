"""One round of an answer: its upstream request read to the end, with the retries,
follows and resumes that may take.

A retry sends the request afresh, only before any text was shown and only when the
budget covers it. A background response (Responses API, stored at the provider) runs on
whatever happens to our connection: one whose connection dropped is followed again from
the last event read rather than failed, and one this answer gives up on is cancelled
there.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from dataclasses import dataclass

from django.conf import settings

from answers.budget import TurnBudget
from answers.lifecycle import Abandoned
from answers.live import LiveReply
from answers.relay import Relay
from answers.runtime import Runtime
from llm import client as llm
from llm.models import ModelProfile
from llm.stream import AsyncChatStream, open_stream_async, resume_stream_async
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
    UsageReport,
)

logger = logging.getLogger(__name__)

# Before following a still-reasoning background response again after its connection gave out.
FOLLOW_PAUSE_SECONDS = 1.0
# Resumes of one background response after its connection dropped mid-answer: each picks
# up after the last event read, so a few ride out a flaky network; a provider that keeps
# dropping the connection ends the answer instead of looping.
MAX_FOLLOWS = 5
# How often a background response the provider still has ``queued`` is polled before
# it is resumed (a GET each: cheap, and its deadline is a setting).
QUEUED_POLL_SECONDS = 2.0


class Cancelled(Exception):
    """Stop arrived for the answer."""


@dataclass(frozen=True)
class Resume:
    """Where the previous worker of a background answer left it: the provider's
    response and the last provider event its checkpoint covers (None: none yet)."""

    response_id: str
    starting_after: int | None


def _backoff(attempt: int, retry_after: float | None) -> float:
    if retry_after is not None:
        return retry_after
    base: float = min(0.5 * 2 ** (attempt - 1), 8.0)
    return base * (1 - 0.25 * random.random())  # jitter spreads a thundering herd


async def stream_round(
    profile: ModelProfile,
    request: ChatRequest,
    relay: Relay,
    live: LiveReply,
    runtime: Runtime,
    resume: Resume | None = None,
    *,
    budget: TurnBudget | None = None,
) -> None:
    """Read the round's stream into the draft to its finish (``draft.finish_reason``,
    ``draft.calls``), or raise: Cancelled (Stop), Abandoned (another worker has the
    answer), LLMError (the answer fails with it)."""
    draft = relay.draft
    attempt = 0
    # A background response still reasoning when our connection to it gave out: it is
    # followed again from the last event read, in the same attempt and phase.
    follow: Resume | None = None
    follows = 0  # of the attempt's background response after its connection dropped mid-answer
    stream: AsyncChatStream | None = None
    while True:
        if follow is None:
            attempt += 1
            live.begin_round()
            stream = None  # else the followed one, cancelled if following it fails
            # Whether this attempt made the model produce anything (a followed response
            # keeps what it produced before): a request the provider rejected before any
            # output costs nothing unless the provider reported usage.
            produced = False
            draft.begin_attempt(request.max_completion_tokens,
                                resumed=resume is not None and attempt == 1)
        draft.begin_read()
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
            relay.upstream = stream
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
                    relay.add_text(event.text)
                elif isinstance(event, RefusalDelta):
                    produced = True
                    live.output()
                    relay.add_refusal(event.text)
                elif isinstance(event, ReasoningSummaryDelta):
                    produced = True
                    relay.add_summary(event.text)
                elif isinstance(event, ReasoningItem):
                    produced = True
                    draft.round_reasoning.append(event.item)
                elif isinstance(event, ToolCallDelta):
                    produced = True
                    live.output()
                    draft.add_call(event)
                elif isinstance(event, Finished):
                    produced = True
                    draft.finish_reason = event.reason
                elif isinstance(event, UsageReport):
                    draft.round_usage = event.usage
                    draft.round_tier = event.service_tier
                elif isinstance(event, ResponseStarted) and stream.background:
                    draft.note_stored(event.response_id)
                    await relay.track(runtime.db, event.response_id)
                if relay.checkpoint_due:
                    await relay.checkpoint(runtime.db, time.monotonic())
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
            if not draft.finish_reason:
                raise LLMError(
                    "upstream_error", "The answer ended early: the provider closed the stream.",
                    reason="closed",
                )
            draft.count_attempt(unreported=True)
            draft.end_round()
            return
        except Cancelled:
            # Stopped mid-attempt: the model may have reasoned already; estimate (flagged).
            draft.count_attempt(unreported=True)
            await cancel_upstream(profile, stream)
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
                               "mid-answer; resuming it after event %s", draft.message_id,
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
            draft.count_attempt(unreported=produced)
            await cancel_upstream(profile, stream)
            if live.cancelled.is_set():
                raise Cancelled() from error
            if error.retryable and not relay.shown_anything and attempt < settings.LLM_MAX_ATTEMPTS:
                wait = _backoff(attempt, error.retry_after)
                # A retry is another billed request: it is reserved like any other, and
                # one the budget cannot cover is not sent (the answer fails with the error).
                if wait <= settings.LLM_MAX_RETRY_WAIT and (budget is None or await budget.cover(
                        request.max_completion_tokens, draft, runtime)):
                    logger.info("retrying message %s in %.2fs (%s)", draft.message_id, wait,
                                error.code)
                    if await live.wait_async(wait):
                        raise Cancelled() from error
                    continue
            if error.code == "rate_limited" and error.retry_after:
                error.detail += f" Try again in about {int(error.retry_after + 0.999)} seconds."
            elif error.code == "rate_limited":
                error.detail += " Try again in a minute."
            raise
        except Exception:
            draft.count_attempt(unreported=produced)
            await cancel_upstream(profile, stream)
            raise


def _dropped_mid_answer(live: LiveReply, stream: AsyncChatStream | None,
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
    live: LiveReply, stream: AsyncChatStream | None, error: LLMError
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
) -> AsyncChatStream:
    if resume is None:
        return await open_stream_async(profile, request, db=runtime.db)
    return await resume_stream_async(profile, resume.response_id,
                                     starting_after=resume.starting_after)


async def cancel_upstream(profile: ModelProfile, stream: AsyncChatStream | None) -> None:
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
