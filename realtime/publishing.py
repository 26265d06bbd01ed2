"""The one boundary between sync code (Celery threads) and the channel layer.

Every frame sent from a worker goes through :func:`publish`. Calling
``async_to_sync(group_send)`` per frame would build an event loop and a Redis
connection per call (channels_redis#125), and waiting for each send would make a
streaming thread queue behind every other thread's sends. Instead each process has one
long-lived loop; ``publish`` only enqueues (it never blocks the caller), and a single
drain task sends frames in the order they were published, so one answer's frames stay
in order, and appends them to the replay buffer in one round trip per batch.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import logging
import threading
import weakref
from typing import Any

from channels.layers import get_channel_layer
from django.conf import settings
from django.dispatch import receiver

from accounts.revocation import sockets_revoked
from realtime.replay import RedisReplayStore, encode_frame, get_replay_store, replay_key

logger = logging.getLogger(__name__)

EVENT_TYPE = "stream.frame"
REPLAYED_FRAMES = {"delta", "done", "error"}
MAX_BATCH = 512


def message_group(message_id: int) -> str:
    return f"message.{message_id}"


def user_group(user_id: int) -> str:
    """Every socket of one person (closed when their account or access changes)."""
    return f"user.{user_id}"


def session_group(session_key: str) -> str:
    """Every socket opened with one session (closed when that session signs out).

    Hashed: group names travel as Redis channel names, and a session key is a credential.
    """
    return "session." + hashlib.sha256(session_key.encode()).hexdigest()[:40]


class Publisher:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._queue: asyncio.Queue[tuple[int, dict[str, Any]]] | None = None
        self._idle = threading.Event()
        self._idle.set()
        self._pending = 0

    def use_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        with self._lock:
            self._loop = loop
            self._queue = None
            loop.call_soon_threadsafe(self._start_drain)

    def _ensure_loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None or self._loop.is_closed():
                loop = asyncio.new_event_loop()
                threading.Thread(target=loop.run_forever, name="realtime-publisher", daemon=True).start()
                self._loop = loop
                loop.call_soon_threadsafe(self._start_drain)
            return self._loop

    def _start_drain(self) -> None:
        self._queue = asyncio.Queue()
        asyncio.get_running_loop().create_task(self._drain(self._queue))

    def _put(self, item: tuple[int, dict[str, Any]]) -> None:
        if self._queue is None:
            self._start_drain()
        assert self._queue is not None
        self._queue.put_nowait(item)

    def publish(self, message_id: int, frame: dict[str, Any]) -> None:
        loop = self._ensure_loop()
        with self._lock:
            self._pending += 1
            self._idle.clear()
        loop.call_soon_threadsafe(self._put, (message_id, frame))

    def publish_event(self, group: str, event: dict[str, Any]) -> None:
        """Send one control event to a group on the layer's loop, without waiting."""
        layer = get_channel_layer()
        if layer is None:
            return
        future = asyncio.run_coroutine_threadsafe(layer.group_send(group, event), self._ensure_loop())
        future.add_done_callback(_log_failure)

    def wait_idle(self, timeout: float = 10) -> bool:
        """Block until every published frame has been sent (tests, shutdown)."""
        return self._idle.wait(timeout)

    @staticmethod
    async def _send_in_order(layer: Any, message_id: int, frames: list[dict[str, Any]]) -> None:
        for frame in frames:
            await layer.group_send(message_group(message_id), {"type": EVENT_TYPE, "frame": frame})

    async def _drain(self, queue: asyncio.Queue[tuple[int, dict[str, Any]]]) -> None:
        layer = get_channel_layer()
        store = get_replay_store()
        while True:
            batch = [await queue.get()]
            while len(batch) < MAX_BATCH and not queue.empty():
                batch.append(queue.get_nowait())
            try:
                # Buffer first: a tab that subscribes while this batch is in flight
                # reads the frames from the buffer and drops live duplicates by seq.
                replayed = [(mid, frame) for mid, frame in batch if frame["type"] in REPLAYED_FRAMES]
                if replayed:
                    await store.append_many(replayed)
                if layer is not None:
                    # Order matters within one answer, not across answers: each answer's
                    # frames go out in sequence while different answers' go concurrently.
                    by_message: dict[int, list[dict[str, Any]]] = {}
                    for message_id, frame in batch:
                        by_message.setdefault(message_id, []).append(frame)
                    results = await asyncio.gather(
                        *(self._send_in_order(layer, mid, frames) for mid, frames in by_message.items()),
                        return_exceptions=True,
                    )
                    failures = [r for r in results if isinstance(r, BaseException)]
                    if failures:
                        raise failures[0]
            except Exception:
                # The frames are in the replay buffer if that part succeeded; a tab that
                # sees a gap resumes from there.
                logger.warning("publishing %d frames failed", len(batch), exc_info=True)
            finally:
                with self._lock:
                    self._pending -= len(batch)
                    if self._pending <= 0:
                        self._pending = 0
                        self._idle.set()


def _log_failure(future: Any) -> None:
    if not future.cancelled() and future.exception() is not None:
        logger.warning("publishing an event failed", exc_info=future.exception())


_publisher = Publisher()


# A batch of frames (RedisPublisher.send_many): ARGV[1] is the replay buffer's lifetime,
# then four values per frame (whether it is replayed, its JSON for the buffer, its
# channel, its pub/sub payload); KEYS are the buffers of the replayed frames, in order.
# Each frame is appended before it is published, as the pipeline did: a tab that
# subscribes meanwhile reads it from the buffer and drops the live copy by seq. An append
# that fails (out of memory, say) does not stop the script, so the frames after it are
# still published; the script returns how many appends failed.
SEND_BATCH = """
local key = 0
local failed = 0
for i = 2, #ARGV, 4 do
  if ARGV[i] == '1' then
    key = key + 1
    local pushed = redis.pcall('RPUSH', KEYS[key], ARGV[i + 1])
    if type(pushed) == 'table' and pushed.err then
      failed = failed + 1
    else
      redis.pcall('EXPIRE', KEYS[key], ARGV[1])
    end
  end
  redis.call('PUBLISH', ARGV[i + 2], ARGV[i + 3])
end
return failed
"""


class RedisPublisher:
    """Direct path for the Redis pub/sub channel layer: the calling thread sends its own
    frame, replay append and PUBLISH in one pipelined round trip.

    Handing every frame to one loop thread made that thread the bottleneck of a worker
    streaming hundreds of answers (it must win the GIL from all of them for each
    send); here each streaming thread waits only on its own socket, and one answer's
    frames stay in order because one thread sends them. The channel name follows
    channels_redis's pub/sub layer (``<prefix>__group__<group>``, single host), and the
    payload is serialised by the layer itself.
    """

    def __init__(self, layer: Any, prefix: str, store: RedisReplayStore) -> None:
        self.layer = layer
        self.prefix = prefix
        self.store = store
        self._scripts: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()

    def _queue(self, pipe: Any, message_id: int, frame: dict[str, Any]) -> None:
        """Add one frame's replay append (when replayed) and PUBLISH to a sync or async
        pipeline."""
        if frame["type"] in REPLAYED_FRAMES:
            self.store.queue_append(pipe, message_id, frame)
        channel = f"{self.prefix}__group__{message_group(message_id)}"
        pipe.publish(channel, self.layer.serialize({"type": EVENT_TYPE, "frame": frame}))

    def publish(self, message_id: int, frame: dict[str, Any]) -> None:
        pipe = self.store.sync_client().pipeline(transaction=False)
        self._queue(pipe, message_id, frame)
        try:
            pipe.execute()
        except Exception:
            logger.warning("publishing to message %s failed", message_id, exc_info=True)

    async def send_many(self, batch: list[tuple[int, dict[str, Any]]]) -> None:
        """Many answers' frames in one command, from an event loop: ``SEND_BATCH``
        appends each replayed frame to its buffer and publishes it, in order, in Redis.

        A pipeline of RPUSH, EXPIRE and PUBLISH per frame cost the worker three commands
        to pack and three replies to read (each under its own timeout) for every frame;
        this is one of each per flush tick, whatever the number of answers."""
        keys: list[str] = []
        args: list[Any] = [self.store.ttl]
        for message_id, frame in batch:
            replayed = frame["type"] in REPLAYED_FRAMES
            if replayed:
                keys.append(replay_key(message_id))
            args += [1 if replayed else 0, encode_frame(frame) if replayed else "",
                     f"{self.prefix}__group__{message_group(message_id)}",
                     self.layer.serialize({"type": EVENT_TYPE, "frame": frame})]
        failed = await self._script()(keys=keys, args=args)
        if failed:
            logger.warning("%d of %d frames were published but not buffered for replay",
                           failed, len(keys))

    def _script(self) -> Any:
        """``SEND_BATCH`` registered with this loop's client (it loads the script again
        after a Redis restart)."""
        client = self.store.async_client()
        script = self._scripts.get(client)
        if script is None:
            script = self._scripts[client] = client.register_script(SEND_BATCH)
        return script

    def publish_event(self, group: str, event: dict[str, Any]) -> None:
        channel = f"{self.prefix}__group__{group}"
        try:
            self.store.sync_client().publish(channel, self.layer.serialize(event))
        except Exception:
            logger.warning("publishing %s to %s failed", event.get("type"), group, exc_info=True)


class BatchPublisher:
    """Frames of every answer on one event loop (answers.engine), sent together.

    ``publish`` is called on the loop and never waits: frames published during one pass
    of the loop, by any number of answers, leave in one Redis round trip (replay appends
    and PUBLISHes pipelined), and frames published while that trip is out go in the next
    one. Frames leave in the order they were published, so one answer's stay in order.
    Without the Redis layer (embedded mode) each frame goes to ``publish``.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._frames: list[tuple[int, dict[str, Any]]] = []
        self._sending = False
        self._published = 0
        self._done = 0
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []
        # Redis pipelines sent and the frames they carried (tests and the benchmark).
        self.round_trips = 0
        self.frames_sent = 0

    def publish(self, message_id: int, frame: dict[str, Any]) -> None:
        self._frames.append((message_id, frame))
        self._published += 1
        if not self._sending:
            self._sending = True
            # After the current pass, so every answer's frames of this pass join in.
            self._loop.call_soon(self._loop.create_task, self._send_all())

    async def sent(self) -> None:
        """Return once every frame published before the call has been sent."""
        if self._done >= self._published:
            return
        waiter: asyncio.Future[None] = self._loop.create_future()
        self._waiters.append((self._published, waiter))
        await waiter

    async def _send_all(self) -> None:
        try:
            while self._frames:
                batch, self._frames = self._frames, []
                try:
                    await self._send(batch)
                except Exception:
                    logger.warning("publishing %d frames failed", len(batch), exc_info=True)
                self._done += len(batch)
                self._wake()
        finally:
            self._sending = False
            if self._frames:  # published while the last trip was ending
                self._sending = True
                self._loop.create_task(self._send_all())

    def _wake(self) -> None:
        ready = [w for w in self._waiters if w[0] <= self._done]
        self._waiters = [w for w in self._waiters if w[0] > self._done]
        for _, waiter in ready:
            if not waiter.done():
                waiter.set_result(None)

    async def _send(self, batch: list[tuple[int, dict[str, Any]]]) -> None:
        direct = _direct_publisher()
        if direct is None:
            for message_id, frame in batch:
                publish(message_id, frame)
            return
        self.round_trips += 1
        self.frames_sent += len(batch)
        await direct.send_many(batch)


@functools.cache
def _direct_publisher() -> RedisPublisher | None:
    config: dict[str, Any] = settings.CHANNEL_LAYERS.get("default", {})
    hosts = config.get("CONFIG", {}).get("hosts", [])
    if config.get("BACKEND") != "channels_redis.pubsub.RedisPubSubChannelLayer" or len(hosts) != 1:
        return None
    store = get_replay_store()
    # The replay buffer and the channel layer must be the same Redis for one round trip.
    if not isinstance(store, RedisReplayStore) or hosts[0] != store.url:
        return None
    prefix = config.get("CONFIG", {}).get("prefix", "asgi")
    return RedisPublisher(get_channel_layer(), prefix, store)


def use_event_loop(loop: asyncio.AbstractEventLoop) -> None:
    """Publish on an existing loop (embedded mode: the web server's own loop, which the
    in-memory channel layer lives on)."""
    _publisher.use_loop(loop)


def publish(message_id: int, frame: dict[str, Any]) -> None:
    """Send one server→client frame to every socket following this message.

    With Redis the caller's thread sends it (one round trip); otherwise (embedded mode's
    in-memory layer) it is queued for the loop the layer lives on, and never blocks."""
    direct = _direct_publisher()
    if direct is not None:
        direct.publish(message_id, frame)
        return
    _publisher.publish(message_id, frame)


def publish_event(group: str, event: dict[str, Any]) -> None:
    """Send one control event (not a stream frame: no sequence number, no replay) to every
    socket in ``group``; the consumer handles it by its ``type``. Fire and forget: a lost
    event is caught by the consumer's own checks."""
    direct = _direct_publisher()
    if direct is not None:
        direct.publish_event(group, event)
        return
    _publisher.publish_event(group, event)


def wait_until_sent(timeout: float = 10) -> bool:
    return _publisher.wait_idle(timeout)


REVOKED_EVENT = "account.revoked"


@receiver(sockets_revoked, dispatch_uid="realtime.publishing.close_revoked_sockets")
def _close_revoked_sockets(sender: Any, *, user_id: int, session_key: str | None, code: int,
                           reason: str, **kwargs: Any) -> None:
    """A person's sign-in or access changed (accounts.revocation): their sockets (only
    those opened with ``session_key`` when given) get an ``account.revoked`` event and
    close with ``code``."""
    group = session_group(session_key) if session_key else user_group(user_id)
    publish_event(group, {"type": REVOKED_EVENT, "code": code, "reason": reason})
