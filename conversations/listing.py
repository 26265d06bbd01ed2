"""The conversation list: pages of it, and renaming, pinning, archiving and deleting.

Every function fetches through conversations.access, so another person's id (or one in an
org the user has left) is NotFound, never a change.
"""

from __future__ import annotations

import datetime as dt
import zoneinfo
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from django.db import transaction
from django.utils import timezone

from accounts import audit
from accounts.audit_models import AuditAction
from chatsite.errors import NotFound
from conversations.access import get_conversation_for_user, get_membership
from conversations.models import Conversation, Message
from conversations.signals import conversation_erasing, live_answer_deleting

if TYPE_CHECKING:
    from accounts.models import User

PAGE_SIZE = 50
MAX_PINNED = 100
MAX_TITLE_CHARS = 200


class ListingError(ValueError):
    """Bad input to a list action, with a message a person can act on."""


@dataclass(frozen=True)
class ListPage:
    items: list[dict[str, Any]]
    next_cursor: str | None

    def as_dict(self) -> dict[str, Any]:
        return {"items": self.items, "next": self.next_cursor}


def _group(updated_at: dt.datetime, today: dt.date, tz: zoneinfo.ZoneInfo) -> str:
    age = (today - updated_at.astimezone(tz).date()).days
    if age <= 0:
        return "Today"
    if age <= 7:
        return "Previous 7 days"
    if age <= 30:
        return "Previous 30 days"
    return "Older"


def _item(conversation: Conversation, today: dt.date, tz: zoneinfo.ZoneInfo) -> dict[str, Any]:
    pinned = conversation.pinned_at is not None and conversation.archived_at is None
    return {
        "id": conversation.pk,
        "title": conversation.display_title,
        "url": f"/c/{conversation.pk}/",
        "updated_at": conversation.updated_at.isoformat(),
        "pinned": pinned,
        "archived": conversation.archived_at is not None,
        "group": "Pinned" if pinned else _group(conversation.updated_at, today, tz),
    }


def encode_cursor(conversation: Conversation) -> str:
    return f"{conversation.updated_at.isoformat()}_{conversation.pk}"


def _decode_cursor(cursor: str) -> tuple[dt.datetime, int]:
    try:
        stamp, _, pk = cursor.rpartition("_")
        when = dt.datetime.fromisoformat(stamp)
        if when.tzinfo is None or not pk.isascii() or not pk.isdigit():
            raise ValueError(cursor)
        return when, int(pk)
    except ValueError as exc:
        raise ListingError("That page of the list does not exist. Reload the page.") from exc


def list_conversations(
    *,
    user: User,
    organization_id: int | None,
    archived: bool = False,
    cursor: str | None = None,
    limit: int = PAGE_SIZE,
) -> ListPage:
    """One page of the user's conversations in their current org, newest first.

    Keyset pagination over (updated_at, id): a constant number of queries per page
    however many conversations there are. The first page of the main list starts with
    the pinned ones; the archived view lists only archived ones.
    """
    organization = get_membership(user, organization_id).organization
    tz = zoneinfo.ZoneInfo(organization.time_zone or "UTC")
    today = timezone.now().astimezone(tz).date()
    base = Conversation.objects.owned_by(user).not_deleted().filter(organization=organization)
    fields = ("id", "title", "updated_at", "pinned_at", "archived_at")
    items: list[dict[str, Any]] = []
    if archived:
        rows = base.filter(archived_at__isnull=False)
    else:
        rows = base.filter(archived_at__isnull=True, pinned_at__isnull=True)
        if cursor is None:
            pinned = base.filter(archived_at__isnull=True, pinned_at__isnull=False)
            items = [_item(c, today, tz) for c in pinned.only(*fields).order_by("-pinned_at")[:MAX_PINNED]]
    if cursor is not None:
        when, pk = _decode_cursor(cursor)
        rows = rows.filter(updated_at__lte=when).exclude(updated_at=when, id__gte=pk)
    page = list(rows.only(*fields).order_by("-updated_at", "-id")[: limit + 1])
    items += [_item(c, today, tz) for c in page[:limit]]
    return ListPage(items, encode_cursor(page[limit - 1]) if len(page) > limit else None)


def rename_conversation(*, user: User, conversation_id: int, title: str) -> Conversation:
    title = " ".join(title.split())
    if "\x00" in title:
        raise ListingError("The title contains a NUL character. Remove it and save again.")
    if not title:
        raise ListingError("Type a title, or press Escape to keep the current one.")
    if len(title) > MAX_TITLE_CHARS:
        raise ListingError(
            f"Titles are limited to {MAX_TITLE_CHARS} characters; this one has {len(title):,}."
        )
    conversation = get_conversation_for_user(user, conversation_id)
    # Race: the title task may be writing a generated title right now; title_generated
    # makes it skip a conversation the person has named.
    Conversation.objects.filter(pk=conversation.pk, deleted_at__isnull=True).update(
        title=title, title_generated=True
    )
    conversation.title, conversation.title_generated = title, True
    return conversation


def set_pinned(*, user: User, conversation_id: int, pinned: bool) -> Conversation:
    conversation = get_conversation_for_user(user, conversation_id)
    conversation.pinned_at = timezone.now() if pinned else None
    conversation.save(update_fields=["pinned_at"])
    return conversation


def set_archived(*, user: User, conversation_id: int, archived: bool) -> Conversation:
    conversation = get_conversation_for_user(user, conversation_id)
    conversation.archived_at = timezone.now() if archived else None
    conversation.save(update_fields=["archived_at"])
    return conversation


def delete_conversation(*, user: User, conversation_id: int) -> None:
    """End any live answer (settling its reservation), then erase the conversation.

    Each live answer is announced (``live_answer_deleting``) and ended by its receiver in
    answers: a pending one is cancelled at $0, a streaming one is cancelled and charged the
    flagged estimate of what it showed (its worker, finding it no longer streaming, writes
    and charges nothing more). The row and its answers' token counts and costs stay (the
    usage report is summed from them); titles, texts, instructions and share links go.
    """
    conversation = get_conversation_for_user(user, conversation_id)
    end_live_answers([conversation.pk])
    with transaction.atomic():
        # Race: a send from another tab locks this row too (start_turn): either it finds
        # the conversation deleted, or its new answer is live here and ended below.
        if not Conversation.objects.select_for_update().filter(
            pk=conversation.pk, deleted_at__isnull=True
        ).exists():
            raise NotFound("conversation")
        end_live_answers([conversation.pk])
        erase_conversations([conversation.pk], now=timezone.now())
        audit.record(AuditAction.CONVERSATION_DELETED, organization=conversation.organization_id,
                     actor=user, obj=conversation)


@dataclass(frozen=True)
class Erased:
    """What ``erase_conversations`` did: conversations erased, and their live share links
    revoked with them or kept readable."""

    conversations: int
    share_links_deleted: int = 0
    share_links_kept: int = 0


def end_live_answers(conversation_ids: list[int]) -> int:
    """End the live answers of these conversations before they are erased: each is
    announced (``live_answer_deleting``) and its receiver cancels it and settles its
    reservation. Returns how many there were."""
    live = list(Message.objects.filter(conversation_id__in=conversation_ids,
                                       status__in=Message.LIVE_STATUSES)
                .values_list("pk", flat=True))
    for message_id in live:
        live_answer_deleting.send(sender=Conversation, message_id=message_id)
    return len(live)


def erase_conversations(conversation_ids: list[int], *, now: dt.datetime,
                        keep_share_links: bool = False) -> Erased:
    """Erase these conversations: texts, titles and instructions go, the rows and their
    answers' token counts and costs stay (the usage report is summed from them).

    The caller holds their row locks inside its transaction and ended their live answers
    (``end_live_answers``) under them. Their share links are revoked and their copies
    erased, or with ``keep_share_links`` left as they are, snapshots still readable.
    Set-based: a few statements whatever the number of conversations.
    """
    Message.objects.filter(conversation_id__in=conversation_ids).update(
        content="", content_tokens=None, refusal="", reasoning_summary="", tool_calls=[],
        error_detail="",
    )
    shares: Counter[str] = Counter()
    for _receiver, counts in conversation_erasing.send(
        sender=Conversation, conversation_ids=conversation_ids, now=now,
        keep_share_links=keep_share_links,
    ):
        shares.update(counts or {})
    # import_id too: deleting an imported conversation lets the same export import it again.
    # title_generated: a title task still queued must not write a title back.
    erased = Conversation.objects.filter(pk__in=conversation_ids).update(
        title="", title_generated=True, custom_instructions="", import_source="", import_id="",
        pinned_at=None, deleted_at=now,
    )
    return Erased(conversations=erased, share_links_deleted=shares["share_links_deleted"],
                  share_links_kept=shares["share_links_kept"])
