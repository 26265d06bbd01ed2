"""Importing a ChatGPT data export (``conversations.json``, or the ZIP that holds it).

The upload is read by ``conversations.chatgpt_file`` (bounded, streamed, checked whole
before anything is written) and each ChatGPT conversation tree becomes our messages in
``conversations.chatgpt_tree`` (same branches, the same branch shown; what cannot be
shown is skipped and counted in the report). This module writes them.

Imported conversations belong to the importing user in their current org, cost $0 and
never call the model. A malformed file imports nothing; otherwise one conversation at a
time is held in memory and written in small transactions (at most
``MESSAGES_PER_TRANSACTION`` messages each), so other people's sends never queue behind
an import, even on SQLite.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import IO, TYPE_CHECKING, Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from accounts.model_access import default_profile
from conversations.access import get_membership
from conversations.chatgpt_file import ImportRefused, iter_conversations, open_export, scan_export
from conversations.chatgpt_tree import (
    Planned,
    import_id_of,
    parse_time,
    plan_messages,
    split_long_messages,
    title_of,
)
from conversations.models import Conversation, Message
from llm.tokens import message_tokens

if TYPE_CHECKING:
    from accounts.models import User

SOURCE = "chatgpt"
# How many titles the report lists by name before it says "and N more".
REPORT_TITLES = 20
# On SQLite a transaction holds the whole database's write lock: others' sends wait for
# at most one of these, never for the whole import.
MESSAGES_PER_TRANSACTION = 500
# A conversation too long for one transaction is written under this source, hidden, and
# switched to SOURCE with its last message; a crash leaves it for clean-up, never half
# shown and never mistaken for "already imported".
PARTIAL_SOURCE = "chatgpt:partial"


@dataclass
class ImportReport:
    """What an import did. Lists keep the first ``REPORT_TITLES`` names; the counts count
    everything, so memory does not grow with the file."""

    organization: str = ""
    total: int = 0  # conversations in the file
    imported: list[dict[str, Any]] = field(default_factory=list)  # id, title, messages
    imported_count: int = 0
    message_count: int = 0
    already_imported: list[str] = field(default_factory=list)
    already_imported_count: int = 0
    empty: list[str] = field(default_factory=list)
    empty_count: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    skipped_in: list[dict[str, Any]] = field(default_factory=list)  # title, parts
    skipped_in_count: int = 0
    # Messages over MAX_MESSAGE_CHARS, and the messages they became.
    split_messages: int = 0
    split_parts: int = 0

    def add_imported(self, *, conversation_id: int, title: str, messages: int) -> None:
        self.imported_count += 1
        self.message_count += messages
        if len(self.imported) < REPORT_TITLES:
            self.imported.append({"id": conversation_id, "title": title, "messages": messages})

    def add_already_imported(self, title: str) -> None:
        self.already_imported_count += 1
        if len(self.already_imported) < REPORT_TITLES:
            self.already_imported.append(title)

    def add_empty(self, title: str) -> None:
        self.empty_count += 1
        if len(self.empty) < REPORT_TITLES:
            self.empty.append(title)

    def add_skipped(self, title: str, skipped: Counter[str]) -> None:
        self.skipped.update(skipped)
        self.skipped_in_count += 1
        if len(self.skipped_in) < REPORT_TITLES:
            self.skipped_in.append({"title": title, "parts": dict(sorted(skipped.items()))})

    def as_dict(self) -> dict[str, Any]:
        """JSON-safe and short, whatever the file's size."""
        return {
            "organization": self.organization,
            "total": self.total,
            "imported": self.imported,
            "imported_count": self.imported_count,
            "message_count": self.message_count,
            "already_imported": self.already_imported,
            "already_imported_count": self.already_imported_count,
            "empty": self.empty,
            "empty_count": self.empty_count,
            "skipped": [
                {"kind": kind, "count": count} for kind, count in sorted(self.skipped.items())
            ],
            "skipped_in": self.skipped_in,
            "skipped_in_count": self.skipped_in_count,
            "split_messages": self.split_messages,
            "split_parts": self.split_parts,
            "max_message_chars": settings.MAX_MESSAGE_CHARS,
        }


def import_chatgpt_export(
    *,
    user: User,
    organization_id: int | None,
    upload: IO[bytes],
    size: int,
    progress: Callable[[int, int], None] | None = None,
) -> ImportReport:
    """Import a ChatGPT export into the user's current org; re-importing adds nothing.

    ``upload`` is seekable (it is read twice). ``progress(done, total)`` is called once
    the file is checked and after each conversation. Conversations written before a
    failure stay (importing again adds the rest); none is ever left half written.
    """
    membership = get_membership(user, organization_id)
    organization = membership.organization
    profile = default_profile(organization, user=user)
    if profile is None:
        raise ImportRefused(
            f"{organization.name} has no model enabled, so imported conversations could not be "
            f"continued. Ask an admin to enable one, then import again."
        )
    with open_export(upload, size=size) as reader:
        total = scan_export(reader)
    report = ImportReport(organization=organization.name, total=total)
    if progress:
        progress(0, total)
    now = timezone.now()
    with open_export(upload, size=size) as reader:
        for done, item in enumerate(iter_conversations(reader), start=1):
            _import_conversation(item, user=user, organization=organization, profile=profile,
                                 report=report, now=now)
            del item  # before the parser builds the next one: one conversation at a time
            if progress:
                progress(done, total)
    return report


def _import_conversation(
    item: dict[str, Any], *, user: User, organization: Any, profile: Any,
    report: ImportReport, now: datetime,
) -> None:
    title = title_of(item)
    import_id = import_id_of(item)
    if Conversation.objects.filter(
        user=user, organization=organization, import_source=SOURCE, import_id=import_id
    ).exists():
        report.add_already_imported(title)  # also the same conversation twice in one file
        return
    created = parse_time(item.get("create_time"), now)
    skipped: Counter[str] = Counter()
    messages, leaf = plan_messages(item, conversation_time=created, skipped=skipped)
    if skipped:
        report.add_skipped(title, skipped)
    if not messages:
        report.add_empty(title)
        return
    split, parts = split_long_messages(messages)
    conversation = Conversation(
        organization=organization, user=user, profile=profile, title=title,
        title_generated=True, created_at=created,
        updated_at=parse_time(item.get("update_time"), created),
        import_source=SOURCE, import_id=import_id,
    )
    try:
        _save(conversation, messages, leaf)
    except IntegrityError:
        # Race: another import of the same conversation committed between the check
        # above and this write; the unique constraint kept it to one copy.
        report.add_already_imported(title)
        return
    report.split_messages += split
    report.split_parts += parts
    report.add_imported(conversation_id=conversation.pk, title=title, messages=len(messages))



def _save(conversation: Conversation, messages: list[Planned], leaf: Planned | None) -> None:
    """Write one conversation, ``MESSAGES_PER_TRANSACTION`` messages per transaction.

    ``messages`` are parents first, so each batch's parents are saved by the time it is
    linked. One batch (nearly every conversation): one transaction. More: the
    conversation is written hidden under ``PARTIAL_SOURCE`` and shown in the last one.
    """
    batches = [
        messages[i:i + MESSAGES_PER_TRANSACTION]
        for i in range(0, len(messages), MESSAGES_PER_TRANSACTION)
    ]
    if len(batches) == 1:
        with transaction.atomic():
            conversation.save(force_insert=True)
            _write_batch(conversation, batches[0])
            _show(conversation, leaf, update_fields=["current_leaf"])
        return
    conversation.import_source = PARTIAL_SOURCE
    conversation.deleted_at = timezone.now()
    with transaction.atomic():
        conversation.save(force_insert=True)
    try:
        for batch in batches:
            with transaction.atomic():
                _write_batch(conversation, batch)
        with transaction.atomic():
            conversation.import_source = SOURCE
            conversation.deleted_at = None
            _show(conversation, leaf, update_fields=["current_leaf", "import_source", "deleted_at"])
    except BaseException:
        with contextlib.suppress(Exception):
            Conversation.objects.filter(pk=conversation.pk, import_source=PARTIAL_SOURCE).delete()
        raise


def _write_batch(conversation: Conversation, batch: list[Planned]) -> None:
    for planned in batch:
        planned.message.conversation = conversation
        # Its text is final now (merged and split): counted once, not by every later turn.
        planned.message.content_tokens = message_tokens(planned.message.content)
    # In plan order, parents first: ids then grow down every branch.
    Message.objects.bulk_create([p.message for p in batch])
    linked: list[Message] = []
    for planned in batch:
        if planned.parent is not None:
            planned.message.parent_id = planned.parent.message.pk
            linked.append(planned.message)
    if linked:
        Message.objects.bulk_update(linked, ["parent"])


def _show(conversation: Conversation, leaf: Planned | None, *, update_fields: list[str]) -> None:
    conversation.current_leaf_id = leaf.message.pk if leaf else None
    conversation.save(update_fields=update_fields)


def forget_partial_imports(*, user_ids: list[int] | None = None) -> int:
    """Delete conversations a crashed import left half written (never shown)."""
    partial = Conversation.objects.filter(import_source=PARTIAL_SOURCE)
    if user_ids is not None:
        partial = partial.filter(user_id__in=user_ids)
    return partial.delete()[0]

