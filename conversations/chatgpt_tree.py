"""Turning one ChatGPT conversation (a tree: ``mapping`` holds nodes with ``parent`` and
``children``, ``current_node`` is the leaf on screen) into our messages, planned in memory
before anything is written.

Each message keeps its place in that tree (edits and regenerations become siblings) and
the conversation shows the same branch. Hidden system messages and the user's ChatGPT
custom instructions are left out silently; what a person saw but we cannot show (images,
files, audio, plugin and tool steps, reasoning notes) is skipped and counted. Imported
text obeys the limit typed text does (``MAX_MESSAGE_CHARS``): a longer message becomes
several.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from django.conf import settings

from conversations.models import Conversation, Message

TITLE_MAX = Conversation._meta.get_field("title").max_length or 200
IMPORT_ID_MAX = Conversation._meta.get_field("import_id").max_length or 100
MODEL_NAME_MAX = Message._meta.get_field("model_name").max_length or 200
# Epoch seconds outside this range are not real message times (year 2000 to 2100).
EARLIEST, LATEST = 946_684_800.0, 4_102_444_800.0

# What the report calls each kind of part it could not import.
IMAGE, FILE, AUDIO, TOOL, REASONING, OTHER = (
    "image", "file", "audio recording", "plugin or tool step", "reasoning note", "unreadable part",
)
_SKIPPED_PART_TYPES = {
    "image_asset_pointer": IMAGE,
    "audio_asset_pointer": AUDIO,
    "real_time_user_audio_video_asset_pointer": AUDIO,
}
_SKIPPED_CONTENT_TYPES = {
    "code": TOOL,
    "execution_output": TOOL,
    "tether_browsing_display": TOOL,
    "tether_quote": TOOL,
    "system_error": TOOL,
    "thoughts": REASONING,
    "reasoning_recap": REASONING,
}
# Parts of a ChatGPT conversation that are configuration, not conversation.
_SILENT_CONTENT_TYPES = {"user_editable_context", "model_editable_context"}


def parse_time(value: Any, fallback: datetime) -> datetime:
    """A ChatGPT time (epoch seconds); ``fallback`` when it is missing or not a real one."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return fallback
    if not math.isfinite(value) or not EARLIEST <= value <= LATEST:
        return fallback
    return datetime.fromtimestamp(value, tz=UTC)


def _clean(text: str) -> str:
    # PostgreSQL text cannot hold NUL.
    return text.replace("\x00", "")


def _text_of(message: dict[str, Any], skipped: Counter[str]) -> str:
    """The readable text of one ChatGPT message; what is not readable goes to ``skipped``."""
    content = message.get("content")
    if not isinstance(content, dict):
        skipped[OTHER] += 1
        return ""
    content_type = content.get("content_type")
    if content_type in _SILENT_CONTENT_TYPES:
        return ""
    if content_type in _SKIPPED_CONTENT_TYPES:
        skipped[_SKIPPED_CONTENT_TYPES[content_type]] += 1
        return ""
    if content_type not in ("text", "multimodal_text"):
        skipped[OTHER] += 1
        return ""
    parts = content.get("parts")
    if not isinstance(parts, list):
        skipped[OTHER] += 1
        return ""
    texts: list[str] = []
    for part in parts:
        if isinstance(part, str):
            texts.append(part)
        elif isinstance(part, dict) and part.get("content_type") == "audio_transcription":
            if isinstance(part.get("text"), str):
                texts.append(part["text"])
        elif isinstance(part, dict):
            skipped[_SKIPPED_PART_TYPES.get(str(part.get("content_type")), OTHER)] += 1
        else:
            skipped[OTHER] += 1
    metadata = message.get("metadata")
    if isinstance(metadata, dict) and isinstance(metadata.get("attachments"), list):
        skipped[FILE] += len(metadata["attachments"])
    return _clean("\n\n".join(t for t in texts if t.strip()).strip())


@dataclass
class Planned:
    """One of our messages, not saved yet, and the planned message it answers."""

    message: Message
    parent: Planned | None


def import_id_of(item: dict[str, Any]) -> str:
    for key in ("conversation_id", "id"):
        value = item.get(key)
        if isinstance(value, str) and value.strip() and len(value) <= IMPORT_ID_MAX:
            return value.strip()
    # No usable id: the conversation's own content identifies it, which is stable when the
    # same file is uploaded again.
    digest = hashlib.sha256(json.dumps(item, sort_keys=True, default=str).encode()).hexdigest()
    return f"sha256:{digest[:64]}"


def title_of(item: dict[str, Any]) -> str:
    title = item.get("title")
    title = _clean(title).strip() if isinstance(title, str) else ""
    return title[:TITLE_MAX] or "Imported conversation"


def plan_messages(
    item: dict[str, Any], *, conversation_time: datetime, skipped: Counter[str]
) -> tuple[list[Planned], Planned | None]:
    """Our messages for one ChatGPT tree, parents before children (so ids grow down every
    branch, as conversations/tree.py expects), and the one ``current_node`` maps to."""
    mapping: dict[str, Any] = item["mapping"]
    default_model = item.get("default_model_slug")
    default_model = default_model if isinstance(default_model, str) else ""
    roots = [
        key for key, node in mapping.items()
        if isinstance(node, dict) and (node.get("parent") is None or node.get("parent") not in mapping)
    ]
    planned: list[Planned] = []
    anchor_of: dict[str, Planned | None] = {}
    # Iterative depth-first walk (a long conversation is thousands of levels deep); the
    # ``seen`` set stops a crafted mapping whose children loop back.
    seen: set[str] = set()
    # (node id, nearest imported ancestor, whether the path from it here never branched)
    stack: list[tuple[str, Planned | None, bool]] = [(key, None, False) for key in reversed(roots)]
    while stack:
        key, anchor, linear = stack.pop()
        if key in seen:
            continue
        seen.add(key)
        node = mapping.get(key)
        if not isinstance(node, dict):
            continue
        children = [c for c in node.get("children") or [] if isinstance(c, str) and c in mapping]
        current = anchor
        message = node.get("message")
        if isinstance(message, dict):
            current = _plan_one(
                message, anchor=anchor, linear=linear, planned=planned,
                conversation_time=conversation_time, default_model=default_model, skipped=skipped,
            )
        anchor_of[key] = current
        still_linear = len(children) == 1 and (current is not anchor or linear)
        for child in reversed(children):
            stack.append((child, current, still_linear))
    current_node = item.get("current_node")
    leaf = anchor_of.get(current_node) if isinstance(current_node, str) else None
    return planned, leaf or (planned[-1] if planned else None)


def _plan_one(
    message: dict[str, Any],
    *,
    anchor: Planned | None,
    linear: bool,
    planned: list[Planned],
    conversation_time: datetime,
    default_model: str,
    skipped: Counter[str],
) -> Planned | None:
    """Plan one ChatGPT message; returns the message its children hang under."""
    author = message.get("author")
    role = author.get("role") if isinstance(author, dict) else None
    metadata = message.get("metadata")
    if not isinstance(metadata, dict):
        metadata = {}
    if role == "system" or metadata.get("is_visually_hidden_from_conversation"):
        return anchor
    if role == "tool":
        skipped[IMAGE if _has_image(message) else TOOL] += 1
        return anchor
    if role not in ("user", "assistant"):
        skipped[OTHER] += 1
        return anchor
    recipient = message.get("recipient")
    if role == "assistant" and isinstance(recipient, str) and recipient not in ("all", ""):
        skipped[TOOL] += 1  # the model calling a plugin or tool, not talking to the person
        return anchor
    text = _text_of(message, skipped)
    if not text:
        return anchor
    created = parse_time(message.get("create_time"), conversation_time)
    if (
        role == "assistant" and anchor is not None and linear
        and anchor.message.role == Message.Role.ASSISTANT
    ):
        # ChatGPT splits one answer around its tool steps (text, browse, more text); it
        # shows them as one answer, and so do we.
        anchor.message.content += "\n\n" + text
        return anchor
    model = metadata.get("model_slug") if isinstance(metadata.get("model_slug"), str) else default_model
    planned_message = Planned(
        message=Message(
            role=Message.Role.USER if role == "user" else Message.Role.ASSISTANT,
            content=text,
            status=Message.Status.DONE,
            created_at=created,
            model_name=(model or "")[:MODEL_NAME_MAX] if role == "assistant" else "",
            finish_reason=_finish_reason(metadata) if role == "assistant" else "",
        ),
        parent=anchor,
    )
    planned.append(planned_message)
    return planned_message


def _finish_reason(metadata: dict[str, Any]) -> str:
    details = metadata.get("finish_details")
    reason = details.get("type") if isinstance(details, dict) else None
    return reason[:32] if isinstance(reason, str) else ""


def _has_image(message: dict[str, Any]) -> bool:
    content = message.get("content")
    parts = content.get("parts") if isinstance(content, dict) else None
    return isinstance(parts, list) and any(
        isinstance(p, dict) and p.get("content_type") == "image_asset_pointer" for p in parts
    )



def split_text(text: str, limit: int) -> list[str]:
    """``text`` in pieces of at most ``limit`` characters that join back to it exactly,
    cut after a paragraph, line or word break near the end of each piece when there is one."""
    pieces: list[str] = []
    start = 0
    while len(text) - start > limit:
        window = text[start:start + limit]
        floor = limit * 4 // 5
        cut = 0
        for separator in ("\n\n", "\n", " "):
            found = window.rfind(separator, floor)
            if found != -1:
                cut = found + len(separator)
                break
        cut = cut or limit
        pieces.append(window[:cut])
        start += cut
    pieces.append(text[start:])
    return pieces


def split_long_messages(messages: list[Planned]) -> tuple[int, int]:
    """Messages over ``MAX_MESSAGE_CHARS`` (the limit typed text has) become a chain of
    parts in place; the planned message keeps the last part, so its children and the
    leaf still hang under it. Returns (messages split, parts they became)."""
    limit = settings.MAX_MESSAGE_CHARS
    if all(len(p.message.content) <= limit for p in messages):
        return 0, 0
    split = parts = 0
    result: list[Planned] = []
    for planned in messages:
        if len(planned.message.content) <= limit:
            result.append(planned)
            continue
        pieces = split_text(planned.message.content, limit)
        split += 1
        parts += len(pieces)
        parent = planned.parent
        for piece in pieces[:-1]:
            part = Planned(
                message=Message(
                    role=planned.message.role, content=piece, status=Message.Status.DONE,
                    created_at=planned.message.created_at,
                    model_name=planned.message.model_name,
                ),
                parent=parent,
            )
            result.append(part)
            parent = part
        planned.message.content = pieces[-1]
        planned.parent = parent
        result.append(planned)
    messages[:] = result
    return split, parts

