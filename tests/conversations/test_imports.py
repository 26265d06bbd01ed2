"""Import of a ChatGPT data export: tree mapping, the skipped-parts report, idempotency,
and hostile uploads (sizes, zip bombs, path traversal, malformed or deeply nested JSON)."""

from __future__ import annotations

import io
import json
import zipfile
from collections import Counter
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

from accounts.models import Membership, Organization, User
from conversations import chatgpt_file, chatgpt_tree, imports, tasks, tree
from conversations.imports import ImportRefused, import_chatgpt_export
from conversations.models import Conversation, DataJob, Message
from llm.models import ModelProfile
from llm.tokens import PER_MESSAGE_OVERHEAD, message_tokens

pytestmark = pytest.mark.django_db

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "chatgpt" / "conversations.json"
LISBON, FIB, LOGO, VOICE = (
    "Weekend in Lisbon", "Fibonacci in Python", "Logo idea", "Voice note",
)


def fixture_bytes() -> bytes:
    return FIXTURE.read_bytes()


def zipped(members: dict[str, bytes], *, compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=compression) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def run_import(user: User, data: bytes, organization_id: int | None = None) -> imports.ImportReport:
    return import_chatgpt_export(user=user, organization_id=organization_id,
                                 upload=io.BytesIO(data), size=len(data))


def snapshot() -> tuple[int, int]:
    return Conversation.objects.count(), Message.objects.count()


def contents(messages: list[Message]) -> list[str]:
    return [m.content for m in messages]


# --- What an import makes ----------------------------------------------------------------


def test_it_imports_titles_messages_times_and_models_into_the_current_org(
    alice: User, org_a: Organization
) -> None:
    report = run_import(alice, fixture_bytes())

    conversations = {c.title: c for c in Conversation.objects.filter(user=alice)}
    assert set(conversations) == {LISBON, FIB, LOGO}
    assert {c.organization_id for c in conversations.values()} == {org_a.pk}
    assert {c.import_source for c in conversations.values()} == {"chatgpt"}
    lisbon = conversations[LISBON]
    assert lisbon.import_id == "6770f1a2-0000-4c3e-9a11-lisbon000001"
    assert lisbon.created_at.isoformat() == "2025-01-01T10:00:00+00:00"
    assert lisbon.updated_at.isoformat() == "2025-01-01T10:15:00+00:00"
    assert lisbon.profile == ModelProfile.objects.get(name="o3-mini")
    first = lisbon.messages.order_by("id").first()
    assert first is not None
    assert first.role == "user"
    assert first.created_at.isoformat() == "2025-01-01T10:00:10+00:00"
    assert first.content.startswith("Here is a photo of the tram map.")
    answers = Message.objects.filter(conversation__user=alice, role="assistant")
    assert {a.model_name for a in answers} == {"gpt-4o", "o3-mini"}
    assert report.organization == "Acme"
    assert sorted(item["title"] for item in report.imported) == sorted([LISBON, FIB, LOGO])
    assert report.message_count == Message.objects.count() == 11


def test_imported_conversations_cost_nothing_and_never_call_the_model(
    alice: User, org_a: Organization, emulator: Any
) -> None:
    run_import(alice, fixture_bytes())

    messages = Message.objects.filter(conversation__user=alice)
    assert {m.status for m in messages} == {"done"}
    assert {m.cost_usd for m in messages} == {Decimal(0)}
    assert all(m.profile_id is None for m in messages)
    assert emulator.journal == []
    # Counted once on import (merged answers whole), so later turns need not tokenize them.
    assert [m.content_tokens for m in messages] == [message_tokens(m.content) for m in messages]
    assert all((m.content_tokens or 0) > PER_MESSAGE_OVERHEAD for m in messages)


def test_branches_become_siblings_and_the_branch_on_screen_is_kept(alice: User,
                                                                   org_a: Organization) -> None:
    run_import(alice, fixture_bytes())

    lisbon = Conversation.objects.get(title=LISBON)
    branch = tree.branch(lisbon)
    assert contents(branch) == [
        "Here is a photo of the tram map. Plan a relaxed weekend in Lisbon for two: **no** early mornings.",
        "## Saturday\n\n- 11:00 Tram 28 to Alfama\n- 13:00 Lunch at a tasca\n\n## Sunday\n\n- Belém, pastéis at 12:00",
        "What if it rains on Saturday?",
        "Move Alfama to Sunday and spend Saturday at the Oceanário.",
    ]
    edited = branch[2]
    assert contents(tree.siblings(edited)) == ["What about rain?", "What if it rains on Saturday?"]
    assert [m.parent_id for m in branch] == [None, branch[0].pk, branch[1].pk, branch[2].pk]
    assert branch[3].finish_reason == "stop"  # from ChatGPT's finish_details
    assert branch[1].finish_reason == ""  # not recorded there: not made up here
    # Ids grow down every branch, as the tree module expects.
    assert all(
        child.parent_id is not None and child.pk > child.parent_id
        for child in lisbon.messages.exclude(parent=None)
    )


def test_an_answer_split_around_tool_steps_is_one_answer_and_a_regeneration_a_sibling(
    alice: User, org_a: Organization
) -> None:
    run_import(alice, fixture_bytes())

    fib = Conversation.objects.get(title=FIB)
    question = fib.messages.get(role="user")
    first_answer = fib.messages.filter(role="assistant").first()
    assert first_answer is not None
    assert contents(tree.siblings(first_answer)) == [
        "Let me run it.\n\nThey are 0, 1, 1, 2, 3, 5, 8, 13, 21, 34.",
        "```python\na, b = 0, 1\nfor _ in range(10):\n    print(a)\n    a, b = b, a + b\n```",
    ]
    assert all(a.parent_id == question.pk for a in fib.messages.filter(role="assistant"))
    assert fib.current_leaf is not None
    assert fib.current_leaf.content.startswith("```python")  # current_node was the regeneration
    assert question.parent_id is None  # the hidden custom-instructions node is not a message


def test_parts_it_cannot_read_are_skipped_and_reported(alice: User, org_a: Organization) -> None:
    report = run_import(alice, fixture_bytes())

    assert dict(report.skipped) == {
        "image": 2, "file": 1, "audio recording": 1, "plugin or tool step": 3,
    }
    by_title = {row["title"]: row["parts"] for row in report.skipped_in}
    assert by_title[LISBON] == {"file": 1, "image": 1}
    assert by_title[LOGO] == {"image": 1, "plugin or tool step": 1}
    assert by_title[FIB] == {"plugin or tool step": 2}
    assert report.empty == [VOICE]  # only a recording: nothing readable, not imported
    logo = Conversation.objects.get(title=LOGO)
    assert contents(tree.branch(logo)) == [
        "Draw a logo for a bakery called Crumb.",
        "Here is a minimal logo: a croissant outline over the word Crumb.",
    ]
    everything = " ".join(Message.objects.values_list("content", flat=True))
    assert "file-service://" not in everything and "dalle" not in everything
    assert "Be brief." not in everything  # ChatGPT custom instructions are not messages


def test_importing_the_same_file_twice_adds_nothing(alice: User, org_a: Organization) -> None:
    run_import(alice, fixture_bytes())
    before = snapshot()

    again = run_import(alice, zipped({"conversations.json": fixture_bytes()}))

    assert snapshot() == before
    assert again.imported == []
    assert sorted(again.already_imported) == sorted([LISBON, FIB, LOGO])


def test_the_same_conversation_twice_in_one_file_is_imported_once(alice: User,
                                                                  org_a: Organization) -> None:
    items = json.loads(fixture_bytes())
    report = run_import(alice, json.dumps([items[0], items[0]]).encode())

    assert Conversation.objects.filter(user=alice).count() == 1
    assert report.already_imported == [LISBON]


def test_import_ids_are_per_user_and_org(alice: User, bob: User, charlie: User,
                                         org_a: Organization) -> None:
    run_import(alice, fixture_bytes())
    # Ordered: without order_by PostgreSQL may return rows in any order (e.g. after updates).
    alices = list(Conversation.objects.filter(user=alice).order_by("pk").values_list("pk", "title"))
    alice_messages = Message.objects.filter(conversation__user=alice).count()

    run_import(bob, fixture_bytes())
    org_b = charlie.memberships.get().organization
    Membership.objects.create(user=alice, organization=org_b)
    run_import(alice, fixture_bytes(), organization_id=org_b.pk)

    assert Conversation.objects.filter(user=bob, organization=org_a).count() == 3
    assert Conversation.objects.filter(user=alice, organization=org_b).count() == 3
    # alice's first import is untouched by bob's and by her own in org B.
    assert list(Conversation.objects.filter(user=alice, organization=org_a).order_by("pk")
                .values_list("pk", "title")) == alices
    assert Message.objects.filter(conversation__user=alice,
                                  conversation__organization=org_a).count() == alice_messages


def test_charlie_cannot_import_into_alice_s_org(alice: User, charlie: User,
                                                org_a: Organization) -> None:
    run_import(charlie, fixture_bytes(), organization_id=org_a.pk)

    # An org he is not in falls back to his own; nothing lands in alice's.
    assert not Conversation.objects.filter(organization=org_a).exists()
    assert Conversation.objects.filter(user=charlie).exclude(organization=org_a).count() == 3


def test_a_zip_export_with_other_files_imports_only_conversations_json(alice: User,
                                                                       org_a: Organization) -> None:
    data = zipped({
        "chat.html": b"<html>not read</html>",
        "file-PHOTO1.jpg": b"\xff\xd8\xff" + b"\0" * 100,
        "conversations.json": fixture_bytes(),
        "user.json": b'{"email": "someone@example.com"}',
    })

    run_import(alice, data)

    assert Conversation.objects.filter(user=alice).count() == 3


def test_nul_characters_and_long_titles_are_cleaned(alice: User, org_a: Organization) -> None:
    item = json.loads(fixture_bytes())[2]
    item["title"] = "T" * 500
    item["mapping"]["l-u1"]["message"]["content"]["parts"] = ["nul\x00here"]

    run_import(alice, json.dumps([item]).encode())

    conversation = Conversation.objects.get(user=alice)
    assert conversation.title == "T" * 200
    first = conversation.messages.order_by("id").first()
    assert first is not None and first.content == "nulhere"


def test_a_mapping_whose_children_loop_back_imports_what_it_can(alice: User,
                                                                org_a: Organization) -> None:
    item = json.loads(fixture_bytes())[2]
    item["mapping"]["l-a2"]["children"] = ["l-u1", "l-root"]  # a cycle

    report = run_import(alice, json.dumps([item]).encode())

    assert report.message_count == 2


# --- Hostile and broken uploads ----------------------------------------------------------


def refused(user: User, data: bytes) -> str:
    before = snapshot()
    with pytest.raises(ImportRefused) as excinfo:
        run_import(user, data)
    assert snapshot() == before
    return str(excinfo.value)


def test_an_oversized_upload_is_refused(alice: User, org_a: Organization, settings: Any) -> None:
    settings.IMPORT_MAX_BYTES = 2048

    assert "limited to" in refused(alice, fixture_bytes())


def test_a_zip_bomb_is_refused_before_it_is_inflated(alice: User, org_a: Organization,
                                                     settings: Any) -> None:
    settings.IMPORT_MAX_UNCOMPRESSED_BYTES = 1024 * 1024
    bomb = zipped({"conversations.json": b"[" + b" " * (8 * 1024 * 1024) + b"]"})
    assert len(bomb) < 20_000

    assert "unpacks to more than 1 MB" in refused(alice, bomb)


def test_a_zip_that_understates_its_sizes_is_cut_off_at_the_limit(
    alice: User, org_a: Organization, settings: Any
) -> None:
    settings.IMPORT_MAX_UNCOMPRESSED_BYTES = 1024 * 1024
    data = bytearray(zipped({"conversations.json": b"[" + b" " * (4 * 1024 * 1024) + b"]"},
                            compression=zipfile.ZIP_STORED))
    # Rewrite the declared size in the local header and the central directory to 2 bytes.
    size = (4 * 1024 * 1024 + 2).to_bytes(4, "little")
    lie = (2).to_bytes(4, "little")
    assert data.count(size) == 4  # compressed and uncompressed size, in both headers
    data = bytearray(bytes(data).replace(size, lie))

    message = refused(alice, bytes(data))
    assert "unpacks to more than" in message or "damaged" in message


def test_a_zip_with_too_many_members_is_refused(alice: User, org_a: Organization,
                                                settings: Any) -> None:
    settings.IMPORT_MAX_ZIP_MEMBERS = 10
    members = {f"file{n}.txt": b"x" for n in range(11)}
    members["conversations.json"] = fixture_bytes()

    assert "at most 10" in refused(alice, zipped(members))


def test_path_traversal_names_are_never_read(alice: User, org_a: Organization) -> None:
    evil = json.dumps([{"title": "EVIL", "mapping": {}}]).encode()

    message = refused(alice, zipped({"../conversations.json": evil,
                                     "/abs/conversations.json": evil}))
    assert "no conversations.json" in message

    run_import(alice, zipped({"../../conversations.json": evil, "conversations.json": fixture_bytes()}))
    assert not Conversation.objects.filter(title="EVIL").exists()
    assert Conversation.objects.filter(user=alice).count() == 3


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b'[{"mapping": {"n": ' + b"[" * 200_000 + b"]" * 200_000 + b"}}]", "nests too deeply"),
        (b'[{"title": "x", "mapping": {}', "not valid JSON"),
        (b'{"conversations": []}', "should be a list of conversations"),
        (b"\xff\xfe\x00garbage", "not UTF-8"),
        (b"PK\x03\x04 not really a zip", "damaged"),
    ],
    ids=["deeply-nested", "truncated", "not-a-list", "not-utf8", "fake-zip"],
)
def test_malformed_files_get_a_clear_error_and_import_nothing(
    alice: User, org_a: Organization, data: bytes, expected: str
) -> None:
    assert expected in refused(alice, data)


def test_one_bad_conversation_means_nothing_is_imported(alice: User,
                                                         org_a: Organization) -> None:
    items = json.loads(fixture_bytes())
    items.append({"title": "Broken", "mapping": "not a tree"})

    assert "Conversation 5 of the file has no message tree" in refused(
        alice, json.dumps(items).encode()
    )


def test_a_failure_while_writing_keeps_whole_conversations_and_no_half_one(
    alice: User, org_a: Organization, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = Message.objects.bulk_update
    calls = []

    def fail_the_second(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("disk full")
        return real(*args, **kwargs)

    monkeypatch.setattr(Message.objects, "bulk_update", fail_the_second)

    with pytest.raises(RuntimeError):
        run_import(alice, fixture_bytes())

    # The first conversation is whole; the second left nothing behind; importing again
    # adds the rest.
    (first,) = Conversation.objects.filter(user=alice)
    assert first.current_leaf_id is not None
    assert Message.objects.filter(conversation__user=alice).exclude(conversation=first).count() == 0
    monkeypatch.setattr(Message.objects, "bulk_update", real)
    report = run_import(alice, fixture_bytes())
    assert report.already_imported == [first.title]
    assert Conversation.objects.filter(user=alice).count() == 3


# --- Through the account page: a background job ----------------------------------------


@pytest.fixture(autouse=True)
def private_jobs_dir(settings: Any, tmp_path: Path) -> Path:
    settings.DATA_JOBS_DIR = tmp_path / "jobs"
    return settings.DATA_JOBS_DIR


def upload(client: Client, name: str, data: bytes) -> Any:
    file = io.BytesIO(data)
    file.name = name
    return client.post("/account/import/", {"file": file}, follow=True)


def run_queued_imports() -> None:
    """What the worker does with each queued import (the on-commit send never fires
    inside a test's transaction)."""
    for job_id in DataJob.objects.filter(kind="import", status="queued").values_list("pk", flat=True):
        tasks.run_data_import(job_id)


def test_the_account_page_queues_the_import_then_shows_progress_and_the_report(
    client: Client, alice: User, org_a: Organization, private_jobs_dir: Path
) -> None:
    client.force_login(alice)

    response = upload(client, "chatgpt-export.zip", zipped({"conversations.json": fixture_bytes()}))

    body = response.content.decode()
    assert response.redirect_chain == [("/account/", 302)]
    assert "Import queued" in body
    assert not Conversation.objects.exists()  # nothing imported in the request
    job = DataJob.objects.get(user=alice, kind="import")
    assert (job.status, job.organization_id) == ("queued", org_a.pk)
    saved = private_jobs_dir / job.file_name
    assert saved.is_file() and saved.stat().st_mode & 0o777 == 0o600
    assert client.get("/account/jobs.json").json()["import"]["status"] == "queued"

    run_queued_imports()

    job.refresh_from_db()
    assert (job.status, job.done, job.total) == ("done", 4, 4)  # 3 imported, 1 empty
    assert not saved.exists()  # the upload is deleted once the import ended
    assert client.get("/account/jobs.json").json()["import"] == {
        "id": job.pk, "kind": "import", "status": "done", "done": 4, "total": 4, "live": False,
    }
    body = client.get("/account/").content.decode()
    assert "Imported 3 conversations (11 messages) into Acme." in body
    assert "2 × image" in body and "3 × plugin or tool step" in body
    lisbon = Conversation.objects.get(title=LISBON)
    assert f'href="/c/{lisbon.pk}/"' in body


def test_a_bad_upload_fails_its_job_with_the_reason_and_imports_nothing(
    client: Client, alice: User, org_a: Organization, private_jobs_dir: Path
) -> None:
    client.force_login(alice)

    upload(client, "conversations.json", b"not json at all")
    run_queued_imports()

    job = DataJob.objects.get(user=alice)
    assert job.status == "failed" and "The file is not valid JSON" in job.error
    assert "Import failed: The file is not valid JSON" in client.get("/account/").content.decode()
    assert not Conversation.objects.exists()
    assert list(private_jobs_dir.iterdir()) == []
    empty = client.post("/account/import/", {})
    assert empty.status_code == 400
    assert "Choose your ChatGPT export" in empty.content.decode()


def test_an_oversized_request_is_refused_before_it_is_read(client: Client, alice: User,
                                                            org_a: Organization,
                                                            settings: Any) -> None:
    settings.IMPORT_MAX_BYTES = 1024
    client.force_login(alice)

    response = upload(client, "conversations.json", b" " * 200_000)

    assert response.status_code == 413
    assert "import limit" in response.content.decode()
    assert not Conversation.objects.exists() and not DataJob.objects.exists()


def test_signed_out_visitors_cannot_import(client: Client, alice: User) -> None:
    response = client.post("/account/import/", {"file": io.BytesIO(fixture_bytes())})

    assert response.status_code == 302
    assert "/accounts/login/" in response["Location"]
    assert not Conversation.objects.exists() and not DataJob.objects.exists()


def test_one_import_runs_at_a_time_per_person(client: Client, alice: User, bob: User,
                                              org_a: Organization) -> None:
    client.force_login(alice)
    upload(client, "conversations.json", fixture_bytes())

    second = upload(client, "conversations.json", fixture_bytes())

    assert second.status_code == 429
    assert "Your import is still running" in second.content.decode()
    assert DataJob.objects.filter(user=alice).count() == 1
    # Someone else's import is not held up by alice's.
    client.force_login(bob)
    assert upload(client, "conversations.json", fixture_bytes()).status_code == 200
    assert DataJob.objects.filter(user=bob, status="queued").count() == 1


def test_imports_per_day_are_limited(client: Client, alice: User, org_a: Organization,
                                     settings: Any) -> None:
    settings.IMPORTS_PER_DAY = 2
    client.force_login(alice)
    for _ in range(2):
        upload(client, "conversations.json", fixture_bytes())
        run_queued_imports()

    third = upload(client, "conversations.json", fixture_bytes())

    assert third.status_code == 429
    assert "You have started 2 imports in the last 24 hours" in third.content.decode()
    assert DataJob.objects.filter(user=alice).count() == 2


def test_charlie_never_sees_alice_s_import_or_its_report(client: Client, alice: User,
                                                         charlie: User,
                                                         org_a: Organization) -> None:
    client.force_login(alice)
    upload(client, "conversations.json", fixture_bytes())
    run_queued_imports()

    client.force_login(charlie)
    body = client.get("/account/").content.decode()

    assert LISBON not in body and "Imported 3" not in body
    assert client.get("/account/jobs.json").json() == {"import": None, "export": None}


# --- Bounded: text, transactions, memory --------------------------------------------------


def conversation_with(texts: list[str], *, key: str = "long") -> dict[str, Any]:
    """A ChatGPT conversation whose messages alternate user/assistant with these texts."""
    mapping: dict[str, Any] = {"root": {"id": "root", "message": None, "parent": None,
                                        "children": ["n0"] if texts else []}}
    for n, text in enumerate(texts):
        mapping[f"n{n}"] = {
            "id": f"n{n}",
            "message": {"id": f"n{n}", "author": {"role": "user" if n % 2 == 0 else "assistant"},
                        "create_time": 1735725600.0 + n,
                        "content": {"content_type": "text", "parts": [text]},
                        "metadata": {}, "recipient": "all"},
            "parent": "root" if n == 0 else f"n{n - 1}",
            "children": [f"n{n + 1}"] if n + 1 < len(texts) else [],
        }
    return {"title": f"Conversation {key}", "conversation_id": key,
            "current_node": f"n{len(texts) - 1}", "create_time": 1735725600.0, "mapping": mapping}


def test_imported_text_obeys_the_typed_message_limit_by_splitting_into_parts(
    alice: User, org_a: Organization, settings: Any
) -> None:
    limit = settings.MAX_MESSAGE_CHARS
    long_question = ("word " * (limit // 5)) * 2 + "end"  # a little over twice the limit
    answer = "Short answer."

    report = run_import(alice, json.dumps([conversation_with([long_question, answer])]).encode())

    conversation = Conversation.objects.get(user=alice)
    branch = tree.branch(conversation)
    assert [m.role for m in branch] == ["user", "user", "user", "assistant"]
    assert all(len(m.content) <= limit for m in branch)
    assert "".join(m.content for m in branch[:3]) == long_question  # nothing lost
    assert branch[-1].content == answer and branch[-1].parent_id == branch[2].pk
    assert (report.split_messages, report.split_parts) == (1, 3)
    # Each part carries its own count, as a typed message of that text would.
    assert [m.content_tokens for m in branch] == [message_tokens(m.content) for m in branch]
    assert report.as_dict()["split_messages"] == 1
    assert max(len(m.content) for m in Message.objects.filter(conversation=conversation)) <= limit


def test_the_split_note_is_in_the_report_on_the_account_page(client: Client, alice: User,
                                                             org_a: Organization,
                                                             settings: Any) -> None:
    client.force_login(alice)
    long = "x" * (settings.MAX_MESSAGE_CHARS + 10)
    upload(client, "conversations.json", json.dumps([conversation_with([long, "ok"])]).encode())
    run_queued_imports()

    body = client.get("/account/").content.decode()

    assert f"1 message was longer than {settings.MAX_MESSAGE_CHARS} characters" in body
    assert "split into 2 parts" in body


class WriteTransactions:
    """Rows written by each transaction, counted from the database's own row counts."""

    def __init__(self) -> None:
        self.rows: list[int] = []
        self._open = False

    def __call__(self, execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        result = execute(sql, params, many, context)
        verb = sql.lstrip().split(" ", 1)[0].upper()
        if verb in ("INSERT", "UPDATE", "DELETE"):
            if not self._open:
                self.rows.append(0)
                self._open = True
            self.rows[-1] += max(context["cursor"].rowcount, 0)
        return result

    def committed(self) -> None:
        self._open = False


def test_no_transaction_of_an_import_writes_more_than_one_batch_of_messages(
    alice: User, org_a: Organization, monkeypatch: pytest.MonkeyPatch
) -> None:
    from django.db import connection, transaction

    monkeypatch.setattr(imports, "MESSAGES_PER_TRANSACTION", 100)
    big = conversation_with([f"message {n}" for n in range(350)], key="big")
    small = [conversation_with(["hi", "hello"], key=f"small{n}") for n in range(20)]
    data = json.dumps([small[0], big, *small[1:]]).encode()
    counter = WriteTransactions()
    real_atomic = transaction.atomic

    class CountedAtomic:
        """Each outermost block of the import (the test's own transaction is below it)."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            self._inner = real_atomic(*args, **kwargs)

        def __enter__(self) -> Any:
            counter.committed()
            return self._inner.__enter__()

        def __exit__(self, *exc: Any) -> Any:
            result = self._inner.__exit__(*exc)
            counter.committed()
            return result

    monkeypatch.setattr(imports.transaction, "atomic", CountedAtomic)
    with connection.execute_wrapper(counter):
        report = run_import(alice, data)

    assert report.imported_count == 21 and report.message_count == 390
    # The old import wrote all 390 messages and 21 conversations in one transaction; now
    # none writes more than a batch of 100 messages, their parent links and its
    # conversation row, and there is at least one per conversation.
    assert max(counter.rows) <= 2 * 100 + 2
    assert len(counter.rows) >= 21 + 4
    assert Conversation.objects.get(import_id="big").messages.count() == 350
    assert not Conversation.objects.filter(import_source=imports.PARTIAL_SOURCE).exists()
    assert [m.content for m in tree.branch(Conversation.objects.get(import_id="big"))][-1] == (
        "message 349"
    )


def test_a_long_conversation_is_hidden_until_its_last_batch_is_written(
    alice: User, org_a: Organization, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(imports, "MESSAGES_PER_TRANSACTION", 10)
    seen: list[tuple[int, int]] = []
    real = imports._write_batch

    def watch(conversation: Conversation, batch: Any) -> None:
        real(conversation, batch)
        seen.append((
            Conversation.objects.owned_by(alice).not_deleted().filter(import_source="chatgpt").count(),
            Conversation.objects.filter(import_source=imports.PARTIAL_SOURCE).count(),
        ))

    monkeypatch.setattr(imports, "_write_batch", watch)

    run_import(alice, json.dumps([conversation_with([str(n) for n in range(35)])]).encode())

    assert seen == [(0, 1)] * 4  # four batches, the conversation hidden and partial throughout
    assert Conversation.objects.owned_by(alice).not_deleted().count() == 1


def generated_export(size: int) -> bytes:
    """A ChatGPT-shaped export of about ``size`` bytes: many conversations of 40 turns."""
    one = json.dumps(conversation_with([("lorem ipsum " * 40)] * 40, key="0")).encode()
    count = max(1, size // len(one))
    body = b",".join(
        one.replace(b'"conversation_id": "0"', f'"conversation_id": "{n}"'.encode())
        for n in range(count)
    )
    return b"[" + body + b"]"


def parser_peak(data: bytes) -> int:
    """Peak bytes Python allocated to check and read every conversation of ``data``
    (the file itself is on disk, as in a job, not in memory)."""
    import tempfile
    import tracemalloc

    with tempfile.TemporaryFile() as upload:
        upload.write(data)
        tracemalloc.start()
        try:
            with chatgpt_file.open_export(upload, size=len(data)) as reader:
                total = chatgpt_file.scan_export(reader)
            with chatgpt_file.open_export(upload, size=len(data)) as reader:
                seen = 0
                for item in chatgpt_file.iter_conversations(reader):
                    chatgpt_tree.plan_messages(item, conversation_time=timezone.now(),
                                               skipped=Counter())
                    seen += 1
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    assert seen == total > 0
    return peak


@pytest.mark.soak
def test_the_parser_s_memory_does_not_grow_with_the_file(settings: Any) -> None:
    settings.IMPORT_MAX_BYTES = 100 * 1024 * 1024
    small = parser_peak(generated_export(5 * 1024 * 1024))
    large = parser_peak(generated_export(50 * 1024 * 1024))

    # Ten times the file, the same peak give or take 1 MB; json.loads took ~29 bytes per
    # byte, which would be 1.4 GB here.
    assert large - small < 1024 * 1024
    assert large < 4 * 1024 * 1024


def test_a_conversation_over_the_per_conversation_cap_is_refused_before_anything_is_written(
    alice: User, org_a: Organization, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(chatgpt_file, "CONVERSATION_MAX_BYTES", 256 * 1024)
    big = conversation_with(["x" * 2000] * 300, key="huge")  # about 700 KB

    message = refused(alice, json.dumps([conversation_with(["a", "b"], key="ok"), big]).encode())

    assert "Conversation 2 of the file is larger than" in message
