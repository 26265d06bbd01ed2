"""Server → browser frames built from saved rows (the worker builds live ones)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from conversations.models import Message

if TYPE_CHECKING:
    from conversations.replies import Turn


def message_created_frame(turn: Turn, client_id: str) -> dict[str, Any]:
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
    }


def final_frame(message: Message) -> dict[str, Any]:
    """The terminal frame for a finished message, as the worker sent it."""
    base: dict[str, Any] = {"message": message.pk, "seq": message.stream_seq + 1}
    if message.status in (Message.Status.FAILED, Message.Status.INTERRUPTED):
        return {
            **base,
            "type": "error",
            "code": message.error_code or "upstream_error",
            "detail": message.error_detail,
            "partial": bool(message.content),
        }
    frame = {
        **base,
        "type": "done",
        "status": message.status,
        "finish_reason": message.finish_reason,
        "usage": message.usage_dict(),
        "usage_estimated": message.usage_estimated,
        "cost_usd": str(message.cost_usd),
    }
    if message.error_detail:
        frame["notice"] = message.error_detail
    if message.refusal:
        frame["refusal"] = message.refusal
    return frame
