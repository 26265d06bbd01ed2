"""Conversations out of the app: one conversation as Markdown or JSON, and "Export my data"
(every conversation of a user as a ZIP, written by a worker: conversations/datajobs.py).

Exports carry what a person said and what the model answered on the branch on screen, with
each answer's model, effort, usage and cost. The org's developer message and the
conversation's custom instructions stay out: they are the org's configuration, not the
conversation. The JSON layout is documented in docs/export-format.md and versioned by
``SCHEMA_VERSION``.
"""

from __future__ import annotations

import json
import zipfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import IO, TYPE_CHECKING, Any

from django.db.models import Prefetch
from django.utils import timezone
from django.utils.text import slugify

from conversations import tree
from conversations.access import conversations_for_user
from conversations.models import Conversation, Message

if TYPE_CHECKING:
    from accounts.models import User

SCHEMA = "teamchat.conversation"
SCHEMA_VERSION = 1
ARCHIVE_SCHEMA = "teamchat.export"
# Conversations read per round trip in "Export my data": two queries per batch
# (conversations, then their messages), whatever the number of messages.
ARCHIVE_BATCH = 100

ROLE_TITLES: dict[str, str] = {Message.Role.USER: "You", Message.Role.ASSISTANT: "Assistant"}


@dataclass(frozen=True)
class Export:
    filename: str
    content_type: str
    body: str


def safe_filename(title: str, *, fallback: str = "conversation") -> str:
    """An ASCII file name stem from a title: no path separators, quotes or control
    characters can reach a Content-Disposition header or a ZIP member name."""
    return slugify(title)[:80].strip("-_") or fallback


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def _model_of(conversation: Conversation) -> str:
    return conversation.profile.display_name if conversation.profile_id else ""


def message_document(message: Message) -> dict[str, Any]:
    document: dict[str, Any] = {
        "id": message.pk,
        "parent": message.parent_id,
        "role": message.role,
        "status": message.status,
        "created_at": _iso(message.created_at),
        "content": message.content,
    }
    if message.role == Message.Role.ASSISTANT:
        document.update(
            model=message.model_name,
            reasoning_effort=message.reasoning_effort,
            finish_reason=message.finish_reason,
            usage=message.usage_dict(),
            usage_estimated=message.usage_estimated,
            cost_usd=str(message.cost_usd),
        )
        if message.refusal:
            document["refusal"] = message.refusal
    return document


def conversation_document(
    conversation: Conversation,
    messages: Sequence[Message],
    *,
    other_messages: Sequence[Message] = (),
    exported_at: datetime | None = None,
) -> dict[str, Any]:
    """The JSON export: ``messages`` is the branch on screen, root first."""
    document: dict[str, Any] = {
        "schema": SCHEMA,
        "schema_version": SCHEMA_VERSION,
        "exported_at": _iso(exported_at or timezone.now()),
        "conversation": {
            "id": conversation.pk,
            "title": conversation.display_title,
            "organization": conversation.organization.name,
            "model": _model_of(conversation),
            "created_at": _iso(conversation.created_at),
            "updated_at": _iso(conversation.updated_at),
        },
        "messages": [message_document(m) for m in messages],
    }
    if other_messages:
        document["other_branches"] = [message_document(m) for m in other_messages]
    return document


def _usage_line(message: Message) -> str:
    estimated = " (estimated)" if message.usage_estimated else ""
    return (
        f"_Usage{estimated}: {message.prompt_tokens:,} prompt tokens "
        f"({message.cached_tokens:,} cached) · {message.completion_tokens:,} output tokens "
        f"({message.reasoning_tokens:,} reasoning) · ${message.cost_usd:f}_"
    )


def conversation_markdown(conversation: Conversation, messages: Sequence[Message]) -> str:
    lines = [f"# {conversation.display_title}", ""]
    model = _model_of(conversation)
    if model:
        lines.append(f"- Model: {model}")
    lines += [
        f"- Organization: {conversation.organization.name}",
        f"- Started: {_iso(conversation.created_at)}",
        "",
    ]
    for message in messages:
        heading = [ROLE_TITLES.get(message.role, message.role)]
        if message.role == Message.Role.ASSISTANT:
            if message.model_name:
                heading.append(message.model_name)
            if message.reasoning_effort:
                heading.append(f"{message.reasoning_effort} effort")
        heading.append(_iso(message.created_at) or "")
        lines += [f"## {' · '.join(heading)}", ""]
        if message.content:
            lines += [message.content, ""]
        if message.refusal:
            lines += [f"> The model declined to answer: {message.refusal}", ""]
        if message.status not in (Message.Status.DONE,):
            lines += [f"_Status: {message.get_status_display()}_", ""]
        if message.role == Message.Role.ASSISTANT:
            lines += [_usage_line(message), ""]
    return "\n".join(lines).rstrip() + "\n"


def export_conversation(*, conversation: Conversation, fmt: str) -> Export:
    """``conversation`` comes from ``get_conversation_for_user``; ``fmt`` is md or json."""
    messages = tree.branch(conversation)
    stem = safe_filename(conversation.display_title)
    if fmt == "json":
        body = json.dumps(conversation_document(conversation, messages), ensure_ascii=False, indent=2)
        return Export(f"{stem}.json", "application/json; charset=utf-8", body + "\n")
    if fmt == "md":
        return Export(f"{stem}.md", "text/markdown; charset=utf-8", conversation_markdown(conversation, messages))
    raise ValueError(f"unknown export format {fmt!r}")


# --- Export my data -------------------------------------------------------------------------


def _branch_in_memory(conversation: Conversation, messages: Sequence[Message]) -> list[Message]:
    """``tree.branch`` over already-loaded messages (no query): walk up from the leaf."""
    if not messages:
        return []
    by_id = {m.pk: m for m in messages}
    leaf = by_id.get(conversation.current_leaf_id or -1) or max(messages, key=lambda m: m.pk)
    path: list[Message] = []
    seen: set[int] = set()
    node: Message | None = leaf
    while node is not None and node.pk not in seen:
        seen.add(node.pk)
        path.append(node)
        node = by_id.get(node.parent_id) if node.parent_id is not None else None
    path.reverse()
    return path


def _batches(user: User) -> Iterator[list[Conversation]]:
    """The user's conversations, ``ARCHIVE_BATCH`` at a time, each batch in two queries."""
    base = (
        conversations_for_user(user)
        .select_related("profile", "organization")
        .prefetch_related(Prefetch("messages", queryset=Message.objects.order_by("id")))
        .order_by("id")
    )
    last_id = 0
    while True:
        batch = list(base.filter(pk__gt=last_id)[:ARCHIVE_BATCH])
        if not batch:
            return
        yield batch
        last_id = batch[-1].pk


def _write_member(archive: zipfile.ZipFile, name: str, text: str) -> None:
    with archive.open(name, "w") as member:
        member.write(text.encode("utf-8"))


def write_data_export(
    out: IO[bytes], *, user: User, progress: Callable[[int, int], None] | None = None
) -> int:
    """"Export my data" written to ``out`` (a file the caller owns), batch by batch;
    ``progress(done, total)`` after each batch. Returns how many conversations it holds."""
    total = conversations_for_user(user).count() if progress else 0
    return _write_archive(out, user=user, exported_at=timezone.now(),
                          progress=(lambda done: progress(done, total)) if progress else None)


def _write_archive(
    spool: IO[bytes], *, user: User, exported_at: datetime,
    progress: Callable[[int], None] | None = None,
) -> int:
    index: list[dict[str, Any]] = []
    with zipfile.ZipFile(spool, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for batch in _batches(user):
            if progress:
                progress(len(index))
            for conversation in batch:
                messages = list(conversation.messages.all())
                on_screen = _branch_in_memory(conversation, messages)
                on_screen_ids = {m.pk for m in on_screen}
                others = [m for m in messages if m.pk not in on_screen_ids]
                folder = safe_filename(conversation.organization.name, fallback="organization")
                stem = f"{folder}-{conversation.organization_id}/{conversation.pk}-" + safe_filename(
                    conversation.display_title
                )
                document = conversation_document(
                    conversation, on_screen, other_messages=others, exported_at=exported_at
                )
                _write_member(archive, f"{stem}.json", json.dumps(document, ensure_ascii=False, indent=2))
                _write_member(archive, f"{stem}.md", conversation_markdown(conversation, on_screen))
                index.append(
                    {
                        "id": conversation.pk,
                        "title": conversation.display_title,
                        "organization": conversation.organization.name,
                        "created_at": _iso(conversation.created_at),
                        "updated_at": _iso(conversation.updated_at),
                        "messages": len(messages),
                        "json": f"{stem}.json",
                        "markdown": f"{stem}.md",
                    }
                )
        _write_member(
            archive,
            "index.json",
            json.dumps(
                {
                    "schema": ARCHIVE_SCHEMA,
                    "schema_version": SCHEMA_VERSION,
                    "exported_at": _iso(exported_at),
                    "user": user.email,
                    "conversations": index,
                },
                ensure_ascii=False,
                indent=2,
            ),
        )
        _write_member(archive, "index.md", _index_markdown(user, index, exported_at))
    return len(index)


def _index_markdown(user: User, index: Iterable[dict[str, Any]], exported_at: datetime) -> str:
    lines = [f"# Conversations of {user.email}", "", f"Exported {_iso(exported_at)}.", ""]
    rows = list(index)
    if not rows:
        lines.append("No conversations.")
    for row in rows:
        lines.append(
            f"- [{row['title']}]({row['markdown']}) · {row['organization']} · "
            f"{row['messages']} messages · [JSON]({row['json']})"
        )
    return "\n".join(lines) + "\n"


def data_export_filename(*, now: datetime | None = None) -> str:
    return f"teamchat-export-{timezone.localdate(now or timezone.now()).isoformat()}.zip"
