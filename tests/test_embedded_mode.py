"""`make run` with no settings: SQLite, in-memory layer, in-process worker, emulator."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest
import websockets

from tests.embedded import ROOT, SERVER_SETTINGS, embedded_stack, signed_in_client

pytestmark = pytest.mark.slow


@pytest.fixture
def embedded_urls(tmp_path: Path) -> Iterator[tuple[str, str]]:
    with embedded_stack(tmp_path) as urls:
        yield urls


@pytest.fixture
def embedded_server(embedded_urls: tuple[str, str]) -> str:
    return embedded_urls[0]


def test_embedded_mode_serves_a_page_and_streams_an_answer(embedded_urls: tuple[str, str]) -> None:
    base, emulator = embedded_urls
    health = httpx2.get(f"{base}/healthz").json()
    assert health == {"status": "ok", "database": "ok", "channel_layer": "ok", "broker": "ok",
                      "mode": "embedded"}
    client = signed_in_client(base)
    session = client.cookies["sessionid"]

    async def chat() -> list[dict]:
        async with websockets.connect(
            f"ws://127.0.0.1:{base.rsplit(':', 1)[1]}/ws/chat/",
            additional_headers={"Cookie": f"sessionid={session}", "Origin": base},
        ) as ws:
            await ws.send(json.dumps({"type": "send", "conversation": None, "content": "Hello",
                                      "reasoning_effort": "low", "client_id": "smoke"}))
            frames = []
            while True:
                frame = json.loads(await asyncio.wait_for(ws.recv(), 30))
                frames.append(frame)
                if frame["type"] in ("done", "error"):
                    return frames

    frames = asyncio.run(chat())
    assert frames[0]["type"] == "message.created"
    assert frames[-1]["type"] == "done", frames[-1]
    assert len([f for f in frames if f["type"] == "delta"]) > 1
    conversation = client.get(f"/c/{frames[0]['conversation']}/")
    assert conversation.status_code == 200

    # The new conversation's title, asked by the side pool's own threads after the answer.
    def title_requests() -> list[dict[str, Any]]:
        journal = httpx2.get(f"{emulator}/_emulator/journal").json()
        return [e for e in journal if e["method"] == "POST" and e["status"] == 200
                and not (e["body"] or {}).get("stream")]

    deadline = time.monotonic() + 30
    while not title_requests():
        assert time.monotonic() < deadline, "no title was asked for"
        time.sleep(0.2)
    assert len(title_requests()) == 1


def _csrf(client: httpx2.Client, path: str) -> str:
    match = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', client.get(path).text)
    assert match, path
    return match[1]


def _second_person(var_dir: Path, base: str) -> httpx2.Client:
    """bob, a member of the demo org, made on the embedded SQLite and signed in."""
    env = {key: value for key, value in os.environ.items() if key not in SERVER_SETTINGS}
    env.update(VAR_DIR=str(var_dir))
    subprocess.run([sys.executable, "manage.py", "shell", "-c", (
        "from accounts.models import Membership, Organization, User; "
        "bob = User.objects.create_user(email='bob@example.com', password='bob passphrase 12'); "
        "Membership.objects.create(user=bob, organization=Organization.objects.get(name='Demo'))"
    )], cwd=ROOT, env=env, check=True)
    client = httpx2.Client(base_url=base, follow_redirects=True)
    home = client.post("/accounts/login/", data={
        "csrfmiddlewaretoken": _csrf(client, "/accounts/login/"),
        "username": "bob@example.com", "password": "bob passphrase 12"})
    assert home.status_code == 200 and "sessionid" in client.cookies
    return client


def _generated_export(conversations: int) -> bytes:
    items = []
    for n in range(conversations):
        mapping = {"root": {"id": "root", "message": None, "parent": None, "children": ["q"]},
                   "q": {"id": "q", "parent": "root", "children": ["a"], "message": {
                       "author": {"role": "user"}, "create_time": 1735725600.0,
                       "content": {"content_type": "text", "parts": [f"Question {n}"]}}},
                   "a": {"id": "a", "parent": "q", "children": [], "message": {
                       "author": {"role": "assistant"}, "create_time": 1735725601.0,
                       "content": {"content_type": "text", "parts": [f"Answer {n}"]}}}}
        items.append({"title": f"Old chat {n}", "conversation_id": f"old-{n}",
                      "current_node": "a", "mapping": mapping})
    return json.dumps(items).encode()


def test_embedded_mode_imports_in_the_worker_while_another_person_chats(tmp_path: Path) -> None:
    """On the embedded SQLite a transaction locks the whole database. alice's import of
    1,000 conversations writes one small transaction per conversation, so bob's answer
    finishes while her import is still running (it used to wait for the whole import)."""
    with embedded_stack(tmp_path) as (base, _emulator):
        alice = signed_in_client(base)
        bob = _second_person(tmp_path, base)
        total = 1000
        started = alice.post("/account/import/", data={
            "csrfmiddlewaretoken": _csrf(alice, "/account/")},
            files={"file": ("conversations.json", _generated_export(total), "application/json")})
        assert started.status_code == 200
        # Wait (by progress, not time) until the worker is writing her conversations.
        job = _poll(alice, "import", until=lambda job: job["done"] >= 50 or not job["live"])
        assert job["status"] == "running", job

        frames = asyncio.run(_chat(base, bob.cookies["sessionid"], "Hello during an import"))

        assert frames[-1]["type"] == "done", frames[-1]
        during = alice.get("/account/jobs.json").json()["import"]
        assert during["status"] == "running" and during["done"] < total, during
        job = _poll(alice, "import", until=lambda job: not job["live"])
        assert (job["status"], job["done"], job["total"]) == ("done", total, total)
        assert f"Imported {total} conversations" in alice.get("/account/").text

        # Export my data, in the same worker, then downloaded by its owner only.
        alice.post("/account/export/", data={"csrfmiddlewaretoken": _csrf(alice, "/account/")})
        export = _poll(alice, "export", until=lambda job: not job["live"])
        assert export["status"] == "done" and export["done"] == total
        archive = alice.get(f"/account/exports/{export['id']}.zip")
        assert archive.status_code == 200 and archive.content.startswith(b"PK")
        assert bob.get(f"/account/exports/{export['id']}.zip").status_code == 404


def _poll(client: httpx2.Client, kind: str, *, until: Any) -> dict[str, Any]:
    """The job's state once ``until(state)`` holds (a guard stops a job that hangs)."""
    for _ in range(6000):
        job = client.get("/account/jobs.json").json()[kind]
        if job is not None and until(job):
            return job
        time.sleep(0.05)
    raise AssertionError(f"the {kind} never got there: {job}")


async def _chat(base: str, session: str, text: str) -> list[dict]:
    async with websockets.connect(
        f"ws://127.0.0.1:{base.rsplit(':', 1)[1]}/ws/chat/",
        additional_headers={"Cookie": f"sessionid={session}", "Origin": base},
    ) as ws:
        await ws.send(json.dumps({"type": "send", "conversation": None, "content": text,
                                  "reasoning_effort": "low", "client_id": "during-import"}))
        frames = []
        while True:
            frame = json.loads(await asyncio.wait_for(ws.recv(), 60))
            frames.append(frame)
            if frame["type"] in ("done", "error"):
                return frames


def test_embedded_mode_prints_mail_with_links_to_its_own_port_and_says_so(
    embedded_server: str, tmp_path: Path
) -> None:
    """No mail server in embedded mode: mail goes to the console, start-up warns about
    it, and links point at the port `runstack` actually serves (SITE_URL's default)."""
    base = embedded_server
    signed_in_client(base)
    client = httpx2.Client(base_url=base)
    page = client.get("/accounts/password/reset/")
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text)
    assert token, page.text[:500]
    sent = client.post("/accounts/password/reset/", data={
        "csrfmiddlewaretoken": token[1], "email": "demo@example.com"})
    assert sent.status_code == 302
    link = re.compile(rf"{re.escape(base)}/accounts/password/reset/[^/\s]+/[^/\s]+/")
    for _ in range(50):  # the child's output reaches the file a moment later
        log = (tmp_path / "runstack.log").read_text()
        if link.search(log):
            break
        time.sleep(0.1)
    assert link.search(log), log[-3000:]
    assert "WARNING: email is not sent" in log, log[:2000]
