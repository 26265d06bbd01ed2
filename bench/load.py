"""N websocket clients in one asyncio process, each sending one message (one wave).

Each client behaves like a browser tab: it connects to /ws/chat/ with its session
cookie and the site's Origin, sends ``{"type": "send", ...}`` at its scheduled moment and
records the wall-clock receive time of every frame until the answer's ``done`` (or
``error``) frame. Receive times use ``time.time()`` so they can be compared with the
send times the emulator embeds in each token. ``bench.closed_loop`` reuses the same
client to send message after message.
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
    new_conversation: bool = False  # the send started a new conversation


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


def endpoints(ports: list[int], count: int) -> list[str]:
    """``host:port`` for each of ``count`` clients, spread round-robin over the web
    processes' ports (what a load balancer in front of them would do)."""
    return [f"127.0.0.1:{ports[i % len(ports)]}" for i in range(count)]


async def open_clients(hosts: list[str], cookie_name: str, session_keys: list[str],
                       *, parallel: int = 32) -> list[ClientConnection]:
    """One signed-in websocket per session, client i to ``hosts[i]``, with that site's
    Origin as a browser would send it."""
    gate = asyncio.Semaphore(parallel)

    async def one(host: str, key: str) -> ClientConnection:
        async with gate:
            return await connect(
                f"ws://{host}/ws/chat/", origin=f"http://{host}",  # type: ignore[arg-type]
                additional_headers={"Cookie": f"{cookie_name}={key}"},
                compression=None, ping_interval=None, open_timeout=60, close_timeout=2,
                max_size=2**22, max_queue=None,
            )

    results = await asyncio.gather(*(one(h, k) for h, k in zip(hosts, session_keys, strict=True)),
                                   return_exceptions=True)
    failed = [r for r in results if isinstance(r, BaseException)]
    if failed:
        for r in results:
            if not isinstance(r, BaseException):
                await r.close()
        raise RuntimeError(f"{len(failed)} of {len(session_keys)} websocket handshakes failed: {failed[0]!r}")
    return list(results)  # type: ignore[arg-type]


async def close_clients(clients: list[ClientConnection]) -> None:
    await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)


def send_frame(client_id: str, effort: str, conversation: int | None = None) -> dict[str, Any]:
    """The frame the page sends for a new message (``conversation`` None: a new chat)."""
    return {"type": "send", "conversation": conversation, "content": "bench",
            "reasoning_effort": effort, "client_id": client_id}


async def follow_answer(ws: ClientConnection, answer: Answer, send_at: float, deadline: float,
                        frame: dict[str, Any], tap: Tap | None = None) -> None:
    """Send ``frame`` at loop time ``send_at`` and record the answer's frames until its
    final frame, a refusal, or ``deadline`` (loop time). Failures are recorded in
    ``answer.failure``, never raised."""
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
        follow_answer(ws, answer, start + (stagger * i / count if count else 0.0), deadline,
                      send_frame(answer.client_id, effort), tap if i % tap_every == 0 else None)
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
