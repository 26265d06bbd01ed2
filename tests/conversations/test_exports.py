"""Export (one conversation as Markdown or JSON) and "Export my data" (a ZIP of all, built
by a worker into a private file its owner downloads until it expires)."""

from __future__ import annotations

import io
import json
import zipfile
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from accounts.models import Membership, Organization, User
from conversations import datajobs, exports, tasks
from conversations.models import Conversation, DataJob, Message
from llm.models import ModelProfile

pytestmark = pytest.mark.django_db


def make_conversation(user: User, organization: Organization, *, title: str,
                      custom_instructions: str = "") -> Conversation:
    return Conversation.objects.create(
        user=user, organization=organization, title=title,
        profile=ModelProfile.objects.get(name="o3-mini"),
        custom_instructions=custom_instructions,
    )


def add(conversation: Conversation, role: str, content: str, parent: Message | None,
        **facts: Any) -> Message:
    message = Message.objects.create(conversation=conversation, role=role, content=content,
                                     parent=parent, **facts)
    Conversation.objects.filter(pk=conversation.pk).update(current_leaf=message)
    conversation.current_leaf = message
    return message


def answer(conversation: Conversation, content: str, parent: Message) -> Message:
    return add(conversation, "assistant", content, parent, model_name="o3-mini",
               reasoning_effort="high", prompt_tokens=1200, cached_tokens=200,
               completion_tokens=900, reasoning_tokens=640, cost_usd=Decimal("0.005170"),
               finish_reason="stop")


@pytest.fixture
def branched(alice: User, org_a: Organization) -> Conversation:
    """q1 → a1 → (q2 → a2 | q2b → a2b); the branch on screen ends at a2b."""
    org_a.developer_message = "ORG-SECRET developer instructions"
    org_a.save(update_fields=["developer_message"])
    conversation = make_conversation(alice, org_a, title="Rust vs Go",
                                     custom_instructions="CUSTOM-SECRET instructions")
    q1 = add(conversation, "user", "Compare **Rust** and Go for a CLI.", None)
    a1 = answer(conversation, "Both work; Rust gives *smaller* binaries.", q1)
    q2 = add(conversation, "user", "Old branch question", a1)
    answer(conversation, "Old branch answer", q2)
    q2b = add(conversation, "user", "Which one compiles faster?", a1)
    answer(conversation, "Go compiles faster.", q2b)
    return conversation


def get(client: Client, user: User, url: str) -> Any:
    client.force_login(user)
    return client.get(url)


def test_markdown_export_downloads_the_branch_on_screen(client: Client, alice: User,
                                                        branched: Conversation) -> None:
    response = get(client, alice, f"/c/{branched.pk}/export.md")

    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/markdown")
    assert response["Content-Disposition"] == 'attachment; filename="rust-vs-go.md"'
    text = response.content.decode()
    assert text.startswith("# Rust vs Go\n")
    assert "- Model: o3-mini" in text
    assert "Compare **Rust** and Go for a CLI." in text  # the Markdown source, not HTML
    order = [text.index(s) for s in ("Compare **Rust**", "smaller", "compiles faster?", "Go compiles faster.")]
    assert order == sorted(order)
    assert "Old branch" not in text
    assert "## Assistant · o3-mini · high effort · " in text
    assert "1,200 prompt tokens (200 cached) · 900 output tokens (640 reasoning) · $0.005170" in text


def test_json_export_has_a_schema_version_and_each_message_s_facts(
    client: Client, alice: User, branched: Conversation
) -> None:
    response = get(client, alice, f"/c/{branched.pk}/export.json")

    assert response.status_code == 200
    assert response["Content-Disposition"] == 'attachment; filename="rust-vs-go.json"'
    document = json.loads(response.content)
    assert document["schema"] == "teamchat.conversation"
    assert document["schema_version"] == exports.SCHEMA_VERSION == 1
    assert document["conversation"]["title"] == "Rust vs Go"
    assert document["conversation"]["model"] == "o3-mini"
    messages = document["messages"]
    assert [m["content"] for m in messages] == [
        "Compare **Rust** and Go for a CLI.", "Both work; Rust gives *smaller* binaries.",
        "Which one compiles faster?", "Go compiles faster.",
    ]
    assert [m["role"] for m in messages] == ["user", "assistant", "user", "assistant"]
    assert messages[0]["parent"] is None
    assert all(m["parent"] == prev["id"] for prev, m in zip(messages, messages[1:], strict=False))
    last = messages[-1]
    assert last["reasoning_effort"] == "high"
    assert last["model"] == "o3-mini"
    assert last["usage"] == {"prompt_tokens": 1200, "cached_tokens": 200,
                             "completion_tokens": 900, "reasoning_tokens": 640}
    assert last["cost_usd"] == "0.005170"
    assert branched.current_leaf is not None
    assert last["created_at"].startswith(str(branched.current_leaf.created_at.date()))
    assert "other_branches" not in document


@pytest.mark.parametrize("fmt", ["md", "json"])
def test_exports_leave_out_the_org_and_custom_instructions(
    client: Client, alice: User, branched: Conversation, fmt: str
) -> None:
    body = get(client, alice, f"/c/{branched.pk}/export.{fmt}").content.decode()

    assert "ORG-SECRET" not in body
    assert "CUSTOM-SECRET" not in body


def test_the_file_name_is_a_safe_slug_of_the_title(client: Client, alice: User,
                                                    org_a: Organization) -> None:
    conversation = make_conversation(alice, org_a, title='../../etc/"passwd"\r\nX-Evil: 1 ✓')
    add(conversation, "user", "hello", None)

    response = get(client, alice, f"/c/{conversation.pk}/export.md")

    assert response["Content-Disposition"] == 'attachment; filename="etcpasswd-x-evil-1.md"'
    untitled = make_conversation(alice, org_a, title="✓✓✓")
    assert get(client, alice, f"/c/{untitled.pk}/export.json")["Content-Disposition"] == (
        'attachment; filename="conversation.json"'
    )


@pytest.mark.parametrize("fmt", ["md", "json"])
@pytest.mark.parametrize("intruder", ["bob", "charlie"])
def test_nobody_else_can_export_alice_s_conversation(
    client: Client, branched: Conversation, intruder: str, fmt: str, request: Any
) -> None:
    user = request.getfixturevalue(intruder)
    before = Message.objects.count()

    response = get(client, user, f"/c/{branched.pk}/export.{fmt}")

    assert response.status_code == 404
    assert b"Compare" not in response.content
    assert "Content-Disposition" not in response
    assert Message.objects.count() == before


def test_an_unknown_conversation_is_404_and_a_signed_out_visitor_must_sign_in(
    client: Client, alice: User, branched: Conversation
) -> None:
    assert client.get(f"/c/{branched.pk}/export.md").status_code == 302
    assert get(client, alice, "/c/999999999/export.json").status_code == 404


# --- Export my data: a background job, then a private download --------------------------


@pytest.fixture(autouse=True)
def private_jobs_dir(settings: Any, tmp_path: Path) -> Path:
    settings.DATA_JOBS_DIR = tmp_path / "jobs"
    return settings.DATA_JOBS_DIR


def run_queued_exports() -> None:
    """What the worker does with each queued export (the on-commit send never fires
    inside a test's transaction)."""
    for job_id in DataJob.objects.filter(kind="export", status="queued").values_list("pk", flat=True):
        tasks.build_data_export(job_id)


def start_export(client: Client, user: User) -> Any:
    client.force_login(user)
    return client.post("/account/export/", follow=True)


def read_zip(response: Any) -> zipfile.ZipFile:
    assert response.streaming  # streamed to the client, never built up as one body
    # The view streams through an async iterator (ASGI); iterating the response drives
    # it from this synchronous test.
    with pytest.warns(Warning, match="consume asynchronous iterators"):
        body = b"".join(response)
    assert int(response["Content-Length"]) == len(body)
    return zipfile.ZipFile(io.BytesIO(body))


def exported(client: Client, user: User) -> Any:
    """Export my data, as the worker builds it, downloaded by its owner."""
    start_export(client, user)
    run_queued_exports()
    job = DataJob.objects.filter(user=user, kind="export").latest("created_at")
    assert job.status == "done"
    return client.get(f"/account/exports/{job.pk}.zip")


def test_export_my_data_has_every_own_conversation_in_every_org_and_nothing_else(
    client: Client, alice: User, bob: User, charlie: User, org_a: Organization,
    branched: Conversation,
) -> None:
    org_b = charlie.memberships.get().organization
    Membership.objects.create(user=alice, organization=org_b)
    in_b = make_conversation(alice, org_b, title="Budget in Other Corp")
    add(in_b, "user", "alice asks in org B", None)
    add(make_conversation(bob, org_a, title="Bob private"), "user", "BOB-PRIVATE", None)
    add(make_conversation(charlie, org_b, title="Charlie private"), "user", "CHARLIE-PRIVATE", None)

    response = exported(client, alice)

    assert response.status_code == 200
    assert response["Content-Type"] == "application/zip"
    assert response["Content-Disposition"].startswith('attachment; filename="teamchat-export-')
    archive = read_zip(response)
    names = archive.namelist()
    assert "index.json" in names and "index.md" in names
    assert sorted(n for n in names if n.endswith(".json") and n != "index.json") == sorted([
        f"acme-{org_a.pk}/{branched.pk}-rust-vs-go.json",
        f"other-corp-{org_b.pk}/{in_b.pk}-budget-in-other-corp.json",
    ])
    assert len([n for n in names if n.endswith(".md") and n != "index.md"]) == 2
    everything = b"".join(archive.read(n) for n in names).decode()
    assert "BOB-PRIVATE" not in everything and "CHARLIE-PRIVATE" not in everything
    assert "Bob private" not in everything and "Charlie private" not in everything
    assert "ORG-SECRET" not in everything and "CUSTOM-SECRET" not in everything
    index = json.loads(archive.read("index.json"))
    assert index["schema"] == "teamchat.export" and index["schema_version"] == 1
    assert {row["title"] for row in index["conversations"]} == {"Rust vs Go", "Budget in Other Corp"}
    document = json.loads(archive.read(f"acme-{org_a.pk}/{branched.pk}-rust-vs-go.json"))
    # The branch on screen, and the other branch kept so nothing is lost.
    assert [m["content"] for m in document["messages"]][-1] == "Go compiles faster."
    assert sorted(m["content"] for m in document["other_branches"]) == [
        "Old branch answer", "Old branch question",
    ]
    markdown = archive.read(f"acme-{org_a.pk}/{branched.pk}-rust-vs-go.md").decode()
    assert "Go compiles faster." in markdown and "Old branch" not in markdown


def test_export_my_data_skips_orgs_the_user_has_left(client: Client, alice: User,
                                                     charlie: User) -> None:
    org_b = charlie.memberships.get().organization
    membership = Membership.objects.create(user=alice, organization=org_b)
    add(make_conversation(alice, org_b, title="Left behind"), "user", "LEFT-BEHIND", None)
    membership.delete()

    archive = read_zip(exported(client, alice))

    assert all(b"LEFT-BEHIND" not in archive.read(n) for n in archive.namelist())


def _export_queries(user: User) -> int:
    with CaptureQueriesContext(connection) as queries:
        exports.write_data_export(io.BytesIO(), user=user)
    return len(queries)


def test_export_my_data_reads_a_constant_number_of_queries_per_batch(
    alice: User, org_a: Organization, monkeypatch: pytest.MonkeyPatch
) -> None:
    def conversations(count: int, turns: int) -> None:
        for n in range(count):
            conversation = make_conversation(alice, org_a, title=f"c{n}")
            parent = None
            for t in range(turns):
                parent = add(conversation, "user" if t % 2 == 0 else "assistant", f"m{t}", parent)

    conversations(2, 2)
    few = _export_queries(alice)
    conversations(10, 8)
    many = _export_queries(alice)
    assert many == few  # 12 conversations, 84 messages: still one batch

    monkeypatch.setattr(exports, "ARCHIVE_BATCH", 5)
    # Three batches of two queries each (conversations, their messages) and the empty
    # read that ends the walk: the count grows with batches, not with messages.
    assert _export_queries(alice) == few + 2 * 2


def test_export_my_data_with_no_conversations_is_an_index_only(client: Client,
                                                               alice: User) -> None:
    archive = read_zip(exported(client, alice))

    assert sorted(archive.namelist()) == ["index.json", "index.md"]
    assert json.loads(archive.read("index.json"))["conversations"] == []


def test_the_account_page_links_export_and_import(client: Client, alice: User) -> None:
    response = get(client, alice, "/account/")

    body = response.content.decode()
    assert response.status_code == 200
    assert 'action="/account/export/"' in body and ">Export my data</button>" in body
    assert 'action="/account/import/"' in body and ">Import</button>" in body
    assert 'href="/account/">Account</a>' in body  # the header link next to the email
    assert client.get("/").status_code == 200
    assert 'href="/account/">Account</a>' in client.get("/").content.decode()


def test_export_my_data_is_built_by_the_worker_and_the_page_shows_progress_then_the_link(
    client: Client, alice: User, branched: Conversation, private_jobs_dir: Path
) -> None:
    body = start_export(client, alice).content.decode()

    job = DataJob.objects.get(user=alice, kind="export")
    assert job.status == "queued" and "Export queued" in body
    assert 'disabled>Export my data</button>' in body  # one at a time
    assert client.get(f"/account/exports/{job.pk}.zip").status_code == 404  # not ready yet

    run_queued_exports()

    job.refresh_from_db()
    assert (job.status, job.done, job.total) == ("done", 1, 1)
    assert job.expires_at is not None
    path = private_jobs_dir / job.file_name
    assert path.stat().st_mode & 0o777 == 0o600
    body = client.get("/account/").content.decode()
    assert f'href="/account/exports/{job.pk}.zip"' in body and "Download your data" in body
    # The old address leads to the newest ready export.
    assert client.get("/account/export.zip")["Location"] == f"/account/exports/{job.pk}.zip"


def test_charlie_gets_404_for_alice_s_export(client: Client, alice: User, charlie: User,
                                            branched: Conversation) -> None:
    exported(client, alice)
    job = DataJob.objects.get(user=alice, kind="export")

    client.force_login(charlie)
    response = client.get(f"/account/exports/{job.pk}.zip")

    assert response.status_code == 404
    assert b"Rust" not in response.content and "Content-Disposition" not in response
    assert client.get("/account/export.zip")["Location"] == "/account/"
    assert client.get("/account/jobs.json").json()["export"] is None
    assert client.get("/account/exports/999999.zip").status_code == 404


def test_an_expired_export_link_is_404_and_its_file_is_deleted(
    client: Client, alice: User, branched: Conversation, private_jobs_dir: Path
) -> None:
    exported(client, alice)
    job = DataJob.objects.get(user=alice, kind="export")
    path = private_jobs_dir / job.file_name
    DataJob.objects.filter(pk=job.pk).update(expires_at=timezone.now() - timedelta(seconds=1))

    assert client.get(f"/account/exports/{job.pk}.zip").status_code == 404
    datajobs.clean_up()

    job.refresh_from_db()
    assert job.status == "expired" and not path.exists()
    assert "Your last export expired" in client.get("/account/").content.decode()


def test_one_export_at_a_time_and_only_so_many_a_day(client: Client, alice: User,
                                                    settings: Any) -> None:
    settings.EXPORTS_PER_DAY = 2
    start_export(client, alice)

    second = client.post("/account/export/")
    assert second.status_code == 429
    assert "Your export is still running" in second.content.decode()

    run_queued_exports()
    start_export(client, alice)
    run_queued_exports()
    third = client.post("/account/export/")
    assert third.status_code == 429
    assert "You have started 2 exports in the last 24 hours" in third.content.decode()
    assert DataJob.objects.filter(user=alice, kind="export").count() == 2


def test_starting_an_export_needs_a_post_with_a_signed_in_user(client: Client,
                                                               alice: User) -> None:
    assert client.post("/account/export/").status_code == 302  # to sign in
    client.force_login(alice)
    assert client.get("/account/export/").status_code == 405
    assert not DataJob.objects.exists()


def test_clean_up_fails_jobs_whose_worker_died_and_deletes_stray_files(
    alice: User, private_jobs_dir: Path
) -> None:
    dead = DataJob.objects.create(user=alice, kind="export", status="running",
                                  updated_at=timezone.now() - timedelta(hours=1))
    stray = datajobs.jobs_dir() / "import-1-leftover.upload"
    stray.write_bytes(b"old upload")

    counts = datajobs.clean_up()

    dead.refresh_from_db()
    assert dead.status == "failed" and "stopped before it finished" in dead.error
    assert not stray.exists()
    assert counts["failed"] == 1 and counts["files"] == 1


def test_beat_cleans_up_jobs_hourly(settings: Any) -> None:
    from chatsite.celery import app

    job = settings.CELERY_BEAT_SCHEDULE["clean-data-jobs"]
    assert job["schedule"] == 3600.0
    assert job["task"] in app.tasks
