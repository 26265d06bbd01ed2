"""Importing a ChatGPT data export (``conversations.json``, or the ZIP that holds it).

ChatGPT stores a conversation as a tree: ``mapping`` holds nodes with ``parent`` and
``children``, and ``current_node`` is the leaf on screen. Each imported message keeps its
place in that tree (``Message.parent``; edits and regenerations become siblings) and the
conversation shows the same branch (``Conversation.current_leaf``). Hidden system
messages and the user's ChatGPT custom instructions are left out silently; what a person
saw but we cannot show (images, files, audio, plugin and tool steps, reasoning notes) is
skipped and counted in the report.

Imported conversations belong to the importing user in their current org, cost $0 and
never call the model. The upload is untrusted: sizes are bounded before anything is read
into memory, only the ``conversations.json`` member of a ZIP is read (never extracted to
disk), malformed or deeply nested JSON is refused with a clear error, and the whole import
is one transaction, so a failure leaves nothing behind.
"""

from __future__ import annotations

import hashlib
import json
import math
import zipfile
import zlib
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import PurePosixPath
from typing import IO, TYPE_CHECKING, Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from accounts.models import Membership
from conversations.access import get_membership
from conversations.models import Conversation, Message
from conversations.profiles import default_profile

if TYPE_CHECKING:
    from accounts.models import User

SOURCE = "chatgpt"
MEMBER_NAME = "conversations.json"
TITLE_MAX = Conversation._meta.get_field("title").max_length or 200
IMPORT_ID_MAX = Conversation._meta.get_field("import_id").max_length or 100
MODEL_NAME_MAX = Message._meta.get_field("model_name").max_length or 200
# Epoch seconds outside this range are not real message times (year 2000 to 2100).
EARLIEST, LATEST = 946_684_800.0, 4_102_444_800.0
# How many titles the report lists by name before it says "and N more".
REPORT_TITLES = 20

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


class ImportRefused(Exception):
    """The upload cannot be imported; ``str(exc)`` says why and what to do instead."""


@dataclass
class ImportReport:
    organization: str = ""
    imported: list[dict[str, Any]] = field(default_factory=list)  # id, title, messages
    already_imported: list[str] = field(default_factory=list)
    empty: list[str] = field(default_factory=list)
    skipped: Counter[str] = field(default_factory=Counter)
    skipped_in: list[dict[str, Any]] = field(default_factory=list)  # title, parts

    @property
    def message_count(self) -> int:
        return sum(item["messages"] for item in self.imported)

    def as_dict(self) -> dict[str, Any]:
        """JSON-safe, short enough for the session: long lists are cut with a count."""
        return {
            "organization": self.organization,
            "imported": self.imported[:REPORT_TITLES],
            "imported_count": len(self.imported),
            "message_count": self.message_count,
            "already_imported": self.already_imported[:REPORT_TITLES],
            "already_imported_count": len(self.already_imported),
            "empty": self.empty[:REPORT_TITLES],
            "empty_count": len(self.empty),
            "skipped": [
                {"kind": kind, "count": count} for kind, count in sorted(self.skipped.items())
            ],
            "skipped_in": self.skipped_in[:REPORT_TITLES],
            "skipped_in_count": len(self.skipped_in),
        }


# --- Reading the upload ---------------------------------------------------------------------


def _mb(n: int) -> str:
    return f"{n / (1024 * 1024):.0f} MB"


def read_conversations_json(upload: IO[bytes], *, size: int) -> bytes:
    """The bytes of ``conversations.json``, from the file itself or from a ChatGPT ZIP."""
    if size > settings.IMPORT_MAX_BYTES:
        raise ImportRefused(
            f"The file is {_mb(size)}; imports are limited to {_mb(settings.IMPORT_MAX_BYTES)}. "
            f"Upload only conversations.json from your ChatGPT export."
        )
    upload.seek(0)
    head = upload.read(4)
    upload.seek(0)
    if head.startswith(b"PK"):
        return _read_from_zip(upload)
    data = upload.read(settings.IMPORT_MAX_BYTES + 1)
    if len(data) > settings.IMPORT_MAX_BYTES:
        raise ImportRefused(f"Imports are limited to {_mb(settings.IMPORT_MAX_BYTES)}.")
    return data


def _read_from_zip(upload: IO[bytes]) -> bytes:
    try:
        with zipfile.ZipFile(upload) as archive:
            members = archive.infolist()
            if len(members) > settings.IMPORT_MAX_ZIP_MEMBERS:
                raise ImportRefused(
                    f"The ZIP holds {len(members):,} files; at most "
                    f"{settings.IMPORT_MAX_ZIP_MEMBERS:,} are accepted. Upload conversations.json "
                    f"on its own instead."
                )
            # Declared sizes first (cheap); the read below enforces the real one, since a
            # crafted archive may declare less than it inflates to.
            if sum(m.file_size for m in members) > settings.IMPORT_MAX_UNCOMPRESSED_BYTES:
                raise ImportRefused(
                    "The ZIP unpacks to more than "
                    f"{_mb(settings.IMPORT_MAX_UNCOMPRESSED_BYTES)}. Upload conversations.json "
                    f"on its own instead."
                )
            member = _conversations_member(members)
            if member.flag_bits & 0x1:
                raise ImportRefused("The ZIP is password-protected; upload an unencrypted export.")
            limit = settings.IMPORT_MAX_UNCOMPRESSED_BYTES
            with archive.open(member) as stream:
                data = stream.read(limit + 1)
            if len(data) > limit:
                raise ImportRefused(
                    f"conversations.json unpacks to more than {_mb(limit)}; it cannot be imported."
                )
            return data
    except ImportRefused:
        raise
    except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, RuntimeError, ValueError) as exc:
        raise ImportRefused(
            "The ZIP file is damaged or uses a format we cannot read. Upload the ZIP exactly as "
            "ChatGPT sent it, or conversations.json on its own."
        ) from exc


def _conversations_member(members: list[zipfile.ZipInfo]) -> zipfile.ZipInfo:
    """The shallowest member named conversations.json. Names are only compared, never used
    as paths, so "../" or absolute names cannot reach the file system."""
    candidates = [
        m for m in members
        if not m.is_dir()
        and PurePosixPath(m.filename.replace("\\", "/")).name == MEMBER_NAME
        and ".." not in PurePosixPath(m.filename.replace("\\", "/")).parts
        and not m.filename.startswith(("/", "\\"))
    ]
    if not candidates:
        raise ImportRefused(
            "The ZIP has no conversations.json. Upload the data export ChatGPT emailed you "
            "(Settings → Data controls → Export data)."
        )
    return min(candidates, key=lambda m: (m.filename.count("/"), m.filename))


def parse_export(data: bytes) -> list[dict[str, Any]]:
    """The list of conversations in ``conversations.json``, or a clear refusal."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ImportRefused("The file is not UTF-8 text; upload conversations.json or the export ZIP.") from exc
    try:
        parsed = json.loads(text)
    except RecursionError as exc:
        raise ImportRefused("The file nests too deeply to be a ChatGPT export.") from exc
    except ValueError as exc:
        raise ImportRefused(f"The file is not valid JSON ({exc}).") from exc
    if not isinstance(parsed, list):
        raise ImportRefused("This is not a ChatGPT conversations.json: it should be a list of conversations.")
    for position, item in enumerate(parsed, start=1):
        if not isinstance(item, dict) or not isinstance(item.get("mapping"), dict):
            raise ImportRefused(
                f"Conversation {position} of the file has no message tree (\"mapping\"); "
                f"this is not a ChatGPT export, or it is damaged."
            )
    return parsed


# --- Turning ChatGPT's tree into ours -------------------------------------------------------


def _time(value: Any, fallback: datetime) -> datetime:
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
class _Planned:
    message: Message
    parent: _Planned | None


@dataclass
class _PlannedConversation:
    conversation: Conversation
    messages: list[_Planned]
    leaf: _Planned | None


def _import_id(item: dict[str, Any]) -> str:
    for key in ("conversation_id", "id"):
        value = item.get(key)
        if isinstance(value, str) and value.strip() and len(value) <= IMPORT_ID_MAX:
            return value.strip()
    # No usable id: the conversation's own content identifies it, which is stable when the
    # same file is uploaded again.
    digest = hashlib.sha256(json.dumps(item, sort_keys=True, default=str).encode()).hexdigest()
    return f"sha256:{digest[:64]}"


def _title(item: dict[str, Any]) -> str:
    title = item.get("title")
    title = _clean(title).strip() if isinstance(title, str) else ""
    return title[:TITLE_MAX] or "Imported conversation"


def _plan_messages(
    item: dict[str, Any], *, conversation_time: datetime, skipped: Counter[str]
) -> tuple[list[_Planned], _Planned | None]:
    """Our messages for one ChatGPT tree, parents before children (so ids grow down every
    branch, as conversations/tree.py expects), and the one ``current_node`` maps to."""
    mapping: dict[str, Any] = item["mapping"]
    default_model = item.get("default_model_slug")
    default_model = default_model if isinstance(default_model, str) else ""
    roots = [
        key for key, node in mapping.items()
        if isinstance(node, dict) and (node.get("parent") is None or node.get("parent") not in mapping)
    ]
    planned: list[_Planned] = []
    anchor_of: dict[str, _Planned | None] = {}
    # Iterative depth-first walk (a long conversation is thousands of levels deep); the
    # ``seen`` set stops a crafted mapping whose children loop back.
    seen: set[str] = set()
    # (node id, nearest imported ancestor, whether the path from it here never branched)
    stack: list[tuple[str, _Planned | None, bool]] = [(key, None, False) for key in reversed(roots)]
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
    anchor: _Planned | None,
    linear: bool,
    planned: list[_Planned],
    conversation_time: datetime,
    default_model: str,
    skipped: Counter[str],
) -> _Planned | None:
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
    created = _time(message.get("create_time"), conversation_time)
    if (
        role == "assistant" and anchor is not None and linear
        and anchor.message.role == Message.Role.ASSISTANT
    ):
        # ChatGPT splits one answer around its tool steps (text, browse, more text); it
        # shows them as one answer, and so do we.
        anchor.message.content += "\n\n" + text
        return anchor
    model = metadata.get("model_slug") if isinstance(metadata.get("model_slug"), str) else default_model
    planned_message = _Planned(
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


# --- The import -----------------------------------------------------------------------------


def import_chatgpt_export(
    *, user: User, organization_id: int | None, upload: IO[bytes], size: int
) -> ImportReport:
    """Import a ChatGPT export into the user's current org; re-importing adds nothing."""
    items = parse_export(read_conversations_json(upload, size=size))
    membership = get_membership(user, organization_id)
    organization = membership.organization
    profile = default_profile(organization)
    if profile is None:
        raise ImportRefused(
            f"{organization.name} has no model enabled, so imported conversations could not be "
            f"continued. Ask an admin to enable one, then import again."
        )
    report = ImportReport(organization=organization.name)
    now = timezone.now()
    try:
        with transaction.atomic():
            # Race: the same file uploaded from two tabs at once would both find its ids new
            # and import everything twice; the membership row lock runs them one after the
            # other, and the unique constraint backs it up.
            Membership.objects.select_for_update().filter(pk=membership.pk).first()
            ids = [_import_id(item) for item in items]
            existing = set(
                Conversation.objects.filter(
                    user=user, organization=organization, import_source=SOURCE, import_id__in=ids
                ).values_list("import_id", flat=True)
            )
            plans: list[_PlannedConversation] = []
            for item, import_id in zip(items, ids, strict=True):
                title = _title(item)
                if import_id in existing:
                    report.already_imported.append(title)
                    continue
                existing.add(import_id)  # the same conversation twice in one file
                created = _time(item.get("create_time"), now)
                skipped: Counter[str] = Counter()
                messages, leaf = _plan_messages(item, conversation_time=created, skipped=skipped)
                if skipped:
                    report.skipped.update(skipped)
                    report.skipped_in.append({"title": title, "parts": dict(sorted(skipped.items()))})
                if not messages:
                    report.empty.append(title)
                    continue
                conversation = Conversation(
                    organization=organization, user=user, profile=profile, title=title,
                    title_generated=True, created_at=created,
                    updated_at=_time(item.get("update_time"), created),
                    import_source=SOURCE, import_id=import_id,
                )
                plans.append(_PlannedConversation(conversation, messages, leaf))
            _save(plans)
    except IntegrityError as exc:
        raise ImportRefused(
            "Another import of these conversations finished first; nothing was imported. "
            "Import the file again to add anything still missing."
        ) from exc
    report.imported = [
        {"id": p.conversation.pk, "title": p.conversation.title, "messages": len(p.messages)}
        for p in plans
    ]
    return report


def _save(plans: list[_PlannedConversation]) -> None:
    """Write the planned rows in a handful of bulk queries, whatever the export's size."""
    if not plans:
        return
    Conversation.objects.bulk_create([p.conversation for p in plans], batch_size=500)
    messages: list[Message] = []
    for plan in plans:
        for planned in plan.messages:
            planned.message.conversation = plan.conversation
            messages.append(planned.message)
    # In plan order, parents first: ids then grow down every branch.
    Message.objects.bulk_create(messages, batch_size=1000)
    linked: list[Message] = []
    for plan in plans:
        for planned in plan.messages:
            if planned.parent is not None:
                planned.message.parent_id = planned.parent.message.pk
                linked.append(planned.message)
        plan.conversation.current_leaf_id = plan.leaf.message.pk if plan.leaf else None
    Message.objects.bulk_update(linked, ["parent"], batch_size=1000)
    Conversation.objects.bulk_update(
        [p.conversation for p in plans], ["current_leaf"], batch_size=500
    )
