"""Every server → browser frame of an answer, built in one place.

The final frame comes from the saved row only (``final_frame``), whether the worker
sends it live, the reaper sends it, or a resuming tab gets it from Postgres: the three
can no longer drift apart, and its ``cost_usd`` is always the amount the budget was
charged (the row's ``cost_usd`` is written in the transaction that settles the turn).
"""

from __future__ import annotations

from typing import Any

from conversations.models import Message
from realtime.turns import Turn

Frame = dict[str, Any]


def message_created_frame(turn: Turn, client_id: str) -> Frame:
    assistant = turn.assistant_message
    return {
        "type": "message.created",
        "conversation": turn.conversation.pk,
        "conversation_title": turn.conversation.display_title,
        "user_message": turn.user_message.pk,
        "assistant_message": assistant.pk,
        "client_id": client_id,
        "reasoning_effort": assistant.reasoning_effort,
        "model": assistant.profile.display_name if assistant.profile else assistant.model_name,
        "max_completion_tokens": assistant.max_completion_tokens,
        # Answers waiting for a worker ahead of this one; later changes come as `queued`.
        "ahead": turn.queued_ahead,
    }


def queued_frame(message_id: int, ahead: int) -> Frame:
    """The answer still waits for a worker, behind ``ahead`` others."""
    return {"type": "queued", "message": message_id, "ahead": ahead}


def thinking_frame(message_id: int, elapsed_ms: int) -> Frame:
    return {"type": "thinking", "message": message_id, "elapsed_ms": elapsed_ms}


def delta_frame(message_id: int, seq: int, text: str, *, refusal: bool = False) -> Frame:
    frame: Frame = {"type": "delta", "message": message_id, "seq": seq, "text": text}
    if refusal:
        frame["refusal"] = True
    return frame


def reasoning_frame(message_id: int, text: str, *, replace: bool = False) -> Frame:
    """More of the reasoning summary; with ``replace`` the whole of it so far (a worker
    that resumed an answer restarts the summary from its last checkpoint)."""
    frame: Frame = {"type": "reasoning", "message": message_id, "text": text}
    if replace:
        frame["replace"] = True
    return frame


def context_frame(message_id: int, left_out: int) -> Frame:
    return {"type": "context", "message": message_id, "left_out": left_out}


def tool_frame(message_id: int, record: dict[str, Any]) -> Frame:
    return {"type": "tool", "message": message_id, **record}


def snapshot_frame(message: Message) -> Frame:
    """The saved text whole, for a tab whose missed deltas are gone from the buffer."""
    return {"type": "snapshot", "message": message.pk, "seq": message.stream_seq,
            "text": message.content}


def final_frame(message: Message) -> Frame:
    """The terminal frame of an ended answer: ``done`` (done, cancelled) or ``error``
    (failed, interrupted), with what it cost and whether that cost is an estimate."""
    assert message.status in Message.FINAL_STATUSES, message.status
    frame: Frame = {
        "message": message.pk,
        "seq": message.stream_seq + 1,
        "status": message.status,
        "finish_reason": message.finish_reason,
        # The contract's four counts, plus the prompt tokens written to the cache (their
        # own price line on today's models).
        "usage": {**message.usage_dict(), "cache_write_tokens": message.cache_write_tokens},
        "usage_estimated": message.usage_estimated,
        "cost_usd": f"{message.cost_usd:.6f}",
    }
    if message.status in (Message.Status.FAILED, Message.Status.INTERRUPTED):
        return {
            "type": "error",
            **frame,
            "code": message.error_code or "upstream_error",
            "detail": message.error_detail,
            "partial": bool(message.content),
        }
    frame = {"type": "done", **frame}
    if message.error_detail:
        frame["notice"] = message.error_detail
    if message.refusal:
        frame["refusal"] = message.refusal
    return frame


def error_frame(code: str, detail: str, message_id: int | None = None, *,
                retry_after: int | None = None) -> Frame:
    """A refused command (not an answer's end): the socket stays usable."""
    frame: Frame = {"type": "error", "message": message_id, "code": code, "detail": detail}
    if retry_after is not None:
        frame["retry_after"] = retry_after
    return frame
