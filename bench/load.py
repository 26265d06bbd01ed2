"""N websocket clients in one asyncio process, each sending one message.

Each client behaves like a browser tab: it connects to /ws/chat/ with its session
cookie and the site's Origin, sends ``{"type": "send", ...}`` at its scheduled moment and
records the wall-clock receive time of every frame until the answer's ``done`` (or
``error``) frame. Receive times use ``time.time()`` so they can be compared with the
send times the emulator embeds in each token.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from websockets.asyncio.client import ClientConnection, connect

if TYPE_CHECKING:
    from collections.abc import Callable

TERMINAL = ("done", "error")


@dataclass
class Answer:
    slot: int
    client_id: str
    t_send: float = 0.0
    t_created: float | None = None
    message_id: int | None = None
    frames: list[tuple[float, dict[str, Any]]] = field(default_factory=list)
    t_end: float | None = None
    failure: str = ""  # timeout / connection closed / refused


class Tap:
    """Listens on the channel layer's Redis pub/sub channel of a sample of answers, to
    time each frame between the worker and the web process.

    Redis delivers a PUBLISH to this subscriber at the same moment as to the web
    process, so (tap time − emulator send time) is the worker's share of a token's
    latency and (websocket receive − tap time) the web process's share.
    """

    def __init__(self, redis_url: str, channel_for: Callable[[int], str]) -> None:
        self.redis_url = redis_url
        self.channel_for = channel_for
        self.records: list[tuple[float, bytes, bytes]] = []
        self._client: Any = None
        self._pubsub: Any = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        import redis.asyncio as aredis

        self._client = aredis.Redis.from_url(self.redis_url)
        self._pubsub = self._client.pubsub()
        await self._pubsub.subscribe(self.channel_for(0))  # opens the connection
        self._task = asyncio.create_task(self._listen())

    async def _listen(self) -> None:
        while True:
            message = await self._pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
            if message is not None and message["type"] == "message":
                self.records.append((time.time(), message["channel"], message["data"]))

    async def follow(self, message_id: int) -> None:
        await self._pubsub.subscribe(self.channel_for(message_id))

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._pubsub is not None:
            await self._pubsub.aclose()
        if self._client is not None:
            await self._client.aclose()


async def open_clients(url: str, origin: str, cookie_name: str, session_keys: list[str],
                       *, parallel: int = 32) -> list[ClientConnection]:
    gate = asyncio.Semaphore(parallel)

    async def one(key: str) -> ClientConnection:
        async with gate:
            return await connect(
                url, origin=origin, additional_headers={"Cookie": f"{cookie_name}={key}"},  # type: ignore[arg-type]
                compression=None, ping_interval=None, open_timeout=60, close_timeout=2,
                max_size=2**22, max_queue=None,
            )

    results = await asyncio.gather(*(one(k) for k in session_keys), return_exceptions=True)
    failed = [r for r in results if isinstance(r, BaseException)]
    if failed:
        for r in results:
            if not isinstance(r, BaseException):
                await r.close()
        raise RuntimeError(f"{len(failed)} of {len(session_keys)} websocket handshakes failed: {failed[0]!r}")
    return list(results)  # type: ignore[arg-type]


async def close_clients(clients: list[ClientConnection]) -> None:
    await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)


async def _follow(ws: ClientConnection, answer: Answer, send_at: float, deadline: float,
                  frame: dict[str, Any], tap: Tap | None) -> None:
    loop = asyncio.get_running_loop()
    await asyncio.sleep(max(0.0, send_at - loop.time()))
    payload = json.dumps(frame)
    answer.t_send = time.time()
    await ws.send(payload)
    early: list[tuple[float, dict[str, Any]]] = []
    try:
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError
            raw = await asyncio.wait_for(ws.recv(), remaining)
            now = time.time()
            data = json.loads(raw)
            kind = data.get("type")
            if kind == "message.created" and data.get("client_id") == answer.client_id:
                answer.t_created = now
                answer.message_id = data["assistant_message"]
                if tap is not None:
                    await tap.follow(answer.message_id)
                answer.frames.extend(f for f in early if f[1].get("message") == answer.message_id)
                continue
            if answer.message_id is None:
                if kind == "error" and data.get("message") is None:
                    answer.failure = f"refused: {data.get('code')}: {data.get('detail')}"
                    answer.t_end = now
                    return
                early.append((now, data))
                continue
            if data.get("message") != answer.message_id:
                continue
            answer.frames.append((now, data))
            if kind in TERMINAL:
                answer.t_end = now
                return
    except TimeoutError:
        answer.failure = "timeout"
    except Exception as error:  # connection closed, bad frame: recorded, never hidden
        answer.failure = f"{type(error).__name__}: {error}"


async def run_wave(clients: list[ClientConnection], *, tag: str, stagger: float,
                   answer_timeout: float, effort: str, tap: Tap | None = None,
                   tap_every: int = 10) -> tuple[list[Answer], float, float]:
    """Every client sends once; client i at i/N × stagger seconds. Returns the answers
    and the wall-clock start and end of the wave."""
    loop = asyncio.get_running_loop()
    count = len(clients)
    start = loop.time() + 0.2
    deadline = start + stagger + answer_timeout
    answers = [Answer(i, f"{tag}-{i}") for i in range(count)]
    wall_start = time.time() + 0.2
    await asyncio.gather(*(
        _follow(ws, answer, start + (stagger * i / count if count else 0.0), deadline, {
            "type": "send", "conversation": None, "content": "bench",
            "reasoning_effort": effort, "client_id": answer.client_id,
        }, tap if i % tap_every == 0 else None)
        for i, (ws, answer) in enumerate(zip(clients, answers, strict=True))
    ))
    return answers, wall_start, time.time()


def event_loop_runner():  # type: ignore[no-untyped-def]
    """uvloop when available (as the servers use), to keep client overhead low."""
    try:
        import uvloop

        return uvloop.run
    except ImportError:
        return asyncio.run
