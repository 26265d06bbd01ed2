"""The streaming loop for one assistant answer, testable without Celery.

``run_generation`` claims a pending message, streams it from the provider, publishes
coalesced deltas, checkpoints text a bounded number of times, and ends the message in
exactly one final state. It never writes per token.
"""

from __future__ import annotations

import json
import logging
import random
import time
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db import connection

from billing.pricing import (
    add_usage,
    affordable_completion_tokens,
    estimate_usage,
    usage_cost,
    worst_case_cost,
)
from conversations import frames, lifecycle, llm
from conversations.lifecycle import Abandoned, Ending, answer_prices, claim
from conversations.live import LiveReply, monitor
from conversations.llm.types import (
    ChatRequest,
    Finished,
    LLMError,
    ReasoningItem,
    ReasoningSummaryDelta,
    RefusalDelta,
    TextDelta,
    ToolCallDelta,
    Usage,
    UsageReport,
)
from conversations.models import Message, ModelProfile
from conversations.prompts import build_prompt, message_tokens, prompt_cache_key
from conversations.realtime import publish
from conversations.tools import run_tool, tool_schemas

logger = logging.getLogger(__name__)

Status = Message.Status

# A tool round with a smaller completion budget than this would mostly end in reasoning.
MIN_TOOL_ROUND_TOKENS = 1024


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

    @property
    def text(self) -> str:
        return "".join(self.text_parts)

    @property
    def refusal(self) -> str:
        return "".join(self.refusal_parts)

    @property
    def shown_anything(self) -> bool:
        return bool(self.seq or self.pending or self.pending_refusal)

    def add_text(self, text: str) -> None:
        self.text_parts.append(text)
        self.pending.append(text)
        self._after_add()

    def add_refusal(self, text: str) -> None:
        self.refusal_parts.append(text)
        self.pending_refusal.append(text)
        self._after_add()

    def add_summary(self, text: str) -> None:
        self.summary_parts.append(text)
        publish(self.message_id, frames.reasoning_frame(self.message_id, text))
        self.frames += 1

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
            self.checkpoint(now)

    def flush(self, now: float | None = None) -> None:
        for kind, buffer in (("text", self.pending), ("refusal", self.pending_refusal)):
            if not buffer:
                continue
            self.seq += 1
            frame = frames.delta_frame(self.message_id, self.seq, "".join(buffer),
                                       refusal=kind == "refusal")
            buffer.clear()
            publish(self.message_id, frame)
            self.frames += 1
        self.last_flush = now if now is not None else time.monotonic()

    def checkpoint(self, now: float) -> None:
        """Save text up to the last flushed seq, so a reload + resume loses nothing."""
        self.flush(now)
        self.last_checkpoint = now
        self.checkpoints += 1
        saved = lifecycle.checkpoint(
            message_id=self.message_id, content=self.text, refusal=self.refusal, seq=self.seq
        )
        _release_db()
        if not saved:
            raise Abandoned()


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


def _stream_round(
    profile: ModelProfile,
    request: ChatRequest,
    streamer: Streamer,
    live: LiveReply,
    state: dict[str, Any],
) -> RoundResult:
    attempt = 0
    while True:
        attempt += 1
        result = RoundResult()
        # Whether this attempt made the model produce anything: a request the provider
        # rejected before any output costs nothing unless the provider reported usage.
        produced = False
        live.begin_round()
        try:
            stream = llm.open_stream(profile, request)
            live.attach(stream)
            for event in stream:
                # Any event is progress of this answer (it renews the lease and keeps the
                # stall detector quiet), including reasoning summaries and the usage chunk.
                live.touch()
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
            if live.cancelled.is_set():
                raise Cancelled()
            if live.stalled:
                raise LLMError("upstream_error", "The model stopped sending mid-answer.")
            if not result.finish_reason:
                raise LLMError(
                    "upstream_error", "The answer ended early: the provider closed the stream."
                )
            _count_attempt(state, result.usage, unreported=True)
            _count_tier(state, result.service_tier)
            return result
        except Cancelled:
            # Stopped mid-attempt: the model may have reasoned already; estimate (flagged).
            _count_attempt(state, result.usage, unreported=True)
            raise
        except LLMError as error:
            # A failed attempt costs what the provider reported, an estimate if it had
            # started producing output without a usage chunk, and nothing otherwise.
            _count_attempt(state, result.usage, unreported=produced)
            if live.cancelled.is_set():
                raise Cancelled() from error
            if error.retryable and not streamer.shown_anything and attempt < settings.LLM_MAX_ATTEMPTS:
                wait = _backoff(attempt, error.retry_after)
                if wait <= settings.LLM_MAX_RETRY_WAIT:
                    logger.info("retrying message %s in %.2fs (%s)", streamer.message_id, wait, error.code)
                    if live.wait(wait):
                        raise Cancelled() from error
                    continue
            if error.code == "rate_limited" and error.retry_after:
                error.detail += f" Try again in about {int(error.retry_after + 0.999)} seconds."
            elif error.code == "rate_limited":
                error.detail += " Try again in a minute."
            raise
        except Exception:
            _count_attempt(state, result.usage, unreported=produced)
            raise


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


def _generate(message: Message, live: LiveReply, streamer: Streamer, state: dict[str, Any]) -> Outcome:
    conversation = message.conversation
    profile = message.profile
    assert profile is not None
    prompt = build_prompt(
        message,
        profile=profile,
        org_message=conversation.organization.developer_message,
        custom=conversation.custom_instructions,
    )
    _release_db()
    state["prompt_tokens"] = prompt.prompt_tokens
    state["left_out"] = prompt.left_out
    if prompt.left_out:
        publish(message.pk, frames.context_frame(message.pk, prompt.left_out))
    messages = list(prompt.messages)
    tools = tool_schemas() if profile.accepts("tools") else []
    reserved = _reserved_amount(message)
    full_cap = cap = message.max_completion_tokens or profile.max_completion_tokens
    for round_number in range(settings.MAX_TOOL_ROUNDS + 1):
        if round_number and reserved is not None:
            # Each tool round is another billed call under the turn's one reservation, which
            # holds a single worst case: a later round gets the completion budget still
            # unspent (a whole fresh cap never fits), and tools stop when too little is left.
            prompt_tokens = sum(message_tokens(m) for m in messages)
            prices = answer_prices(message)
            so_far = usage_cost(prices, state.get("usage") or Usage())
            left = reserved - so_far - worst_case_cost(
                prices, prompt_tokens=prompt_tokens, completion_cap=0
            )
            cap = min(cap, affordable_completion_tokens(prices, left))
            if cap <= 0 or cap < min(MIN_TOOL_ROUND_TOKENS, full_cap):
                return Outcome(
                    Status.DONE, finish_reason="tool_calls",
                    notice="Tool use stopped: another step would exceed this turn's budget reservation.",
                )
        request = ChatRequest(
            messages=messages,
            reasoning_effort=message.reasoning_effort,
            max_completion_tokens=cap,
            tools=tools if round_number < settings.MAX_TOOL_ROUNDS else [],
            prompt_cache_key=prompt_cache_key(conversation.pk),
        )
        result = _stream_round(profile, request, streamer, live, state)
        # The reasoning behind the round's output: sent back before the tool calls in the
        # next round, and kept with the answer for later turns when this round is the last.
        state["reasoning_items"] = result.reasoning_items
        if result.finish_reason != "tool_calls" or not result.tool_calls:
            return _outcome_for(result.finish_reason, streamer, message)
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
            output, ok = run_tool(call["name"], call["arguments"])
            record = {"name": call["name"], "arguments": call["arguments"], "result": output, "ok": ok}
            state["tool_calls"].append(record)
            publish(message.pk, frames.tool_frame(message.pk, record))
            messages.append(
                {"role": "tool", "tool_call_id": call["id"], "content": json.dumps(output)}
            )
    return Outcome(Status.DONE, finish_reason="tool_calls")


def _reserved_amount(message: Message) -> Decimal | None:
    from billing.models import Reservation

    amount = Reservation.objects.filter(message_id=message.pk).values_list("amount_usd", flat=True).first()
    _release_db()
    return amount


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
    message = claim(message_id)
    _release_db()
    if message is None:
        return
    live = monitor.register(message.pk)
    # The answer is now with the model: say so at once rather than on the monitor's tick.
    live.last_thinking = live.started
    publish(message.pk, frames.thinking_frame(message.pk, 0))
    streamer = Streamer(message.pk)
    state: dict[str, Any] = {"tool_calls": [], "prompt_tokens": 0}
    try:
        outcome = _generate(message, live, streamer, state)
    except Cancelled:
        outcome = Outcome(Status.CANCELLED, finish_reason="cancelled")
    except Abandoned:
        logger.warning("message %s was taken over by the reaper", message.pk)
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
        finish(message, outcome, streamer, state)
    except Abandoned:
        logger.warning("message %s was taken over by the reaper", message.pk)
    finally:
        _release_db()


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
    estimate = estimate_usage(
        effort=message.reasoning_effort, completion_cap=message.max_completion_tokens,
        prompt_tokens=state["prompt_tokens"], visible_text=streamer.text + streamer.refusal,
    )
    return add_usage(usage, estimate), True


def finish(message: Message, outcome: Outcome, streamer: Streamer, state: dict[str, Any]) -> None:
    """streaming → final state (conversations.lifecycle.finish), once; then the frame."""
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
