"""Importing a ChatGPT data export (``conversations.json``, or the ZIP that holds it).

ChatGPT stores a conversation as a tree: ``mapping`` holds nodes with ``parent`` and
``children``, and ``current_node`` is the leaf on screen. Each imported message keeps its
place in that tree (``Message.parent``; edits and regenerations become siblings) and the
conversation shows the same branch (``Conversation.current_leaf``). Hidden system
messages and the user's ChatGPT custom instructions are left out silently; what a person
saw but we cannot show (images, files, audio, plugin and tool steps, reasoning notes) is
skipped and counted in the report.

Imported conversations belong to the importing user in their current org, cost $0 and
never call the model. The upload is untrusted: sizes are bounded before anything is read,
only the ``conversations.json`` member of a ZIP is read (never extracted to disk), and the
file is streamed (ijson), never held whole. A first pass checks it all (JSON, shape, depth,
the size of each conversation) and counts the conversations, so a malformed file imports
nothing; the second pass holds one conversation at a time in memory and writes it in small
transactions (at most ``MESSAGES_PER_TRANSACTION`` messages each), so other people's
sends never queue behind an import, even on SQLite. Imported text obeys the limit typed
text does (``MAX_MESSAGE_CHARS``): a longer message becomes several, and the report counts
them.
"""

from __future__ import annotations

import codecs
import contextlib
import hashlib
import json
import math
import zipfile
import zlib
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import PurePosixPath
from typing import IO, TYPE_CHECKING, Any

import ijson
from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from conversations.access import get_membership
from conversations.models import Conversation, Message
from llm.profiles import default_profile

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
# A ChatGPT export nests about a dozen levels deep. A file nesting far deeper is not one,
# and the streaming parser's paths would grow with the square of its depth.
MAX_DEPTH = 64
# The most JSON one conversation may take. The import holds one conversation at a time,
# at about five bytes of memory per byte of its JSON, so this bounds an import's memory
# whatever the file's size (measured in docs/export-format.md).
CONVERSATION_MAX_BYTES = 8 * 1024 * 1024
# On SQLite a transaction holds the whole database's write lock: others' sends wait for
# at most one of these, never for the whole import.
MESSAGES_PER_TRANSACTION = 500
READ_CHUNK = 64 * 1024
# A conversation too long for one transaction is written under this source, hidden, and
# switched to SOURCE with its last message; a crash leaves it for clean-up, never half
# shown and never mistaken for "already imported".
PARTIAL_SOURCE = "chatgpt:partial"

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


# --- Reading the upload ---------------------------------------------------------------------


def _mb(n: int) -> str:
    return f"{n / (1024 * 1024):.0f} MB"


_ZIP_ERRORS = (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, RuntimeError, ValueError)
_DAMAGED_ZIP = (
    "The ZIP file is damaged or uses a format we cannot read. Upload the ZIP exactly as "
    "ChatGPT sent it, or conversations.json on its own."
)


class ExportReader:
    """``conversations.json`` as the streaming parser reads it: bytes counted and refused
    past ``limit`` (a ZIP member may inflate to more than it declares), a UTF-8 byte-order
    mark dropped, and the text checked to be UTF-8 as it goes by."""

    def __init__(self, raw: IO[bytes], *, limit: int, too_big: str) -> None:
        self._raw = raw
        self._limit = limit
        self._too_big = too_big
        self._utf8 = codecs.getincrementaldecoder("utf-8")()
        self._started = False
        self.position = 0

    def read(self, size: int = -1) -> bytes:
        if size == 0:
            return b""  # ijson asks for nothing first, to learn bytes from text
        chunk = self._raw.read(size if size > 0 else READ_CHUNK)
        if not self._started:
            self._started = True
            chunk = chunk.removeprefix(codecs.BOM_UTF8)
        self.position += len(chunk)
        if self.position > self._limit:
            raise ImportRefused(self._too_big)
        try:
            self._utf8.decode(chunk, final=not chunk)
        except UnicodeDecodeError as exc:
            raise ImportRefused(
                "The file is not UTF-8 text; upload conversations.json or the export ZIP."
            ) from exc
        return chunk


@contextlib.contextmanager
def open_export(upload: IO[bytes], *, size: int) -> Iterator[ExportReader]:
    """``conversations.json`` from the file itself or from a ChatGPT ZIP, opened for one
    streaming pass (open it again for another)."""
    if size > settings.IMPORT_MAX_BYTES:
        raise ImportRefused(
            f"The file is {_mb(size)}; imports are limited to {_mb(settings.IMPORT_MAX_BYTES)}. "
            f"Upload only conversations.json from your ChatGPT export."
        )
    upload.seek(0)
    head = upload.read(4)
    upload.seek(0)
    if not head.startswith(b"PK"):
        yield ExportReader(
            upload, limit=settings.IMPORT_MAX_BYTES,
            too_big=f"Imports are limited to {_mb(settings.IMPORT_MAX_BYTES)}.",
        )
        return
    limit = settings.IMPORT_MAX_UNCOMPRESSED_BYTES
    try:
        with zipfile.ZipFile(upload) as archive:
            member = _checked_member(archive)
            with archive.open(member) as stream:
                yield ExportReader(
                    stream, limit=limit,
                    too_big=f"conversations.json unpacks to more than {_mb(limit)}; it cannot "
                    f"be imported.",
                )
    except _ZIP_ERRORS as exc:
        raise ImportRefused(_DAMAGED_ZIP) from exc


def _checked_member(archive: zipfile.ZipFile) -> zipfile.ZipInfo:
    members = archive.infolist()
    if len(members) > settings.IMPORT_MAX_ZIP_MEMBERS:
        raise ImportRefused(
            f"The ZIP holds {len(members):,} files; at most "
            f"{settings.IMPORT_MAX_ZIP_MEMBERS:,} are accepted. Upload conversations.json "
            f"on its own instead."
        )
    # Declared sizes first (cheap); ExportReader enforces the real one, since a crafted
    # archive may declare less than it inflates to.
    if sum(m.file_size for m in members) > settings.IMPORT_MAX_UNCOMPRESSED_BYTES:
        raise ImportRefused(
            "The ZIP unpacks to more than "
            f"{_mb(settings.IMPORT_MAX_UNCOMPRESSED_BYTES)}. Upload conversations.json "
            f"on its own instead."
        )
    member = _conversations_member(members)
    if member.flag_bits & 0x1:
        raise ImportRefused("The ZIP is password-protected; upload an unencrypted export.")
    return member


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


def scan_export(reader: ExportReader) -> int:
    """Check the whole file without building it and count its conversations: a JSON
    list of objects, each with a ``mapping`` object, no deeper than ``MAX_DEPTH``, none
    over ``CONVERSATION_MAX_BYTES``. Memory stays flat: only parser events are seen."""
    depth = count = started_at = 0
    key: str | None = None
    has_tree = False
    try:
        for event, value in ijson.basic_parse(reader, use_float=True):
            if event == "start_map" or event == "start_array":
                depth += 1
                if depth > MAX_DEPTH:
                    raise ImportRefused("The file nests too deeply to be a ChatGPT export.")
                if depth == 1 and event != "start_array":
                    raise _not_a_list()
                if depth == 2:
                    count += 1
                    if event != "start_map":
                        raise _no_tree(count)
                    has_tree, key, started_at = False, None, reader.position
                elif depth == 3 and key == "mapping":
                    has_tree = event == "start_map"
            elif event == "end_map" or event == "end_array":
                if depth == 2:
                    if not has_tree:
                        raise _no_tree(count)
                    # Positions move a read (64 KB) at a time: close enough for a cap.
                    if reader.position - started_at > CONVERSATION_MAX_BYTES + READ_CHUNK:
                        raise ImportRefused(
                            f"Conversation {count} of the file is larger than "
                            f"{_mb(CONVERSATION_MAX_BYTES)}, the most one conversation may "
                            f"take; nothing was imported."
                        )
                depth -= 1
            elif depth == 2 and event == "map_key":
                key = value
                if key == "mapping":
                    has_tree = False
            elif depth == 0:
                raise _not_a_list()
            elif depth == 1:
                count += 1
                raise _no_tree(count)
    except ijson.JSONError as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else "cut short"
        raise ImportRefused(f"The file is not valid JSON ({reason}).") from exc
    return count


def _not_a_list() -> ImportRefused:
    return ImportRefused(
        "This is not a ChatGPT conversations.json: it should be a list of conversations."
    )


def _no_tree(position: int) -> ImportRefused:
    return ImportRefused(
        f"Conversation {position} of the file has no message tree (\"mapping\"); "
        f"this is not a ChatGPT export, or it is damaged."
    )


def iter_conversations(reader: ExportReader) -> Iterator[dict[str, Any]]:
    """The file's conversations one at a time (after ``scan_export`` passed it)."""
    try:
        yield from ijson.items(reader, "item", use_float=True)
    except ijson.JSONError as exc:
        raise ImportRefused("The file changed or is damaged; import it again.") from exc


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
    profile = default_profile(organization)
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
    title = _title(item)
    import_id = _import_id(item)
    if Conversation.objects.filter(
        user=user, organization=organization, import_source=SOURCE, import_id=import_id
    ).exists():
        report.add_already_imported(title)  # also the same conversation twice in one file
        return
    created = _time(item.get("create_time"), now)
    skipped: Counter[str] = Counter()
    messages, leaf = _plan_messages(item, conversation_time=created, skipped=skipped)
    if skipped:
        report.add_skipped(title, skipped)
    if not messages:
        report.add_empty(title)
        return
    split, parts = _split_long_messages(messages)
    conversation = Conversation(
        organization=organization, user=user, profile=profile, title=title,
        title_generated=True, created_at=created,
        updated_at=_time(item.get("update_time"), created),
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


def _split_long_messages(messages: list[_Planned]) -> tuple[int, int]:
    """Messages over ``MAX_MESSAGE_CHARS`` (the limit typed text has) become a chain of
    parts in place; the planned message keeps the last part, so its children and the
    leaf still hang under it. Returns (messages split, parts they became)."""
    limit = settings.MAX_MESSAGE_CHARS
    if all(len(p.message.content) <= limit for p in messages):
        return 0, 0
    split = parts = 0
    result: list[_Planned] = []
    for planned in messages:
        if len(planned.message.content) <= limit:
            result.append(planned)
            continue
        pieces = split_text(planned.message.content, limit)
        split += 1
        parts += len(pieces)
        parent = planned.parent
        for piece in pieces[:-1]:
            part = _Planned(
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


def _save(conversation: Conversation, messages: list[_Planned], leaf: _Planned | None) -> None:
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


def _write_batch(conversation: Conversation, batch: list[_Planned]) -> None:
    for planned in batch:
        planned.message.conversation = conversation
    # In plan order, parents first: ids then grow down every branch.
    Message.objects.bulk_create([p.message for p in batch])
    linked: list[Message] = []
    for planned in batch:
        if planned.parent is not None:
            planned.message.parent_id = planned.parent.message.pk
            linked.append(planned.message)
    if linked:
        Message.objects.bulk_update(linked, ["parent"])


def _show(conversation: Conversation, leaf: _Planned | None, *, update_fields: list[str]) -> None:
    conversation.current_leaf_id = leaf.message.pk if leaf else None
    conversation.save(update_fields=update_fields)


def forget_partial_imports(*, user_ids: list[int] | None = None) -> int:
    """Delete conversations a crashed import left half written (never shown)."""
    partial = Conversation.objects.filter(import_source=PARTIAL_SOURCE)
    if user_ids is not None:
        partial = partial.filter(user_id__in=user_ids)
    return partial.delete()[0]
