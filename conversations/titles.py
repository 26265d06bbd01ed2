"""Conversation titles from the model, as Structured Outputs at low effort."""

from __future__ import annotations

import logging

from django.db import transaction

from conversations import llm
from conversations.llm.types import ChatRequest
from conversations.models import Conversation, Message

logger = logging.getLogger(__name__)

TITLE_SCHEMA = {
    "type": "json_schema",
    "json_schema": {
        "name": "conversation_title",
        "strict": True,
        "schema": {
            "type": "object",
            "properties": {"title": {"type": "string", "description": "At most 8 words."}},
            "required": ["title"],
            "additionalProperties": False,
        },
    },
}
TITLE_MAX_COMPLETION_TOKENS = 2000


def fallback_title(text: str) -> str:
    words = text.split()
    title = " ".join(words[:8])
    return title[:80] + ("…" if len(words) > 8 or len(title) > 80 else "")


def maybe_schedule_title(message_id: int) -> None:
    from conversations.tasks import generate_title

    message = Message.objects.select_related("conversation").get(pk=message_id)
    if not message.conversation.title_generated:
        generate_title.delay(message.conversation_id)


def generate_title(conversation_id: int) -> str | None:
    conversation = Conversation.objects.select_related("profile").get(pk=conversation_id)
    if conversation.title_generated:
        return None
    profile = conversation.profile
    first = conversation.messages.filter(role=Message.Role.USER).order_by("id").first()
    if first is None or not profile.accepts("response_format"):
        return None
    request = ChatRequest(
        messages=[
            {"role": profile.instruction_role, "content": "Give this conversation a short title."},
            {"role": "user", "content": first.content[:4000]},
        ],
        reasoning_effort="low" if "low" in (profile.reasoning_efforts or []) else profile.default_effort,
        max_completion_tokens=min(TITLE_MAX_COMPLETION_TOKENS, profile.max_output_tokens),
        response_format=TITLE_SCHEMA,
        stream=False,
    )
    try:
        value = llm.complete_json(profile, request)
    except llm.LLMError as error:
        logger.info("title for conversation %s failed: %s", conversation_id, error.code)
        return None
    title = str(value.get("title", "")).strip()[:120]
    if not title:
        return None
    with transaction.atomic():
        # Race: two finished answers may both ask for a title; the first one wins.
        Conversation.objects.filter(pk=conversation_id, title_generated=False).update(
            title=title, title_generated=True
        )
    return title
