"""The Redis cache keeps one client per process: open tabs (one async context each) that
touch it, for the send rate limit, do not each hold a Redis connection."""

from __future__ import annotations

import asyncio

import pytest
from asgiref.sync import sync_to_async
from django.conf import settings
from django.core.cache import caches

TABS = 100


def connected_clients() -> int:
    """Connections this process's cache holds to Redis (idle and in use). Counted in its
    own pools, not with the server's INFO: other processes on the same Redis (the fast
    lane's other workers) open and close theirs meanwhile."""
    pools = caches["default"]._cache._pools.values()  # type: ignore[attr-defined]
    return sum(len(pool._available_connections) + len(pool._in_use_connections) for pool in pools)


@pytest.mark.skipif(not settings.REDIS_URL, reason="embedded mode caches in memory")
def test_a_hundred_open_tabs_that_count_sends_share_one_cache_client() -> None:
    before = connected_clients()
    clients: set[int] = set()
    counted: list[int] = []

    def count_a_send(n: int) -> None:
        cache = caches["default"]
        cache.set(f"test-shared-cache:{n}", 1, 30)
        cache.incr(f"test-shared-cache:{n}")
        clients.add(id(cache._cache))  # type: ignore[attr-defined]
        counted.append(n)

    async def tabs() -> int:
        release = asyncio.Event()

        all_counted = asyncio.Event()

        async def tab(n: int) -> None:
            await sync_to_async(count_a_send, thread_sensitive=False)(n)
            if len(counted) == TABS:
                all_counted.set()
            await release.wait()  # the tab stays open, as a consumer does

        tasks = [asyncio.create_task(tab(n)) for n in range(TABS)]
        await all_counted.wait()
        open_now = connected_clients()
        release.set()
        await asyncio.gather(*tasks)
        return open_now

    open_with_tabs = asyncio.run(tabs())

    assert len(clients) == 1
    # A client per tab would add 100; one shared pool adds what ran at the same moment.
    assert open_with_tabs - before <= 10, (before, open_with_tabs)
