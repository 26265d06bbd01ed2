"""A browser tab's side of the websocket protocol, as static/js/chat/protocol.js speaks it.

One socket per tab. The tab keeps the text of each answer by sequence number: a delta
with a seq it already has is a duplicate on the wire (dropped, counted); a delta past a
gap, a lost socket, or a live answer that went quiet makes it send ``resume`` with the
last seq it holds; a ``snapshot`` replaces the text up to its seq.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from typing import Any

import websockets
from websockets.exceptions import ConnectionClosed, InvalidHandshake

QUIET_RESUME_SECONDS = 3.0
FOLLOW_TIMEOUT_SECONDS = 180.0  # far beyond any answer here; a hang becomes a failure


@dataclass
class Answer:
    message_id: int = 0
    base: str = ""  # the text up to base_seq, from a snapshot
    base_seq: int = 0
    parts: dict[int, str] = field(default_factory=dict)
    last_seq: int = 0
    final: dict[str, Any] | None = None

    @property
    def text(self) -> str:
        return self.base + "".join(self.parts[seq] for seq in sorted(self.parts))


@dataclass
class Tab:
    ws_url: str
    origin: str
    cookie: str
    answer: Answer = field(default_factory=Answer)
    socket: Any = None
    connects: int = 0
    drops: int = 0
    resumes: int = 0
    wire_duplicates: int = 0
    snapshots: int = 0
    last_frame_at: float = field(default_factory=time.monotonic)

    async def connect(self, *, timeout: float = 60) -> None:  # noqa: ASYNC109
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.socket = await websockets.connect(
                    self.ws_url, additional_headers={"Cookie": self.cookie, "Origin": self.origin},
                    open_timeout=5, max_size=2**22,
                )
                self.connects += 1
                return
            except (TimeoutError, OSError, InvalidHandshake):
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.2)

    async def send(self, frame: dict[str, Any]) -> None:
        await self.socket.send(json.dumps(frame))

    async def ask(self, content: str, *, tag: str) -> None:
        """Send a question and run until its answer ended."""
        await self.connect()
        await self.send({"type": "send", "conversation": None, "content": content,
                         "reasoning_effort": "low", "client_id": tag})
        await self.follow()

    def drop(self) -> None:
        """Cut the connection abruptly, as a network failure would."""
        if self.socket is not None and self.answer.final is None:
            self.drops += 1
            self.socket.transport.abort()

    async def resume(self) -> None:
        self.resumes += 1
        await self.send({"type": "resume", "message": self.answer.message_id,
                         "after_seq": self.answer.last_seq})

    async def follow(self, *, timeout: float = FOLLOW_TIMEOUT_SECONDS) -> None:  # noqa: ASYNC109
        deadline = time.monotonic() + timeout
        while self.answer.final is None:
            if time.monotonic() > deadline:
                # A chaos case must fail, never hang the suite: say what the tab last saw.
                raise AssertionError(
                    f"answer {self.answer.message_id} did not end within {timeout:.0f} s "
                    f"(last seq {self.answer.last_seq}, {self.resumes} resumes)"
                )
            try:
                raw = await asyncio.wait_for(self.socket.recv(), QUIET_RESUME_SECONDS)
            except TimeoutError:
                if self.answer.message_id:
                    await self.resume()  # quiet: ask for what we missed, or the end
                continue
            except (ConnectionClosed, OSError):
                await self.connect()
                if self.answer.message_id:
                    await self.resume()
                continue
            self.last_frame_at = time.monotonic()
            await self.handle(json.loads(raw))

    async def handle(self, frame: dict[str, Any]) -> None:
        answer = self.answer
        kind = frame["type"]
        if kind == "message.created":
            answer.message_id = frame["assistant_message"]
        elif kind == "error" and frame.get("message") is None:
            raise AssertionError(f"the send was refused: {frame}")
        elif frame.get("message") != answer.message_id:
            return
        elif kind == "delta":
            seq = frame["seq"]
            if seq <= answer.last_seq:
                self.wire_duplicates += 1
            elif seq == answer.last_seq + 1:
                answer.parts[seq] = frame["text"]
                answer.last_seq = seq
            else:
                await self.resume()  # a gap: fetch the missing deltas
        elif kind == "snapshot":
            self.snapshots += 1
            if frame["seq"] >= answer.last_seq:
                answer.base, answer.base_seq, answer.parts = frame["text"], frame["seq"], {}
                answer.last_seq = frame["seq"]
        elif kind in ("done", "error"):
            if frame.get("seq", answer.last_seq + 1) > answer.last_seq + 1:
                await self.resume()  # the end arrived before deltas we missed
                return
            answer.final = frame

    async def close(self) -> None:
        if self.socket is not None:
            await self.socket.close()
