"""The replay buffer's asyncio Redis clients: one per live event loop, never one per loop
a process ever ran, and closed with the worker's loop (real Redis)."""

from __future__ import annotations

import asyncio
from typing import Any

from answers.engine import Engine
from realtime import replay
from realtime.replay import RedisReplayStore, replay_key


async def _append_and_read(store: RedisReplayStore, message_id: int) -> list[dict[str, Any]]:
    await store.append_many([(message_id, {"type": "delta", "seq": 1, "text": "hi"})])
    return await store.read_after(message_id, 0)


def test_a_closed_loop_s_client_is_dropped_when_the_next_loop_asks(settings: Any) -> None:
    store = RedisReplayStore(settings.REDIS_URL, ttl=60)
    try:
        for round_ in range(4):
            frames = asyncio.run(_append_and_read(store, 910_000 + round_))
            assert [f["text"] for f in frames] == ["hi"]
            # The loop that just ended is the only one known, and it is closed.
            assert len(store._async_clients) == 1
            assert all(loop.is_closed() for loop in store._async_clients)
    finally:
        client = store.sync_client()
        client.delete(*(replay_key(910_000 + n) for n in range(4)))


def test_close_async_closes_the_running_loop_s_client(settings: Any) -> None:
    store = RedisReplayStore(settings.REDIS_URL, ttl=60)

    async def use_then_close() -> tuple[list[bool], list[bool]]:
        await _append_and_read(store, 910_010)
        connections = store._async_clients[asyncio.get_running_loop()].connection_pool._available_connections
        before = [c.is_connected for c in connections]
        await store.close_async()
        return before, [c.is_connected for c in connections]

    try:
        before, after = asyncio.run(use_then_close())
        assert (before, after) == ([True], [False])
        assert store._async_clients == {}
    finally:
        store.sync_client().delete(replay_key(910_010))


def test_the_worker_s_loop_closes_its_replay_client_as_it_ends(settings: Any) -> None:
    store = replay.get_replay_store()
    assert isinstance(store, RedisReplayStore)
    engine = Engine()
    loop = engine.loop
    try:
        frames = asyncio.run_coroutine_threadsafe(_append_and_read(store, 910_020), loop).result(10)
        assert [f["text"] for f in frames] == ["hi"]
        assert loop in store._async_clients
    finally:
        engine.close()
        store.sync_client().delete(replay_key(910_020))
    assert loop not in store._async_clients
