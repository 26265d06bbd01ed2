"""`make run` with no settings: SQLite, in-memory layer, in-process worker, emulator."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx2
import pytest
import websockets

from tests.conftest import free_port

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow


@pytest.fixture
def embedded_server(tmp_path: Path):  # type: ignore[no-untyped-def]
    port, emulator_port = free_port(), free_port()
    env = {
        key: value for key, value in os.environ.items()
        if key not in {"DATABASE_URL", "REDIS_URL", "OPENAI_API_KEY", "SECRET_KEY", "DJANGO_SETTINGS_MODULE"}
    }
    env.update(VAR_DIR=str(tmp_path), EMULATOR_URL=f"http://127.0.0.1:{emulator_port}")
    python = sys.executable
    subprocess.run([python, "manage.py", "migrate", "--noinput", "-v0"], cwd=ROOT, env=env, check=True)
    process = subprocess.Popen(
        [python, "manage.py", "runstack", "--port", str(port)], cwd=ROOT, env=env,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            if httpx2.get(f"{base}/healthz", timeout=1).status_code in (200, 503):
                break
        except httpx2.HTTPError:
            pass
        if time.monotonic() > deadline or process.poll() is not None:
            process.kill()
            raise RuntimeError(process.stdout.read().decode() if process.stdout else "no output")
        time.sleep(0.2)
    yield base
    process.terminate()
    process.wait(timeout=15)


def test_embedded_mode_serves_a_page_and_streams_an_answer(embedded_server: str) -> None:
    base = embedded_server
    health = httpx2.get(f"{base}/healthz").json()
    assert health == {"status": "ok", "database": "ok", "channel_layer": "ok", "broker": "ok",
                      "mode": "embedded"}
    client = httpx2.Client(base_url=base, follow_redirects=True)
    page = client.get("/accounts/signup/")
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text).group(1)  # type: ignore[union-attr]
    home = client.post("/accounts/signup/", data={
        "csrfmiddlewaretoken": token, "email": "demo@example.com",
        "password": "a long demo passphrase", "organization": "Demo"})
    assert home.status_code == 200
    assert "offline demo model" in home.text
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
