"""Regenerate: ask a question again, adding a sibling answer (edits are plain sends
with a ``parent``; see ``replies.start_turn``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from answers.replies import start_turn
from chatsite.errors import NotFound
from conversations.access import get_message_for_user
from conversations.models import Message
from realtime.turns import Turn

if TYPE_CHECKING:
    from accounts.models import User


def regenerate_answer(
    *, user: User, message_id: int, reasoning_effort: str | None, client_id: str = "",
    profile_name: str | None = None,
) -> Turn:
    """A new pending answer to the question ``message_id`` answered, as a sibling of it.

    ``profile_name`` asks another enabled, usable model profile of the conversation's org
    for this answer (its history cut, caps, reservation and prices); the conversation's
    default model stays. None: the conversation's model.

    Everything a send goes through applies: rate limit, live-answer limit, one live
    answer per conversation, budget reservation, the org's usable profile.
    """
    answer = get_message_for_user(user, message_id)
    if answer.role != Message.Role.ASSISTANT or answer.parent_id is None:
        raise NotFound("answer")
    question = Message.objects.only("content").get(pk=answer.parent_id)
    return start_turn(
        user=user,
        organization_id=answer.conversation.organization_id,
        conversation_id=answer.conversation_id,
        content=question.content,
        reasoning_effort=reasoning_effort,
        client_id=client_id,
        question_id=question.pk,
        profile_name=profile_name,
    )
