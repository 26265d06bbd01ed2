"""`make run` with no settings: SQLite, in-memory layer, in-process worker, emulator."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import httpx2
import pytest
import websockets

from tests.embedded import embedded_stack, signed_in_client

pytestmark = pytest.mark.slow


@pytest.fixture
def embedded_server(tmp_path: Path) -> Iterator[str]:
    with embedded_stack(tmp_path) as (base, _emulator):
        yield base


def test_embedded_mode_serves_a_page_and_streams_an_answer(embedded_server: str) -> None:
    base = embedded_server
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
