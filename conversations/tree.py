"""Messages form a tree: edits and regenerations add siblings, and the conversation
remembers which branch is on screen (``Conversation.current_leaf``).

A message's ``parent`` is the message before it on its branch: an answer's parent is
its question, a question's parent is the previous answer (null for a first question).
A child is always created after its parent, so ids grow down every branch.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from django.db import connection, transaction
from django.db.models import Q

from chatsite.errors import NotFound, Refused
from conversations.access import get_message_for_user
from conversations.models import Conversation, Message
from llm.models import ModelProfile

if TYPE_CHECKING:
    from accounts.models import User

# The ``parent`` a new question gets when the sender names none: the branch on screen.
AFTER_LEAF: Literal["leaf"] = "leaf"
ParentChoice = int | None | Literal["leaf"]

_TABLE = Message._meta.db_table

# Root to ``%s``: walks parent links up in one query (PostgreSQL and SQLite both
# speak WITH RECURSIVE), so a branch costs the same whatever its length.
_PATH_TEMPLATE = f"""
WITH RECURSIVE path(id, parent_id, depth) AS (
    SELECT id, parent_id, 0 FROM {_TABLE} WHERE id = %s AND conversation_id = %s
    UNION ALL
    SELECT m.id, m.parent_id, path.depth + 1
    FROM {_TABLE} m JOIN path ON m.id = path.parent_id
)
SELECT {{columns}} FROM {_TABLE} m JOIN path ON m.id = path.id
{{joins}}
ORDER BY path.depth DESC
"""

# The page, exports and share snapshots read the branch but never the answers' encrypted
# reasoning (kilobytes per answer, only for the model's next request): a raw query leaves
# a column it does not select deferred. The profile's display name labels each answer
# as the live stream did.
_SHOWN_COLUMNS = ", ".join(
    f"m.{field.column}" for field in Message._meta.concrete_fields
    if field.name != "reasoning_items"
)
_PROFILE_TABLE = ModelProfile._meta.db_table
_BRANCH_SQL = _PATH_TEMPLATE.format(
    columns=f"{_SHOWN_COLUMNS}, p.display_name AS profile_display_name",
    joins=f"LEFT JOIN {_PROFILE_TABLE} p ON p.id = m.profile_id",
)
# What a prompt needs of each earlier message: its role and text, and the model that wrote
# an answer with its encrypted reasoning (sent back only to that model; read as text and
# parsed only then).
_PROMPT_PATH_SQL = _PATH_TEMPLATE.format(
    columns="m.id, m.role, m.content, m.content_tokens, m.model_name, m.reasoning_items",
    joins="",
)

# The newest message under ``%s`` (itself included). A child is newer than its parent,
# so the newest descendant has no children: it is a leaf.
_NEWEST_LEAF_SQL = f"""
WITH RECURSIVE below(id) AS (
    SELECT id FROM {_TABLE} WHERE id = %s
    UNION ALL
    SELECT m.id FROM {_TABLE} m JOIN below ON m.parent_id = below.id
)
SELECT MAX(id) FROM below
"""


@dataclass(frozen=True)
class Versions:
    """Where a message sits among its siblings: ``index`` is 1-based, ids oldest first."""

    index: int
    ids: tuple[int, ...]

    @property
    def count(self) -> int:
        return len(self.ids)

    @property
    def previous_id(self) -> int | None:
        return self.ids[self.index - 2] if self.index > 1 else None

    @property
    def next_id(self) -> int | None:
        return self.ids[self.index] if self.index < len(self.ids) else None

    def as_dict(self) -> dict[str, object]:
        return {"index": self.index, "count": self.count, "ids": list(self.ids)}


def leaf_id(conversation: Conversation) -> int | None:
    """The leaf of the branch on screen; a conversation saved before it had a leaf
    (or whose leaf was deleted) falls back to its newest message."""
    if conversation.current_leaf_id is not None:
        return conversation.current_leaf_id
    return (
        Message.objects.filter(conversation_id=conversation.pk)
        .order_by("-id")
        .values_list("id", flat=True)
        .first()
    )


@dataclass(frozen=True)
class PathMessage:
    """One message on the way to an answer, as its prompt reads it."""

    id: int
    role: str
    content: str
    content_tokens: int | None  # Message.content_tokens: NULL until the text is final
    model_name: str
    reasoning_items_json: str | None

    def reasoning_items(self) -> list[dict[str, Any]]:
        if not self.reasoning_items_json:
            return []
        items = json.loads(self.reasoning_items_json)
        return items if isinstance(items, list) else []


def path_to(message: Message) -> list[PathMessage]:
    """Root to ``message``, in order, in one query: plain rows, not models (the prompt is
    built from every earlier message of the branch on every turn, and making a model of
    each, converters and all, cost more than the query)."""
    with connection.cursor() as cursor:
        cursor.execute(_PROMPT_PATH_SQL, [message.pk, message.conversation_id])
        return [PathMessage(pk, role, content, tokens, model_name, _json_text(items))
                for pk, role, content, tokens, model_name, items in cursor.fetchall()]


def _json_text(value: Any) -> str | None:
    """A JSON column as text, however the driver returned it (PostgreSQL's loader in
    Django gives text; SQLite gives text; a decoded value is encoded back)."""
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value)


def branch(conversation: Conversation) -> list[Message]:
    """The branch on screen, root to current leaf, in at most two queries; each message
    carries ``profile_display_name`` and leaves ``reasoning_items`` unloaded.

    ``conversation`` must come from a permission-checked fetch
    (``get_conversation_for_user``); this reads only its messages.
    """
    leaf = leaf_id(conversation)
    if leaf is None:
        return []
    return list(Message.objects.raw(_BRANCH_SQL, [leaf, conversation.pk]))


def versions(conversation: Conversation, messages: Sequence[Message]) -> dict[int, Versions]:
    """Sibling positions of every message in ``messages`` (a branch), in one query."""
    if not messages:
        return {}
    parents = {m.parent_id for m in messages if m.parent_id is not None}
    rows = (
        Message.objects.filter(conversation_id=conversation.pk)
        .filter(Q(parent_id__in=parents) | Q(parent__isnull=True))
        .values_list("id", "parent_id")
        .order_by("id")
    )
    by_parent: dict[int | None, list[int]] = {}
    for pk, parent in rows:
        by_parent.setdefault(parent, []).append(pk)
    result: dict[int, Versions] = {}
    for message in messages:
        ids = by_parent.get(message.parent_id, [message.pk])
        result[message.pk] = Versions(index=ids.index(message.pk) + 1, ids=tuple(ids))
    return result


def siblings(message: Message) -> list[Message]:
    """``message`` and the other versions of it (same parent, same conversation), oldest
    first. ``message`` must come from a permission-checked fetch."""
    return list(
        Message.objects.filter(
            conversation_id=message.conversation_id, parent_id=message.parent_id
        ).order_by("id")
        if message.parent_id is not None
        else Message.objects.filter(
            conversation_id=message.conversation_id, parent__isnull=True
        ).order_by("id")
    )


def newest_leaf_under(message: Message) -> int:
    with connection.cursor() as cursor:
        cursor.execute(_NEWEST_LEAF_SQL, [message.pk])
        row = cursor.fetchone()
    return int(row[0]) if row and row[0] is not None else message.pk


def select_branch(*, user: User, message_id: int) -> Conversation:
    """Show the branch through ``message_id``: its newest leaf becomes the current leaf.

    Refused while an answer is being written in the conversation, so a live answer
    never streams into a branch that is not on screen.
    """
    message = get_message_for_user(user, message_id)
    conversation = message.conversation
    with transaction.atomic():
        # Race: a send in another tab adds a live answer (and moves the leaf) while we
        # switch; the row lock orders the two, and the check below sees its answer.
        Conversation.objects.select_for_update().filter(pk=conversation.pk).first()
        if conversation.messages.filter(status__in=Message.LIVE_STATUSES).exists():
            raise Refused(
                "invalid_request",
                "An answer is still being written in this conversation. Wait for it or "
                "stop it, then switch versions.",
            )
        leaf = newest_leaf_under(message)
        Conversation.objects.filter(pk=conversation.pk).update(current_leaf_id=leaf)
    conversation.current_leaf_id = leaf
    return conversation


def resolve_parent(conversation: Conversation | None, choice: ParentChoice) -> Message | None:
    """The message a new question follows: ``AFTER_LEAF`` is the leaf of the branch on
    screen, None a new first question, an id an answer in this same conversation (else
    ``NotFound``)."""
    if conversation is None:
        if choice in (AFTER_LEAF, None):
            return None
        raise NotFound("message")
    if choice is None:
        return None
    parent_id = leaf_id(conversation) if choice == AFTER_LEAF else choice
    if parent_id is None:
        return None
    if isinstance(parent_id, bool) or not isinstance(parent_id, int):
        raise NotFound("message")
    # Continuing the branch on screen follows its leaf whatever it is: an imported
    # conversation may end on a question whose answer held only an image. An explicit
    # parent (Edit) must be an answer.
    roles = (
        (Message.Role.ASSISTANT, Message.Role.USER) if choice == AFTER_LEAF
        else (Message.Role.ASSISTANT,)
    )
    if choice == AFTER_LEAF and Conversation.current_leaf.is_cached(conversation):
        # Loaded with the conversation (start_turn's locked fetch): no second query.
        leaf = conversation.current_leaf
        if leaf is not None and leaf.pk == parent_id and leaf.conversation_id == conversation.pk:
            return leaf
    parent = Message.objects.filter(
        pk=parent_id, conversation_id=conversation.pk, role__in=roles
    ).first()
    if parent is None:
        raise NotFound("message")
    return parent


def link_in_order(conversation: Conversation, messages: Iterable[Message]) -> None:
    """Chain freshly copied messages (one line, oldest first) and show their last one."""
    previous: Message | None = None
    chained: list[Message] = []
    for message in messages:
        message.parent = previous
        chained.append(message)
        previous = message
    if not chained:
        return
    Message.objects.bulk_update(chained, ["parent"])
    Conversation.objects.filter(pk=conversation.pk).update(current_leaf=previous)
    conversation.current_leaf = previous
