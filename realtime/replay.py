"""Short-lived buffer of each answer's frames, so a reconnecting tab resumes exactly.

Redis when ``REDIS_URL`` is set (shared by web and worker processes); a process-local
dict in embedded mode, where web and worker share one process.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from dataclasses import dataclass
from functools import cache
from typing import Any, Protocol

from django.conf import settings


def replay_key(message_id: int) -> str:
    return f"teamchat:replay:{message_id}"


def encode_frame(frame: dict[str, Any]) -> str:
    """A frame as the buffer keeps it (compact JSON)."""
    return json.dumps(frame, separators=(",", ":"))


class ReplayStore(Protocol):
    async def read_after(self, message_id: int, after_seq: int) -> list[dict[str, Any]]: ...

    def read_sync(self, message_id: int) -> list[dict[str, Any]]: ...

    async def append_many(self, frames: list[tuple[int, dict[str, Any]]]) -> None: ...


class RedisReplayStore:
    def __init__(self, url: str, ttl: int) -> None:
        self.url = url
        self.ttl = ttl
        self._local = threading.local()
        self._async_lock = threading.Lock()
        self._async_clients: dict[Any, Any] = {}

    def sync_client(self) -> Any:
        """A client for the calling thread (redis-py clients are not shared across threads
        here, so no thread waits on another's round trip)."""
        client = getattr(self._local, "client", None)
        if client is None:
            import redis

            client = self._local.client = redis.Redis.from_url(self.url)
        return client

    def queue_append(self, pipe: Any, message_id: int, frame: dict[str, Any]) -> None:
        """Add one frame's append (and the buffer's expiry) to a sync or async pipeline."""
        pipe.rpush(replay_key(message_id), encode_frame(frame))
        pipe.expire(replay_key(message_id), self.ttl)

    def read_sync(self, message_id: int) -> list[dict[str, Any]]:
        return [json.loads(item) for item in self.sync_client().lrange(replay_key(message_id), 0, -1)]

    def async_client(self) -> Any:
        import redis.asyncio as aredis

        # One client per event loop: redis-py asyncio connections must not cross loops.
        # The loop itself is the key, not its id, which a later loop may be given again
        # (the engine starts a new loop after closing one).
        loop = asyncio.get_running_loop()
        client = self._async_clients.get(loop)
        if client is None:
            with self._async_lock:
                # A closed loop's client can never be used again: drop it, so a process
                # whose loops come and go keeps one client per live loop, not one per
                # loop it ever ran (its sockets close as the client is collected).
                for closed in [known for known in self._async_clients if known.is_closed()]:
                    del self._async_clients[closed]
                client = self._async_clients[loop] = aredis.Redis.from_url(self.url)
        return client

    async def close_async(self) -> None:
        """Close the running loop's client and its connections (the loop is ending)."""
        with self._async_lock:
            client = self._async_clients.pop(asyncio.get_running_loop(), None)
        if client is not None:
            await client.aclose()

    async def append_many(self, frames: list[tuple[int, dict[str, Any]]]) -> None:
        pipe = self.async_client().pipeline(transaction=False)
        for message_id, frame in frames:
            self.queue_append(pipe, message_id, frame)
        await pipe.execute()

    async def read_after(self, message_id: int, after_seq: int) -> list[dict[str, Any]]:
        raw = await self.async_client().lrange(replay_key(message_id), 0, -1)
        frames = [json.loads(item) for item in raw]
        return [frame for frame in frames if frame.get("seq", 0) > after_seq]


class MemoryReplayStore:
    def __init__(self, ttl: int) -> None:
        self.ttl = ttl
        self._lock = threading.Lock()
        self._frames: dict[int, tuple[float, list[dict[str, Any]]]] = {}

    def append(self, message_id: int, frame: dict[str, Any]) -> None:
        now = time.monotonic()
        with self._lock:
            _, frames = self._frames.get(message_id, (now, []))
            frames.append(frame)
            self._frames[message_id] = (now + self.ttl, frames)
            for stale in [k for k, (exp, _) in self._frames.items() if exp < now]:
                del self._frames[stale]

    async def append_many(self, frames: list[tuple[int, dict[str, Any]]]) -> None:
        for message_id, frame in frames:
            self.append(message_id, frame)

    def read_sync(self, message_id: int) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._frames.get(message_id, (0.0, []))[1])

    async def read_after(self, message_id: int, after_seq: int) -> list[dict[str, Any]]:
        with self._lock:
            _, frames = self._frames.get(message_id, (0.0, []))
            return [frame for frame in frames if frame.get("seq", 0) > after_seq]


@cache
def get_replay_store() -> ReplayStore:
    if settings.REDIS_URL:
        return RedisReplayStore(settings.REDIS_URL, settings.REPLAY_TTL_SECONDS)
    return MemoryReplayStore(settings.REPLAY_TTL_SECONDS)


async def close_async_clients() -> None:
    """Close the running loop's replay client, if it has one (a worker's loop ends)."""
    store = get_replay_store()
    if isinstance(store, RedisReplayStore):
        await store.close_async()


@dataclass(frozen=True)
class Tail:
    """The deltas the buffer holds right after a checkpoint: what tabs may have been
    shown beyond the saved text."""

    text: str
    refusal: str
    seq: int  # the last of them (the checkpoint's own seq when there are none)


def read_tail(message_id: int, *, after_seq: int) -> Tail:
    """The text and refusal deltas numbered ``after_seq + 1`` onwards, in order, up to
    the first gap (a tab cannot have applied anything past one)."""
    text: list[str] = []
    refusal: list[str] = []
    seq = after_seq
    for frame in sorted(get_replay_store().read_sync(message_id), key=lambda f: f.get("seq", 0)):
        if frame.get("type") == "delta" and frame["seq"] == seq + 1:
            (refusal if frame.get("refusal") else text).append(frame["text"])
            seq = frame["seq"]
    return Tail("".join(text), "".join(refusal), seq)


def read_text(message_id: int, checkpoint_text: str, checkpoint_seq: int) -> tuple[str, int]:
    """The checkpointed text plus any text deltas the buffer holds beyond it."""
    tail = read_tail(message_id, after_seq=checkpoint_seq)
    return checkpoint_text + tail.text, tail.seq
