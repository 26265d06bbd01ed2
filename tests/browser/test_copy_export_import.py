"""Copy, Export, Export my data and Import as a person uses them, in headless Chromium
against the real stack (uvicorn, Celery worker, PostgreSQL, Redis, the emulator). Export
my data and Import run in the worker; the account page shows their progress."""

from __future__ import annotations

import io
import json
import threading
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.browser.conftest import Watch, read_db, sign_up

playwright_api = pytest.importorskip("playwright.sync_api")
expect = playwright_api.expect

ANSWER_TIMEOUT_MS = 30_000
FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "chatgpt" / "conversations.json"
QUESTION = "Explain **bold** and `code` in Markdown [copy-export]"


def send(page: Any, text: str) -> None:
    page.get_by_label("Message", exact=True).fill(text)
    page.get_by_role("button", name="Send", exact=True).click()


def finished_answer(page: Any) -> Any:
    answer = page.get_by_test_id("assistant-message").last
    expect(answer).to_have_attribute("data-status", "done", timeout=ANSWER_TIMEOUT_MS)
    return answer


def saved_content(message_id: int) -> str:
    from conversations.models import Message

    return read_db(lambda: Message.objects.get(pk=message_id).content)


def clipboard(page: Any) -> str:
    return page.evaluate("() => navigator.clipboard.readText()")


def announced(page: Any) -> Any:
    return expect(page.locator("#live-announcer"))


def test_copy_puts_the_markdown_source_on_the_clipboard(page: Any, live_server_url: str,
                                                         watch: Watch) -> None:
    page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=live_server_url)
    sign_up(page)
    send(page, QUESTION)
    answer = finished_answer(page)

    question = page.get_by_test_id("user-message").last
    question.get_by_role("button", name="Copy", exact=True).click()
    announced(page).to_have_text("Copied")
    assert clipboard(page) == QUESTION  # the source: ** and ` kept

    page.evaluate("() => navigator.clipboard.writeText('')")
    answer.get_by_role("button", name="Copy", exact=True).click()
    announced(page).to_have_text("Copied")
    source = saved_content(int(answer.get_attribute("data-message-id")))
    assert source and clipboard(page) == source
    assert watch.page_errors == []


def test_copy_on_a_streaming_answer_copies_what_is_there(page: Any, live_server_url: str,
                                                        emulator: Any) -> None:
    emulator.config.tokens_per_second = 10  # 60 tokens: several seconds of streaming
    page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=live_server_url)
    sign_up(page)
    send(page, "Stream slowly please [copy-streaming]")
    answer = page.get_by_test_id("assistant-message").last
    expect(answer).to_have_attribute("data-status", "streaming", timeout=ANSWER_TIMEOUT_MS)
    message_id = int(answer.get_attribute("data-message-id"))
    page.wait_for_function(
        "id => ((window.teamChat.messageState(id) || {}).text || '').length >= 5", arg=message_id
    )

    answer.get_by_role("button", name="Copy", exact=True).click()
    announced(page).to_have_text("Copied")
    partial = clipboard(page)

    expect(answer).to_have_attribute("data-status", "done", timeout=ANSWER_TIMEOUT_MS)
    final = saved_content(message_id)
    assert len(partial) >= 5
    assert final.startswith(partial) and len(partial) < len(final)


def wait_for_generated_title(message_id: int) -> None:
    """The model's title for a new conversation comes from a task of its own after the
    first answer: wait for it, so the page and the export show the same title."""
    from conversations.models import Message

    deadline = time.monotonic() + ANSWER_TIMEOUT_MS / 1000
    while not read_db(lambda: Message.objects.filter(
            pk=message_id, conversation__title_generated=True).exists()):
        assert time.monotonic() < deadline, "the conversation's title was never generated"
        time.sleep(0.1)


def test_export_downloads_the_conversation_as_markdown_and_json(page: Any) -> None:
    sign_up(page)
    send(page, QUESTION)
    answer = finished_answer(page)
    message_id = int(answer.get_attribute("data-message-id"))
    source = saved_content(message_id)
    wait_for_generated_title(message_id)
    page.reload()  # the conversation's own page, with its header actions
    title = page.locator("#chat-title").inner_text()

    page.get_by_role("button", name="Export", exact=True).click()
    with page.expect_download() as markdown_download:
        page.get_by_role("link", name="Markdown (.md)").click()
    markdown = markdown_download.value
    assert markdown.suggested_filename.endswith(".md")
    text = Path(markdown.path()).read_text()
    assert text.startswith(f"# {title}\n")
    assert QUESTION in text and source in text

    page.get_by_role("button", name="Export", exact=True).click()
    with page.expect_download() as json_download:
        page.get_by_role("link", name="JSON (.json)").click()
    assert json_download.value.suggested_filename.endswith(".json")
    document = json.loads(Path(json_download.value.path()).read_text())
    assert document["schema_version"] == 1
    assert [m["content"] for m in document["messages"]] == [QUESTION, source]


@pytest.fixture(autouse=True)
def private_jobs_dir(settings: Any, tmp_path: Path) -> Path:
    settings.DATA_JOBS_DIR = tmp_path / "jobs"
    return settings.DATA_JOBS_DIR


@pytest.fixture
def paused_after(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """``paused_after(n)``: the worker (a thread of this process) stops right after it
    records progress n of a job, until the returned event is set, so the page can be
    seen mid-job without racing it."""
    from conversations import datajobs

    gates: list[threading.Event] = []

    def pause(n: int) -> threading.Event:
        real = datajobs._progress
        gate = threading.Event()
        gates.append(gate)

        def progress(job_id: int, done: int, total: int) -> None:
            real(job_id, done, total)
            if done == n:
                gate.wait(ANSWER_TIMEOUT_MS / 1000)

        monkeypatch.setattr(datajobs, "_progress", progress)
        return gate

    yield pause
    for gate in gates:
        gate.set()  # never leave the worker waiting


def test_export_my_data_builds_in_the_background_then_the_download_link_works(
    page: Any, paused_after: Any
) -> None:
    sign_up(page)
    send(page, QUESTION)
    finished_answer(page)
    resume = paused_after(0)

    page.get_by_role("link", name="Account").click()
    page.wait_for_url(lambda url: urlsplit(url).path == "/account/")
    page.get_by_role("button", name="Export my data").click()

    status = page.get_by_test_id("export-status")
    expect(status).to_contain_text("Building your export: 0 of 1 conversations.")
    expect(page.get_by_role("button", name="Export my data")).to_be_disabled()
    resume.set()
    link = page.get_by_role("link", name="Download your data")
    expect(link).to_be_visible(timeout=ANSWER_TIMEOUT_MS)
    with page.expect_download() as download_info:
        link.click()
    download = download_info.value
    assert download.suggested_filename.startswith("teamchat-export-")
    assert download.suggested_filename.endswith(".zip")
    with zipfile.ZipFile(io.BytesIO(Path(download.path()).read_bytes())) as archive:
        names = archive.namelist()
        index = json.loads(archive.read("index.json"))
        (conversation,) = index["conversations"]
        document = json.loads(archive.read(conversation["json"]))
    assert "index.md" in names and conversation["markdown"] in names
    assert document["messages"][0]["content"] == QUESTION


def test_import_shows_progress_then_the_report_and_the_conversations(
    page: Any, watch: Watch, paused_after: Any
) -> None:
    sign_up(page)
    page.get_by_role("link", name="Account").click()
    resume = paused_after(2)

    page.get_by_label("ChatGPT export").set_input_files(str(FIXTURE))
    page.get_by_role("button", name="Import", exact=True).click()

    # The worker has written 2 of the file's 4 conversations and waits: the page says so.
    expect(page.get_by_test_id("import-status")).to_contain_text(
        "Importing: 2 of 4 conversations.", timeout=ANSWER_TIMEOUT_MS
    )
    expect(page.get_by_role("button", name="Import", exact=True)).to_be_disabled()
    resume.set()
    report = page.get_by_test_id("import-report")
    expect(report).to_contain_text("Imported 3 conversations (11 messages)",
                                   timeout=ANSWER_TIMEOUT_MS)
    expect(page.get_by_test_id("import-skipped")).to_contain_text("2 × image")
    expect(page.get_by_test_id("import-skipped")).to_contain_text("1 × audio recording")
    expect(report).to_contain_text("Voice note")

    report.get_by_role("link", name="Weekend in Lisbon").click()
    page.wait_for_url(lambda url: urlsplit(url).path.startswith("/c/"))
    # In the conversation list, and open.
    listed = page.get_by_test_id("conversation-list").get_by_role("link", name="Weekend in Lisbon")
    expect(listed).to_be_visible()
    expect(listed).to_have_attribute("aria-current", "page")
    for title in ("Fibonacci in Python", "Logo idea"):
        expect(page.get_by_test_id("conversation-list").get_by_role("link", name=title)).to_be_visible()
    # The branch that was on screen in ChatGPT, not the older edit.
    transcript = page.get_by_test_id("transcript")
    expect(transcript).to_contain_text("Move Alfama to Sunday")
    expect(transcript).not_to_contain_text("swap Belém for the Gulbenkian")

    # The same file again adds nothing.
    page.get_by_role("link", name="Account").click()
    page.get_by_label("ChatGPT export").set_input_files(str(FIXTURE))
    page.get_by_role("button", name="Import", exact=True).click()
    expect(page.get_by_test_id("import-report")).to_contain_text(
        "Imported 0 conversations (0 messages)", timeout=ANSWER_TIMEOUT_MS
    )
    expect(page.get_by_test_id("import-report")).to_contain_text("3 were already imported")
    assert watch.page_errors == []
