"""Conversation titles from the model, as Structured Outputs at low effort."""

from __future__ import annotations

import logging

from django.db import connection, transaction

from accounts.models import User
from answers.prompts import message_tokens
from billing.quotas import reserve_title, settle_title
from chatsite.errors import NotFound, Refused
from conversations.access import get_membership_in
from conversations.models import Conversation, Message
from llm import client as llm
from llm.pricing import Prices, usage_cost
from llm.types import ChatRequest, Usage

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


def release_connection() -> None:
    """Give this thread's database connection back to the pool, unless a transaction
    needs it (a caller's atomic block, or a test's)."""
    if not connection.in_atomic_block:
        connection.close()


def needs_title(conversation_id: int) -> bool:
    return Conversation.objects.filter(pk=conversation_id, title_generated=False).exists()


def generate_title(conversation_id: int) -> str | None:
    """Ask the model for a title, reserved and billed like any turn: its worst case is
    held on the conversation's org and owner before the call and settled to the usage
    the provider reported after it (a title request is its own line in usage). Without
    budget for it the conversation keeps its fallback title."""
    conversation = Conversation.objects.select_related("profile", "user").get(pk=conversation_id)
    if conversation.title_generated or conversation.user is None:
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
    prices = Prices.of(profile)  # fixed at reservation, like a turn's
    try:
        with transaction.atomic():
            # Lock order as in start_turn, the sender's row before the usage rows: the
            # reservation's foreign key to the sender is checked at commit, after the usage
            # rows are held, and waited there for a send that held the sender's row and
            # waited for the usage rows (a deadlock, under a burst of new conversations).
            list(User.objects.select_for_update(no_key=True).filter(pk=conversation.user.pk)
                 .values_list("pk", flat=True))
            membership = get_membership_in(conversation.user, conversation.organization_id)
            reservation = reserve_title(
                membership=membership, prices=prices, model_name=profile.model,
                prompt_tokens=sum(message_tokens(m) for m in request.messages),
                completion_cap=request.max_completion_tokens or 0,
            )
    except (Refused, NotFound) as refusal:
        logger.info("no title for conversation %s: %s", conversation_id, refusal)
        return None
    # Hold no pooled database connection through the provider call (seconds, up to
    # LLM_READ_TIMEOUT): a worker's threads share a pool sized for short queries.
    release_connection()
    usage: Usage | None = None
    title = ""
    try:
        reply = llm.complete_json(profile, request)
        usage = reply.usage
        title = str(reply.value.get("title", "")).strip()[:120]
    except llm.LLMError as error:
        # A rejected request costs nothing; an unusable reply costs what was reported.
        usage = error.usage
        logger.info("title for conversation %s failed: %s", conversation_id, error.code)
    finally:
        billed = usage or Usage()
        with transaction.atomic():
            # Lock order as in start_turn, conversation row before usage rows: the other
            # order deadlocked with a send arriving while the title was being settled.
            if title:
                # Race: two finished answers may both ask for a title; the first one wins.
                Conversation.objects.filter(pk=conversation_id, title_generated=False).update(
                    title=title, title_generated=True
                )
            settle_title(reservation_id=reservation.pk, cost=usage_cost(prices, billed),
                         usage=billed.as_dict())
    return title or None
