"""What the model is sent: instructions, then as much recent history as fits."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.utils.crypto import salted_hmac

from conversations.models import Message, ModelProfile
from conversations.tokens import count_tokens
from conversations.tree import path_to

# Reasoning models answer in plain text unless the developer message starts with this.
FORMATTING_LINE = "Formatting re-enabled"
PER_MESSAGE_OVERHEAD = 3
PRIMING_TOKENS = 3
SAFETY_MARGIN = 256


@dataclass
class Prompt:
    messages: list[dict[str, Any]]
    prompt_tokens: int
    left_out: int


def prompt_cache_key(conversation_id: int) -> str:
    """Stable per conversation, so its growing prefix keeps hitting the provider's cache;
    keyed with SECRET_KEY so the provider does not learn our conversation ids."""
    return "conv-" + salted_hmac("conversations.prompt_cache_key", str(conversation_id)).hexdigest()[:32]


def instructions_for(*, org_message: str, custom: str) -> str:
    parts = [FORMATTING_LINE, org_message.strip(), custom.strip()]
    return "\n\n".join(part for part in parts if part)


def message_tokens(message: dict[str, Any]) -> int:
    return PER_MESSAGE_OVERHEAD + count_tokens(str(message.get("content") or ""))


def _reasoning_items(message: Message, profile: ModelProfile) -> list[dict[str, Any]]:
    """The encrypted reasoning a Responses-style model produced for this answer, when the
    same model answers now: another model (a regenerate with a different profile, an
    import) cannot read the blob and the provider would refuse the whole request."""
    if (
        profile.api_style != ModelProfile.ApiStyle.RESPONSES
        or message.role != Message.Role.ASSISTANT
        or message.model_name != profile.model
    ):
        return []
    return list(message.reasoning_items or [])


def _history_turns(assistant: Message, profile: ModelProfile) -> list[list[dict[str, Any]]]:
    """Earlier messages of the answer's own branch (other versions are never sent),
    grouped into turns (a user message and the answer after it).

    An answer's reasoning items ride on its own dict, so trimming whole turns never
    sends a reasoning item without the answer it led to (the provider refuses that)."""
    earlier = [
        m for m in path_to(assistant)[:-1]
        if not (m.role == Message.Role.ASSISTANT and m.content == "")
    ]
    turns: list[list[dict[str, Any]]] = []
    for message in earlier:
        item: dict[str, Any] = {"role": message.role, "content": message.content}
        reasoning = _reasoning_items(message, profile)
        if reasoning:
            item["reasoning_items"] = reasoning
        if message.role == Message.Role.USER or not turns:
            turns.append([item])
        else:
            turns[-1].append(item)
    return turns


def build_prompt(
    assistant: Message, *, profile: ModelProfile, org_message: str, custom: str
) -> Prompt:
    """Instructions first, then the newest turns that fit the context window.

    The budget leaves room for the turn's whole completion cap (visible + reasoning
    tokens count against the window) plus a margin for chat formatting overhead.
    """
    instructions = {
        "role": profile.instruction_role,
        "content": instructions_for(org_message=org_message, custom=custom),
    }
    budget = (
        profile.context_window
        - (assistant.max_completion_tokens or profile.max_completion_tokens)
        - SAFETY_MARGIN
        - PRIMING_TOKENS
    )
    used = message_tokens(instructions)
    turns = _history_turns(assistant, profile)
    kept: list[list[dict[str, Any]]] = []
    for turn in reversed(turns):
        cost = sum(message_tokens(item) for item in turn)
        # The newest turn (the question being answered) is always sent; if even that
        # does not fit, the provider's context_length_exceeded says so plainly.
        if kept and used + cost > budget:
            break
        kept.append(turn)
        used += cost
    left_out = len(turns) - len(kept)
    messages = [instructions] + [item for turn in reversed(kept) for item in turn]
    return Prompt(messages=messages, prompt_tokens=used + PRIMING_TOKENS, left_out=left_out)


def estimate_prompt_tokens(
    *, conversation_id: int | None, content: str, profile: ModelProfile, org_message: str,
    custom: str, completion_cap: int,
) -> int:
    """An upper bound on the next request's prompt tokens, for the budget reservation."""
    total = PRIMING_TOKENS + message_tokens({"content": instructions_for(org_message=org_message, custom=custom)})
    total += message_tokens({"content": content})
    if conversation_id is not None:
        for text in Message.objects.filter(conversation_id=conversation_id).values_list("content", flat=True):
            total += message_tokens({"content": text})
    return min(total, max(profile.context_window - completion_cap, 0)) + SAFETY_MARGIN
