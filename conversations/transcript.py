"""The branch on screen as the chat page's script reads it (page state and the
``branch`` frame share this shape)."""

from __future__ import annotations

from typing import Any

from conversations.models import Conversation, Message
from conversations.tree import Versions, branch, versions


def message_state(message: Message, position: Versions | None = None) -> dict[str, Any]:
    state: dict[str, Any] = {
        "id": message.pk,
        "parent": message.parent_id,
        "role": message.role,
        "content": message.content,
        "status": message.status,
        "seq": message.stream_seq,
        "reasoning_effort": message.reasoning_effort,
        # The label the live stream showed (frames.created_frame); the model id when the
        # profile is gone.
        "model": getattr(message, "profile_display_name", None) or message.model_name,
        "finish_reason": message.finish_reason,
        "refusal": message.refusal,
        "reasoning_summary": message.reasoning_summary,
        "error_code": message.error_code,
        "error_detail": message.error_detail,
        "tool_calls": message.tool_calls,
        "left_out": message.history_truncated,
        "usage": message.usage_dict(),
        "usage_estimated": message.usage_estimated,
        "cost_usd": str(message.cost_usd),
        "created_at": message.created_at.isoformat(),
    }
    if position is not None:
        state["versions"] = position.as_dict()
    return state


def transcript(conversation: Conversation) -> list[dict[str, Any]]:
    """Every message of the branch on screen with its sibling position, in three
    queries whatever the conversation's size. ``conversation`` comes from a
    permission-checked fetch."""
    messages = branch(conversation)
    positions = versions(conversation, messages)
    return [message_state(m, positions.get(m.pk)) for m in messages]


def branch_frame(conversation: Conversation) -> dict[str, Any]:
    return {
        "type": "branch",
        "conversation": conversation.pk,
        "leaf": conversation.current_leaf_id,
        "messages": transcript(conversation),
    }
