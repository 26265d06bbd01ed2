"""What the model is sent: instructions, then as much recent history as fits."""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from django.utils.crypto import salted_hmac

from conversations.models import Message
from conversations.tree import PathMessage, path_to
from llm.models import ModelProfile
from llm.tokens import PER_MESSAGE_OVERHEAD, count_tokens
from llm.tokens import message_tokens as text_tokens
from llm.tools import tool_schemas

# Reasoning models answer in plain text unless the developer message starts with this.
FORMATTING_LINE = "Formatting re-enabled"
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
    return text_tokens(str(message.get("content") or ""))


# A piece of a message counted on its own can come out a token shorter than the same text
# run together with its neighbours, as the provider counts it: one token of slack per
# piece keeps a sum of pieces an upper bound.
PIECE_SLACK = 1


def _as_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"))


def request_tokens(messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None) -> int:
    """An upper bound on the prompt tokens of one request (o200k_base), for its budget
    reservation: everything the request carries, not only the messages' text.

    Tool schemas count as their JSON (longer than the provider's own rendering of them),
    each tool call as an input item of its own (the Responses API sends it as one), and
    reasoning items as the JSON sent back, encrypted content included (its ciphertext
    tokenizes longer than the reasoning it holds).
    """
    return PRIMING_TOKENS + tools_tokens(tools) + sum(
        message_tokens(message) + extra_tokens(message) for message in messages
    )


def tools_tokens(tools: list[dict[str, Any]] | None) -> int:
    """The tool schemas' share of ``request_tokens``."""
    if not tools:
        return 0
    return PER_MESSAGE_OVERHEAD + _schema_tokens(_as_json(tools)) + PIECE_SLACK


@functools.lru_cache(maxsize=16)
def _schema_tokens(schemas: str) -> int:
    # The same few tool sets go with every turn: counted once per process.
    return count_tokens(schemas)


def extra_tokens(message: dict[str, Any]) -> int:
    """A message's share of ``request_tokens`` beyond ``message_tokens`` (its text, which
    the provider counts exactly so): its name, tool calls and reasoning items."""
    total = 0
    if message.get("name"):
        total += count_tokens(str(message["name"])) + PIECE_SLACK
    for call in message.get("tool_calls") or ():
        function = call.get("function") or {}
        total += PER_MESSAGE_OVERHEAD + 3 * PIECE_SLACK + sum(
            count_tokens(str(part or "")) for part in
            (call.get("id"), function.get("name"), function.get("arguments"))
        )
    for item in message.get("reasoning_items") or ():
        total += PER_MESSAGE_OVERHEAD + count_tokens(_as_json(item)) + PIECE_SLACK
    return total


def _reasoning_items(message: PathMessage, profile: ModelProfile) -> list[dict[str, Any]]:
    """The encrypted reasoning a Responses-style model produced for this answer, when the
    same model answers now: another model (a regenerate with a different profile, an
    import) cannot read the blob and the provider would refuse the whole request."""
    if (
        profile.api_style != ModelProfile.ApiStyle.RESPONSES
        or message.role != Message.Role.ASSISTANT
        or message.model_name != profile.model
    ):
        return []
    return message.reasoning_items()


def _history_turns(assistant: Message,
                   profile: ModelProfile) -> list[tuple[list[dict[str, Any]], int]]:
    """Earlier messages of the answer's own branch (other versions are never sent),
    grouped into turns (a user message and the answer after it), each with its tokens.

    An answer's reasoning items ride on its own dict, so trimming whole turns never
    sends a reasoning item without the answer it led to (the provider refuses that)."""
    earlier = [
        m for m in path_to(assistant)[:-1]
        if not (m.role == Message.Role.ASSISTANT and m.content == "")
    ]
    turns: list[tuple[list[dict[str, Any]], int]] = []
    for message in earlier:
        item: dict[str, Any] = {"role": message.role, "content": message.content}
        reasoning = _reasoning_items(message, profile)
        if reasoning:
            item["reasoning_items"] = reasoning
        # The count stored with the message, else its text tokenized now.
        cost = (message.content_tokens if message.content_tokens is not None
                else message_tokens(item))
        if message.role == Message.Role.USER or not turns:
            turns.append(([item], cost))
        else:
            items, so_far = turns[-1]
            items.append(item)
            turns[-1] = (items, so_far + cost)
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
    for turn, cost in reversed(turns):
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
    custom: str, completion_cap: int, history: Iterable[str] | None = None,
    history_tokens: int = 0,
) -> int:
    """An upper bound on the next request's prompt tokens, for the budget reservation:
    ``content`` and every message of the conversation: ``history_tokens``, the stored
    counts the caller summed, and ``history``, the texts it read that have none; with
    neither, the messages are read here."""
    total = PRIMING_TOKENS + message_tokens({"content": instructions_for(org_message=org_message, custom=custom)})
    total += message_tokens({"content": content})
    if profile.accepts("tools"):
        # The request carries the tool schemas too (generation reserves every request in
        # full before sending it: a turn reserved without them would extend at once).
        total += tools_tokens(tool_schemas())
    total += history_tokens
    if conversation_id is not None and history is None:
        for text, counted in Message.objects.filter(conversation_id=conversation_id).values_list(
                "content", "content_tokens"):
            total += counted if counted is not None else message_tokens({"content": text})
    for text in history or ():
        total += message_tokens({"content": text})
    return min(total, max(profile.context_window - completion_cap, 0)) + SAFETY_MARGIN
