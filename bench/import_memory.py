"""Memory of a ChatGPT import on the largest allowed file: ``python -m bench.import_memory``.

Writes a generated ChatGPT-shaped ``conversations.json`` of ``--mb`` megabytes (default
IMPORT_MAX_UNCOMPRESSED_BYTES) in conversations of about ``--conversation-kb`` each,
zipped as ChatGPT sends it, then reads it as an import job does (check pass, then one
conversation at a time through the tree planner) and prints the process's resident
memory before and at its peak. ``--with-db`` runs the whole import, writes included,
for a throwaway user in the configured database and deletes it afterwards.

The worst case for memory is the largest conversation, not the largest file: run it
again with ``--conversation-kb 8192`` (chatgpt_file.CONVERSATION_MAX_BYTES).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import zipfile
from collections import Counter
from pathlib import Path
from typing import Any

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatsite.settings")


def _kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def conversation(key: str, *, size: int) -> dict[str, Any]:
    """A conversation shaped like ChatGPT's (system node, alternating turns, metadata)."""
    text = "The quick brown fox jumps over the lazy dog. " * 12
    turns = max(2, size // 1100)
    mapping: dict[str, Any] = {"root": {"id": "root", "message": None, "parent": None,
                                        "children": ["n0"]}}
    for n in range(turns):
        mapping[f"n{n}"] = {
            "id": f"n{n}",
            "message": {
                "id": f"n{n}", "author": {"role": "user" if n % 2 == 0 else "assistant",
                                          "name": None, "metadata": {}},
                "create_time": 1735725600.0 + n, "update_time": None,
                "content": {"content_type": "text", "parts": [f"{n}: {text}"]},
                "status": "finished_successfully", "end_turn": True, "weight": 1.0,
                "metadata": {"model_slug": "gpt-4o", "request_id": f"req-{key}-{n}"},
                "recipient": "all",
            },
            "parent": "root" if n == 0 else f"n{n - 1}",
            "children": [f"n{n + 1}"] if n + 1 < turns else [],
        }
    return {"title": f"Generated {key}", "create_time": 1735725600.0,
            "update_time": 1735725600.0, "conversation_id": f"bench-{key}",
            "current_node": f"n{turns - 1}", "default_model_slug": "gpt-4o", "mapping": mapping}


def write_export(path: Path, *, size: int, conversation_size: int) -> int:
    """A ZIP holding conversations.json of about ``size`` bytes; returns its count."""
    written = count = 0
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive, \
            archive.open("conversations.json", "w", force_zip64=True) as out:
        out.write(b"[")
        while written < size:
            chunk = json.dumps(conversation(str(count), size=conversation_size)).encode()
            if count and written + len(chunk) + 2 > size:
                break
            out.write((b"," if count else b"") + chunk)
            written += len(chunk) + 1
            count += 1
        out.write(b"]")
    return count


def read_like_a_job(path: Path) -> tuple[int, int]:
    from django.utils import timezone

    from conversations.chatgpt_file import iter_conversations, open_export, scan_export
    from conversations.chatgpt_tree import plan_messages

    seen = 0
    with path.open("rb") as upload:
        size = path.stat().st_size
        with open_export(upload, size=size) as reader:
            total = scan_export(reader)
        with open_export(upload, size=size) as reader:
            for item in iter_conversations(reader):
                plan_messages(item, conversation_time=timezone.now(), skipped=Counter())
                del item
                seen += 1
    assert seen == total
    return seen, _kb("VmHWM")


def import_for_a_throwaway_user(path: Path) -> tuple[int, int]:
    """(conversations imported, peak RSS in kB before the clean-up, whose cascading
    delete loads every row it removes)."""
    from accounts.models import Membership, Organization, User
    from conversations import imports

    user = User.objects.create_user(email=f"bench-import-{os.getpid()}@example.invalid")
    organization = Organization.objects.create(name="Import benchmark")
    Membership.objects.create(user=user, organization=organization, role=Membership.Role.OWNER)
    try:
        with path.open("rb") as upload:
            report = imports.import_chatgpt_export(
                user=user, organization_id=organization.pk, upload=upload,
                size=path.stat().st_size,
            )
        return report.imported_count, _kb("VmHWM")
    finally:
        _forget(organization.pk, user.pk)


def _forget(organization_id: int, user_id: int) -> None:
    """Delete the throwaway rows in a few statements (the ORM's cascade would load every
    message first)."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("UPDATE conversations_conversation SET current_leaf_id = NULL "
                       "WHERE organization_id = %s", [organization_id])
        cursor.execute("DELETE FROM conversations_message WHERE conversation_id IN (SELECT id "
                       "FROM conversations_conversation WHERE organization_id = %s)",
                       [organization_id])
    from accounts.models import Organization, User

    Organization.objects.filter(pk=organization_id).delete()
    User.objects.filter(pk=user_id).delete()


def main() -> None:
    django.setup()
    from django.conf import settings

    from conversations.chatgpt_file import CONVERSATION_MAX_BYTES

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int,
                        default=settings.IMPORT_MAX_UNCOMPRESSED_BYTES // (1024 * 1024))
    parser.add_argument("--conversation-kb", type=int, default=40)
    parser.add_argument("--with-db", action="store_true")
    parser.add_argument("--measure", type=Path, help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.measure:
        # A fresh process (no generator leftovers): its RSS is a worker's with the app loaded.
        before = _kb("VmRSS")
        started = time.monotonic()
        path = options.measure
        done, peak = import_for_a_throwaway_user(path) if options.with_db else read_like_a_job(path)
        elapsed = time.monotonic() - started
        print(f"{'imported' if options.with_db else 'read'} {done:,} conversations in "
              f"{elapsed:.1f} s; RSS before {before / 1024:.0f} MB, peak {peak / 1024:.0f} MB, "
              f"growth {(peak - before) / 1024:.0f} MB")
        return
    size = options.mb * 1024 * 1024
    conversation_size = min(options.conversation_kb * 1024, CONVERSATION_MAX_BYTES)
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "chatgpt-export.zip"
        count = write_export(path, size=size, conversation_size=conversation_size)
        zipped = path.stat().st_size
        if zipped > settings.IMPORT_MAX_BYTES:
            raise SystemExit(f"the ZIP is {zipped:,} bytes, over IMPORT_MAX_BYTES")
        print(f"conversations.json {options.mb} MB in {count:,} conversations of "
              f"~{conversation_size // 1024} KB (ZIP {zipped / 1048576:.1f} MB)", flush=True)
        command = [sys.executable, "-m", "bench.import_memory", "--measure", str(path)]
        subprocess.run(command + (["--with-db"] if options.with_db else []), check=True)


if __name__ == "__main__":
    main()
