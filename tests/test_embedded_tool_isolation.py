"""Embedded mode (`make run` with no settings): one process serves the web, runs the worker
threads and the demo emulator, so a tool call that held the GIL would freeze everything.

Two websockets of one person: the first streams a long answer; meanwhile the second asks
for ``((9**1000)**1000)**1000``, which the demo model hands to the calculator. The
calculator refuses at once, and the first answer's frames keep coming without a gap.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest
import websockets

from tests.embedded import embedded_stack, signed_in_client

# The stack under test is a subprocess with its own SQLite; the mark only lets the session
# fixtures in tests/conftest.py set up the test database when this module runs alone.
pytestmark = [pytest.mark.slow, pytest.mark.django_db]

TOWER = "((9**1000)**1000)**1000"
# The bug held the GIL for hours; frames arrive every ~25-50 ms. One second between two
# frames of a healthy stream is far outside normal jitter even on a busy 2-core machine.
MAX_GAP_SECONDS = 1.0
LONG_REPLY = {"match": "long story", "reply_tokens": 240, "tokens_per_second": 40}


@pytest.fixture
def running_stack(tmp_path: Path) -> Iterator[tuple[str, str]]:
    with embedded_stack(tmp_path) as urls:
        yield urls


def signed_in_session(base: str) -> str:
    return signed_in_client(base).cookies["sessionid"]


async def two_answers(base: str, session: str) -> tuple[list[tuple[float, dict[str, Any]]], ...]:
    """Start the story, wait for its first delta, then the calculation; every frame of
    both sockets until both answers end, stamped on arrival."""
    url = f"ws://127.0.0.1:{base.rsplit(':', 1)[1]}/ws/chat/"
    headers = {"Cookie": f"sessionid={session}", "Origin": base}
    async with websockets.connect(url, additional_headers=headers) as story_socket, \
            websockets.connect(url, additional_headers=headers) as calc_socket:
        story: list[tuple[float, dict[str, Any]]] = []
        calc: list[tuple[float, dict[str, Any]]] = []
        first_delta = asyncio.Event()

        async def read(socket: Any, into: list[tuple[float, dict[str, Any]]]) -> None:
            while True:
                frame = json.loads(await asyncio.wait_for(socket.recv(), 30))
                into.append((time.monotonic(), frame))
                if frame["type"] == "delta":
                    first_delta.set()
                if frame["type"] in ("done", "error"):
                    return

        def send(text: str, client_id: str) -> str:
            return json.dumps({"type": "send", "conversation": None, "content": text,
                               "reasoning_effort": "low", "client_id": client_id})

        await story_socket.send(send("Tell me a long story", "story"))
        reading_story = asyncio.create_task(read(story_socket, story))
        await asyncio.wait_for(first_delta.wait(), 30)
        await calc_socket.send(send(f"calculate {TOWER}", "calc"))
        await asyncio.gather(reading_story, read(calc_socket, calc))
        return story, calc


def test_a_huge_calculation_leaves_another_answer_streaming_without_a_gap(
    running_stack: tuple[str, str],
) -> None:
    base, emulator = running_stack
    assert httpx2.post(f"{emulator}/_emulator/scenarios", json=LONG_REPLY).status_code < 300
    session = signed_in_session(base)

    story, calc = asyncio.run(two_answers(base, session))

    assert story[-1][1]["type"] == "done", story[-1]
    assert calc[-1][1]["type"] == "done", calc[-1]
    [(tool_at, tool)] = [(at, f) for at, f in calc if f["type"] == "tool"]
    assert tool["name"] == "calculate" and tool["ok"] is False
    assert "10,000 bits" in tool["result"]["error"]
    journal = httpx2.get(f"{emulator}/_emulator/journal").json()
    calls = [c for c in journal
             if c["path"].endswith("/chat/completions") and (c["body"] or {}).get("stream")]
    assert len(calls) == 3  # the story, the calculation, the calculation's follow-up
    assert "10,000 bits" in calls[-1]["body"]["messages"][-1]["content"]

    deltas = [(at, f) for at, f in story if f["type"] == "delta"]
    assert [f["seq"] for _, f in deltas] == list(range(1, len(deltas) + 1))
    assert len(deltas) >= 10
    assert deltas[0][0] < tool_at < deltas[-1][0], "the tool ran outside the other stream"
    gaps = [later - earlier for (earlier, _), (later, _) in zip(deltas, deltas[1:], strict=False)]
    assert max(gaps) < MAX_GAP_SECONDS, f"a {max(gaps):.2f} s gap in the other answer"
