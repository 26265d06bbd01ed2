"""One assistant answer, from its claim to exactly one final state, testable without Celery.

``take`` claims a pending message (or takes over a background answer whose worker is
gone) and prepares its prompt; ``answer`` runs it on the worker's event loop
(answers.engine): each round streams from the provider (``answers.rounds``) into the
answer's :class:`AnswerDraft`, whose text ``answers.relay`` publishes as coalesced
deltas and checkpoints a bounded number of times (never per token); tool rounds follow
while the model calls tools and the budget covers them (``answers.budget``); then
``answers.lifecycle.finish`` settles the draft.

A high-effort Responses answer runs as a background response at the provider: its id is
saved once and each checkpoint also saves the provider's sequence number, so when the
worker dies mid-answer the next one (the redelivered task, or the reaper's hand-back)
takes the answer over and resumes the provider's stream right after the checkpoint.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.utils import timezone

from answers import lifecycle
from answers.budget import TurnBudget
from answers.draft import AnswerDraft
from answers.lifecycle import Abandoned, claim
from answers.live import LiveReply, monitor
from answers.prompts import (
    build_prompt,
    extra_tokens,
    message_tokens,
    prompt_cache_key,
    tools_tokens,
)
from answers.relay import Relay
from answers.rounds import Cancelled, Resume, stream_round
from answers.runtime import Runtime, release_db
from conversations.models import Message
from llm import client as llm
from llm.models import ModelProfile
from llm.tools import run_tool, tool_schemas
from llm.types import ChatRequest, LLMError
from realtime import frames, replay

logger = logging.getLogger(__name__)

Status = Message.Status

# Under an answer whose next tool round the budget could not cover (the answer keeps what
# the rounds before it wrote).
BUDGET_STOP_NOTICE = "Stopped before another tool step: budget reached"
PROMPT_OVER_BUDGET = (
    "Your budget cannot cover this question with the conversation's history and tools. "
    "Start a new conversation, or use “Request more” to ask an admin."
)

# --- Before the loop: the claim and the prompt ------------------------------------------------


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
    release_db()
    reservation = getattr(message, "reservation", None)
    reserved = reservation.amount_usd if reservation is not None else None
    return Prepared(list(prompt.messages), prompt.prompt_tokens, prompt.left_out, reserved)


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
        release_db()
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
        release_db()
        return None


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


# --- The answer on the loop -------------------------------------------------------------------


async def answer(message: Message, resume: Resume | None, runtime: Runtime,
                 prepared: Prepared | None = None) -> None:
    """Stream a claimed answer to exactly one final state (or hand it on when another
    worker took it over). ``prepared``: its prompt, when the claim built it already."""
    live = monitor.register(message.pk)
    draft = AnswerDraft(message.pk, reasoning_effort=message.reasoning_effort)
    relay = Relay(draft, claim=message.claims, sink=runtime.send)
    try:
        if resume is None:
            # The answer is now with the model: say so at once rather than on the monitor's tick.
            live.last_thinking = live.started
            relay.send(frames.thinking_frame(message.pk, 0))
        else:
            shown = await runtime.db(
                lambda: replay.read_tail(message.pk, after_seq=message.stream_seq)
            )
            _pick_up(message, relay, live, shown)
            draft.note_stored(resume.response_id)
        await _generate(message, live, relay, runtime, resume, prepared)
    except Cancelled:
        draft.end(Status.CANCELLED, finish_reason="cancelled")
    except Abandoned:
        logger.warning("message %s was taken over (reaper or another worker)", message.pk)
        return
    except LLMError as error:
        draft.end(Status.FAILED, finish_reason="error", error_code=error.code,
                  error_detail=error.detail)
    except Exception:
        logger.exception("generation for message %s failed", message.pk)
        draft.end(Status.FAILED, finish_reason="error", error_code="upstream_error",
                  error_detail="Something went wrong while answering. Try again.")
    finally:
        # No tick sends for this answer from here on, however it ended (cancelled
        # coroutines included); the final flush below still sends what is pending.
        relay.stop()
        monitor.unregister(message.pk)
    try:
        relay.flush()
        # The final frame goes out from the ending's transaction: every delta before it.
        await runtime.sent()
        await runtime.db(lambda: _finish_released(message, draft))
    except Abandoned:
        logger.warning("message %s was taken over (reaper or another worker)", message.pk)
        return
    assert message.profile is not None
    await asyncio.to_thread(_delete_stored, message.profile, draft.stored_responses)


async def _generate(
    message: Message, live: LiveReply, relay: Relay, runtime: Runtime,
    resume: Resume | None = None, prepared: Prepared | None = None,
) -> None:
    """The answer's rounds: the first, then one more per batch of tool calls while the
    model calls tools, up to ``MAX_TOOL_ROUNDS``; ends the draft."""
    draft = relay.draft
    profile = message.profile
    assert profile is not None
    if prepared is None:
        prepared = await runtime.db(lambda: _prepare(message))
    draft.prompt_tokens = prepared.prompt_tokens
    draft.history_left_out = prepared.left_out
    if prepared.left_out and resume is None:  # a resumed answer's tabs were told already
        relay.send(frames.context_frame(message.pk, prepared.left_out))
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
    relay.resumable = background or resume is not None
    for round_number in range(settings.MAX_TOOL_ROUNDS + 1):
        if round_number or resume is None:  # a resumed first round sends no new request
            # Every round is reserved before it is sent: the turn's reservation held one
            # worst case, and a tool round's prompt carries all the rounds before it.
            cap = await budget.cap_for_round(full_cap, draft, runtime)
            if not cap and round_number:
                draft.end(Status.DONE, finish_reason="tool_calls", notice=BUDGET_STOP_NOTICE)
                return
            if not cap:
                draft.end(Status.FAILED, finish_reason="error", error_code="quota_exceeded",
                          error_detail=PROMPT_OVER_BUDGET)
                return
        request = ChatRequest(
            messages=messages,
            reasoning_effort=message.reasoning_effort,
            max_completion_tokens=cap,
            tools=tools if round_number < settings.MAX_TOOL_ROUNDS else [],
            prompt_cache_key=prompt_cache_key(message.conversation_id),
            background=background,
        )
        await stream_round(profile, request, relay, live, runtime,
                           resume if round_number == 0 else None, budget=budget)
        if draft.finish_reason != "tool_calls" or not draft.calls:
            _end_as_finished(draft, message)
            if tools_off and draft.status == Status.DONE:
                draft.notice = " ".join(filter(None, (draft.notice, tools_off_notice(profile))))
            return
        await relay.untrack(runtime.db)
        calls = draft.ordered_calls()
        # The reasoning behind the round's output goes back before its tool calls.
        messages.append(
            {
                "role": "assistant",
                "content": None,
                **({"reasoning_items": draft.reasoning_items} if draft.reasoning_items else {}),
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
            draft.tool_calls.append(record)
            relay.send(frames.tool_frame(message.pk, record))
            messages.append(
                {"role": "tool", "tool_call_id": call["id"], "content": json.dumps(output)}
            )
        budget.prompt_tokens += sum(message_tokens(m) + extra_tokens(m)
                                    for m in messages[-1 - len(calls):])
        # An estimate for a later round's attempt starts from that round's prompt.
        draft.prompt_tokens = budget.prompt_tokens
    draft.end(Status.DONE, finish_reason="tool_calls")


def tools_off_notice(profile: ModelProfile) -> str:
    """Said under an answer that went without tools because its model takes them on Chat
    Completions only at reasoning effort none."""
    return (f"Tools were off for this answer: {profile.model} takes tools on Chat Completions "
            "only at reasoning effort none. Choose effort none to use them, or ask an admin to "
            "switch the model profile to the Responses API.")


def _end_as_finished(draft: AnswerDraft, message: Message) -> None:
    """End an answer whose last stream finished, as its finish reason says."""
    finish_reason = draft.finish_reason
    if finish_reason == "content_filter":
        draft.end(
            Status.FAILED,
            finish_reason=finish_reason,
            error_code="content_filtered",
            error_detail="The provider's content filter stopped this answer. What was shown "
            "is kept; rephrase the question to try again.",
        )
    elif finish_reason == "length" and not draft.text.strip():
        draft.end(
            Status.DONE,
            finish_reason=finish_reason,
            notice=(
                f"The model spent its whole budget of {message.max_completion_tokens} tokens "
                "reasoning and wrote no answer. Try a lower reasoning effort, or ask an admin "
                "for a larger completion cap."
            ),
        )
    elif finish_reason == "length":
        draft.end(Status.DONE, finish_reason=finish_reason,
                  notice="The answer reached the completion cap and was cut short.")
    else:
        draft.end(Status.DONE, finish_reason=finish_reason or "stop")


def _pick_up(message: Message, relay: Relay, live: LiveReply, shown: replay.Tail) -> None:
    """Continue a background answer where its previous worker left it.

    Tabs were shown the checkpointed text plus any deltas the replay buffer holds beyond
    it (``shown``). The provider's stream resumes right after the checkpoint's event, so
    it sends those deltas' text again: the relay skips exactly that much and numbers
    its frames after the last buffered one, and tabs see the answer go on without a gap
    or a repeat.
    """
    draft = relay.draft
    draft.text_parts = [message.content, shown.text]
    draft.refusal_parts = [message.refusal, shown.refusal]
    draft.summary_parts = [message.reasoning_summary]
    draft.seq = shown.seq
    draft.response_id = message.provider_response_id
    relay.replayed_text, relay.replayed_refusal = shown.text, shown.refusal
    assert message.started_at is not None
    live.continue_from(
        elapsed=(timezone.now() - message.started_at).total_seconds(), shown=shown.seq > 0
    )
    if shown.seq == 0:
        relay.send(frames.thinking_frame(message.pk, live.elapsed_ms))
    # Summary deltas carry no sequence number, so tabs may hold some the provider is about
    # to send again: they restart from the checkpointed summary.
    relay.send(frames.reasoning_frame(message.pk, message.reasoning_summary, replace=True))
    if message.cancel_requested:
        live.cancel()  # Stop arrived while no worker had the answer


# --- After the loop -----------------------------------------------------------------------------


def _finish_released(message: Message, draft: AnswerDraft) -> None:
    try:
        lifecycle.finish(message, draft)
    finally:
        release_db()


def _delete_stored(profile: ModelProfile, response_ids: list[str]) -> None:
    """Once the answer ended, delete the background responses it had the provider store:
    with them gone it keeps no more of the conversation than with store=false."""
    for response_id in response_ids:
        try:
            llm.delete_response(profile, response_id)
        except LLMError as error:
            logger.info("could not delete background response %s: %s", response_id, error.detail)
