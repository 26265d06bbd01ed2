"""The ``hop`` reference server: the floor with the stream where DESIGN's parts put it.

The floor (``bench.reference``) streams the answer in the process that holds the socket.
DESIGN has the web process store the turn and enqueue it, a Celery worker call the model,
and the coalesced deltas cross Redis (the channel layer's pub/sub and a short-lived replay
list per answer) back to the web process. This server does that with the least work, so
that hop ÷ floor is what the architecture costs and product ÷ hop what the product adds:

- web (``HopServer``, aiohttp on uvloop): the floor's first transaction, a subscription to
  the answer's channel on the process's one pub/sub connection, ``message.created``, the
  ``stream`` task enqueued, then each frame from the channel written to the socket as is.
- worker (``stream``, a thread of a ``--pool threads`` worker): the floor's claim, then the
  answer goes to the process's one event loop (``Streamer``), which streams the upstream,
  coalesces as the floor does, publishes each frame (PUBLISH and RPUSH, pipelined per pass
  of the loop by ``BatchPublisher``), runs the floor's last transaction and publishes
  ``done``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
from concurrent.futures import Future
from typing import Any
from urllib.parse import urlsplit

from bench.reference import (
    Answer,
    Relay,
    app,
    claim,
    coalesced,
    created_frame,
    delta_frame,
    done_frame,
    finish_turn,
    open_pool,
    store_turn,
)

logger = logging.getLogger(__name__)

HOP_QUEUE = "bench-reference-hop"
REPLAY_PREFIX = "bench-hop-replay."
REPLAY_TTL_SECONDS = 600  # the product's default REPLAY_TTL_SECONDS
# Every frame is orjson's dump of a dict whose first key is "type".
DONE_PREFIX = b'{"type":"done"'


def _scope(redis_url: str) -> str:
    """The Redis database number: pub/sub channels are shared by every database of a
    server, so a channel carries it (another run on another database may use the same
    answer ids)."""
    return urlsplit(redis_url).path.strip("/") or "0"


def channel(scope: str, answer: int) -> str:
    return f"bench-hop.{scope}.{answer}"


def replay_key(answer: int) -> str:
    return f"{REPLAY_PREFIX}{answer}"


def new_event_loop() -> asyncio.AbstractEventLoop:
    try:  # uvloop, as the product's processes run
        import uvloop

        return uvloop.new_event_loop()
    except ImportError:  # pragma: no cover - uvloop ships with uvicorn[standard]
        return asyncio.new_event_loop()


# --- worker -------------------------------------------------------------------------------


class BatchPublisher:
    """Sends the frames published on one event loop to Redis, pipelined.

    ``publish`` never waits. The first frame after a quiet spell schedules a send for
    the end of the loop's pass, so every frame published in that pass, by any answer,
    leaves in one round trip; frames published while a trip is out leave in the next.
    One trip at a time keeps each answer's frames in order on the server.
    """

    def __init__(self, client: Any, loop: asyncio.AbstractEventLoop, scope: str) -> None:
        self.client = client
        self.loop = loop
        self.scope = scope
        self.frames: list[tuple[int, bytes, bool]] = []
        self.sending = False

    def publish(self, answer: int, frame: bytes, *, first: bool = False) -> None:
        """Queue one frame of ``answer``; ``first`` also sets its replay list's expiry."""
        self.frames.append((answer, frame, first))
        if not self.sending:
            self.sending = True
            self.loop.call_soon(self.loop.create_task, self._send_all())

    async def _send_all(self) -> None:
        try:
            while self.frames:
                batch, self.frames = self.frames, []
                pipe = self.client.pipeline(transaction=False)
                for answer, frame, first in batch:
                    # Replay list first, as a reconnecting tab reads it after a gap.
                    pipe.rpush(replay_key(answer), frame)
                    if first:
                        pipe.expire(replay_key(answer), REPLAY_TTL_SECONDS)
                    pipe.publish(channel(self.scope, answer), frame)
                try:
                    await pipe.execute()
                except Exception:
                    logger.exception("publishing %d frames failed", len(batch))
        finally:
            self.sending = False


class Streamer:
    """A worker process's one event loop, in its own thread: it streams every answer
    the ``stream`` task hands it, with one HTTP session, one Redis client and one
    PostgreSQL pool shared by all of them."""

    def __init__(self, emulator: str, redis_url: str, flush_ms: int) -> None:
        self.url = emulator.rstrip("/") + "/v1/chat/completions"
        self.redis_url = redis_url
        self.flush_s = flush_ms / 1000
        self.loop = new_event_loop()
        self.ready = threading.Event()
        self.failure: BaseException | None = None
        self.session: Any = None
        self.pool: Any = None
        self.publisher: BatchPublisher | None = None

    def start(self) -> None:
        """Start the loop's thread; return once it can take answers."""
        threading.Thread(target=self._run, name="hop-stream-loop", daemon=True).start()
        self.ready.wait()
        if self.failure is not None:
            raise RuntimeError("the hop worker's event loop did not start") from self.failure

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_until_complete(self._open())
        except BaseException as error:  # handed to start(), which raises it in the task
            self.failure = error
            self.ready.set()
            return
        self.ready.set()
        self.loop.run_forever()

    async def _open(self) -> None:
        import aiohttp
        import redis.asyncio as aredis

        self.session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
        self.pool = await open_pool()
        self.publisher = BatchPublisher(aredis.Redis.from_url(self.redis_url), self.loop,
                                        _scope(self.redis_url))

    def submit(self, answer_id: int, effort: str) -> None:
        """Hand one claimed answer to the loop (from a task's thread); it streams on
        after the task returns."""
        future = asyncio.run_coroutine_threadsafe(self.answer(answer_id, effort), self.loop)
        future.add_done_callback(_log_failure)

    async def answer(self, answer_id: int, effort: str) -> None:
        publisher = self.publisher
        assert publisher is not None
        answer = Answer()
        async with contextlib.aclosing(coalesced(self.session, self.url, effort, self.flush_s, answer)) as deltas:
            async for text in deltas:
                publisher.publish(answer_id, delta_frame(answer_id, answer.seq, text), first=answer.seq == 1)
        await finish_turn(self.pool, answer_id, answer)
        publisher.publish(answer_id, done_frame(answer_id, answer.seq), first=answer.seq == 0)


def _log_failure(future: Future[None]) -> None:
    if not future.cancelled() and future.exception() is not None:
        logger.error("a hop answer failed", exc_info=future.exception())


_streamer: Streamer | None = None
_streamer_lock = threading.Lock()


def worker_streamer() -> Streamer:
    """This worker process's ``Streamer``, started by the first task that needs it."""
    global _streamer
    with _streamer_lock:
        if _streamer is None:
            streamer = Streamer(os.environ["EMULATOR_URL"], os.environ["REDIS_URL"],
                                int(os.environ.get("STREAM_FLUSH_MS", "60")))
            streamer.start()
            _streamer = streamer
        return _streamer


@app.task(name="bench.reference.stream", queue=HOP_QUEUE)
def stream(answer_id: int, effort: str) -> None:
    """The worker's share of a hop turn: claim the answer's row, as the floor's worker
    does, and hand the answer to the event loop that streams it."""
    claim.run(answer_id)
    worker_streamer().submit(answer_id, effort)


# --- web ----------------------------------------------------------------------------------


class Subscriptions:
    """The web process's one pub/sub connection to Redis, read by one task that routes
    each message to the queue of its answer's turn."""

    def __init__(self, redis_url: str) -> None:
        self.redis_url = redis_url
        self.scope = _scope(redis_url)
        self.pubsub: Any = None
        self.queues: dict[bytes, asyncio.Queue[bytes]] = {}
        self.confirmed: dict[bytes, asyncio.Future[None]] = {}
        self.reader: asyncio.Task[None] | None = None

    async def start(self) -> None:
        import redis.asyncio as aredis

        self.pubsub = aredis.Redis.from_url(self.redis_url).pubsub()
        # Always one channel: the reader may block on the connection from the start, and
        # no SUBSCRIBE sent while it reads waits for a health check's reply.
        await self.pubsub.subscribe(channel(self.scope, 0))
        self.reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        while True:
            message = await self.pubsub.get_message(timeout=None)
            if message is None:
                continue
            kind, name = message["type"], message["channel"]
            if kind == "message":
                queue = self.queues.get(name)
                if queue is not None:
                    queue.put_nowait(message["data"])
            elif kind == "subscribe":
                waiter = self.confirmed.pop(name, None)
                if waiter is not None and not waiter.done():
                    waiter.set_result(None)

    async def subscribe(self, answer: int) -> tuple[bytes, asyncio.Queue[bytes], asyncio.Future[None]]:
        """Route ``answer``'s frames to a new queue; the future resolves once Redis has
        confirmed the subscription, after which nothing published is missed."""
        name = channel(self.scope, answer).encode()
        queue: asyncio.Queue[bytes] = asyncio.Queue()
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.queues[name] = queue
        self.confirmed[name] = waiter
        await self.pubsub.subscribe(name)
        return name, queue, waiter

    async def unsubscribe(self, name: bytes) -> None:
        self.queues.pop(name, None)
        self.confirmed.pop(name, None)
        await self.pubsub.unsubscribe(name)


class HopServer(Relay):
    """The web process of the hop: it stores the turn and forwards what the worker
    publishes; it never talks to the upstream."""

    def __init__(self, emulator: str, *, flush_ms: int) -> None:
        super().__init__(emulator, floor=True, flush_ms=flush_ms)
        self.subscriptions = Subscriptions(os.environ["REDIS_URL"])

    async def start(self) -> None:
        self.pool = await open_pool()
        await self.subscriptions.start()

    async def turn(self, ws: Any, frame: dict[str, Any]) -> None:
        client_id = str(frame.get("client_id", ""))
        effort = str(frame.get("reasoning_effort") or "medium")
        question, answer = await store_turn(self.pool, client_id, effort)
        name, queue, confirmed = await self.subscriptions.subscribe(answer)
        try:
            await ws.send_str(created_frame(client_id, effort, question, answer).decode())
            await confirmed  # subscribed before the worker can publish
            await asyncio.to_thread(stream.delay, answer, effort)
            while True:
                data = await queue.get()
                await ws.send_str(data.decode())
                if data.startswith(DONE_PREFIX):
                    break
        finally:
            await self.subscriptions.unsubscribe(name)
