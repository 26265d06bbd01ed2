"""Reading a ChatGPT data export upload (``conversations.json``, or the ZIP that holds it).

The upload is untrusted: sizes are bounded before anything is read, only the
``conversations.json`` member of a ZIP is read (never extracted to disk), and the file is
streamed (ijson), never held whole. ``scan_export`` checks it all (JSON, shape, depth, the
size of each conversation) and counts the conversations, so a malformed file imports
nothing; ``iter_conversations`` then yields one conversation at a time.
"""

from __future__ import annotations

import codecs
import contextlib
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import PurePosixPath
from typing import IO, Any

import ijson
from django.conf import settings

MEMBER_NAME = "conversations.json"
# A ChatGPT export nests about a dozen levels deep. A file nesting far deeper is not one,
# and the streaming parser's paths would grow with the square of its depth.
MAX_DEPTH = 64
# The most JSON one conversation may take. The import holds one conversation at a time,
# at about five bytes of memory per byte of its JSON, so this bounds an import's memory
# whatever the file's size (measured in docs/export-format.md).
CONVERSATION_MAX_BYTES = 8 * 1024 * 1024
READ_CHUNK = 64 * 1024


class ImportRefused(Exception):
    """The upload cannot be imported; ``str(exc)`` says why and what to do instead."""


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

