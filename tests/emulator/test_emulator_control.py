"""Models listing, journal, scenario queue semantics, control API, mounting, CLI, concurrency."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx2
import openai
import pytest
from starlette.applications import Starlette
from starlette.routing import Mount

from emulator.app import create_app
from emulator.server import EmulatorHandle, serve_app_in_thread
from tests.emulator.conftest import fast_config
from tests.emulator.helpers import user

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_models_list_and_shutdown_date(client: openai.OpenAI) -> None:
    models = {m.id: m for m in client.models.list()}
    assert {"o3-mini", "o3-mini-2025-01-31", "gpt-5.6-sol", "gpt-4.1-mini"} <= set(models)
    assert models["o3-mini"].shutdown_date == "2026-10-23"
    assert models["gpt-5.6-sol"].shutdown_date is None
    retrieved = client.models.retrieve("o3-mini-2025-01-31")
    assert retrieved.shutdown_date == "2026-10-23" and retrieved.owned_by == "system"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("o1-preview")


def test_models_on_azure_v1_and_retired(emu: EmulatorHandle) -> None:
    emu.emulator.update_config({"retired_models": ["gpt-4.1-mini"]})
    client = openai.OpenAI(base_url=emu.url + "/openai/v1/", api_key="k", max_retries=0)
    ids = {m.id for m in client.models.list()}
    assert "o3-mini" in ids and "gpt-4.1-mini" not in ids


def test_journal_records_requests(client: openai.OpenAI, emu: EmulatorHandle) -> None:
    client.chat.completions.create(
        model="o3-mini",
        messages=user("journal me"),
        reasoning_effort="low",
        max_completion_tokens=900,
    )
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="o3-mini", messages=user("bad"), temperature=0)
    httpx2.get(emu.url + "/v1/nothing-here", headers={"authorization": "Bearer x"})
    httpx2.get(emu.url + "/_emulator/journal")
    journal = httpx2.get(emu.url + "/_emulator/journal").json()
    assert [e["status"] for e in journal] == [200, 400, 404]
    ok = journal[0]
    assert ok["method"] == "POST" and ok["path"] == "/v1/chat/completions" and ok["query"] == {}
    assert ok["headers"]["authorization"] == "Bearer x"
    assert ok["body"] == {
        "model": "o3-mini",
        "messages": [{"role": "user", "content": "journal me"}],
        "reasoning_effort": "low",
        "max_completion_tokens": 900,
    }
    assert "temperature" not in ok["body"] and journal[1]["body"]["temperature"] == 0
    assert abs(ok["ts"] - time.time()) < 60
    assert journal[2]["body"] is None
    assert emu.emulator.journal[0]["body"] == ok["body"]


def test_journal_is_capped(client: openai.OpenAI, emu: EmulatorHandle) -> None:
    emu.emulator.update_config({"journal_limit": 3})
    for _ in range(5):
        client.models.list()
    assert len(emu.emulator.journal) == 3


def test_scenario_match_times_and_fifo(client: openai.OpenAI, emu: EmulatorHandle) -> None:
    emu.emulator.push({"match": "magic", "reply": "matched", "times": 2})
    emu.emulator.push({"reply": "first unconditional"})
    emu.emulator.push({"reply": "second unconditional"})

    def ask(text: str) -> str:
        content = (
            client.chat.completions.create(model="o3-mini", messages=user(text))
            .choices[0]
            .message.content
        )
        assert content is not None
        return content

    assert ask("plain") == "first unconditional"
    assert ask("say the magic word") == "matched"
    assert ask("more magic") == "matched"
    assert ask("magic again") == "second unconditional"
    assert ask("magic once more").startswith("You asked")


def test_invalid_request_does_not_consume_reply_scenario(
    client: openai.OpenAI, emu: EmulatorHandle
) -> None:
    emu.emulator.push({"reply": "kept"})
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="o3-mini", messages=user("x"), temperature=1)
    assert (
        client.chat.completions.create(model="o3-mini", messages=user("x"))
        .choices[0]
        .message.content
        == "kept"
    )


def test_control_api_over_http(client: openai.OpenAI, emu: EmulatorHandle) -> None:
    base = emu.url + "/_emulator"
    assert httpx2.post(base + "/scenarios", json={"reply": "via http"}).json() == {
        "ok": True,
        "pending": 1,
    }
    assert httpx2.post(base + "/scenarios", json={"fault": "nope"}).status_code == 400
    assert httpx2.get(base + "/scenarios").json()[0]["reply"] == "via http"
    config = httpx2.post(base + "/config", json={"reply_tokens": 7, "think_ms": "low=5"}).json()
    assert (
        config["reply_tokens"] == 7
        and config["think_ms"]["low"] == 5
        and config["think_ms"]["high"] == 0
    )
    assert httpx2.post(base + "/config", json={"no_such_field": 1}).status_code == 400
    assert (
        client.chat.completions.create(model="o3-mini", messages=user("x"))
        .choices[0]
        .message.content
        == "via http"
    )
    usage = client.chat.completions.create(model="o3-mini", messages=user("x")).usage
    assert usage is not None
    assert usage.completion_tokens == 256 + 7
    httpx2.post(base + "/scenarios", json={"fault": "server_error"})
    assert httpx2.delete(base + "/journal").json() == {"ok": True}
    assert httpx2.get(base + "/journal").json() == []
    assert (
        httpx2.get(base + "/scenarios").json() == []
    )  # DELETE journal also drops pending scenarios
    assert client.chat.completions.create(model="o3-mini", messages=user("x")).choices


def test_mounted_under_a_prefix() -> None:
    inner = create_app(fast_config())
    outer = Starlette(routes=[Mount("/emu", app=inner)])
    handle = serve_app_in_thread(outer, inner.state.emulator, url_path="/emu")
    try:
        client = openai.OpenAI(base_url=handle.url + "/v1", api_key="x", max_retries=0)
        assert client.chat.completions.create(model="o3-mini", messages=user("hi")).choices
        azure = openai.AzureOpenAI(
            azure_endpoint=handle.url, api_version="2024-12-01-preview", api_key="x"
        )
        assert list(azure.chat.completions.create(model="d", messages=user("hi"), stream=True))
        assert (
            httpx2.post(handle.url + "/_emulator/scenarios", json={"reply": "prefixed"}).status_code
            == 200
        )
        assert (
            client.chat.completions.create(model="o3-mini", messages=user("hi"))
            .choices[0]
            .message.content
            == "prefixed"
        )
        paths = [e["path"] for e in httpx2.get(handle.url + "/_emulator/journal").json()]
        assert paths == [
            "/emu/v1/chat/completions",
            "/emu/openai/deployments/d/chat/completions",
            "/emu/v1/chat/completions",
        ]
    finally:
        handle.stop()


def test_concurrent_streams(emu: EmulatorHandle) -> None:
    emu.emulator.update_config({"tokens_per_second": 200, "reply_tokens": 20})

    async def one(client: openai.AsyncOpenAI, index: int) -> int:
        stream = await client.chat.completions.create(
            model="o3-mini",
            messages=user(f"stream {index}"),
            stream=True,
            stream_options={"include_usage": True},
        )
        text = ""
        usage = None
        async for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                text += chunk.choices[0].delta.content
            usage = chunk.usage or usage
        assert f"stream {index}" in text
        assert usage is not None
        return usage.completion_tokens

    async def run() -> list[int]:
        client = openai.AsyncOpenAI(base_url=emu.url + "/v1", api_key="x", max_retries=0)
        return await asyncio.gather(*(one(client, i) for i in range(60)))

    started = time.perf_counter()
    assert asyncio.run(run()) == [256 + 20] * 60
    assert time.perf_counter() - started < 5


@pytest.mark.slow  # starts a child process
def test_cli_serves_http(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    process = subprocess.Popen(
        [
            sys.executable, "-m", "emulator", "--host", "127.0.0.1", "--port", str(port),
            "--tokens-per-second", "0", "--think-ms", "low=0,medium=0,high=0", "--reply-tokens", "8",
        ],
        cwd=REPO_ROOT,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                httpx2.get(f"http://127.0.0.1:{port}/_emulator/config", timeout=1)
                break
            except httpx2.TransportError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise
                time.sleep(0.1)
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="x", max_retries=0)
        completion = client.chat.completions.create(model="o3-mini", messages=user("cli"))
        assert completion.usage is not None
        assert completion.usage.completion_tokens == 256 + 8
    finally:
        process.terminate()
        process.wait(timeout=10)
