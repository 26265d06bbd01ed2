"""The Redis cache with one client per process.

Django keeps a cache object per async context, and its Redis backend gives each object
a connection pool of its own: every websocket consumer (one context each) that touches
the cache, for the send rate limit, held a Redis connection for as long as its tab stayed
open, about one connection per open tab (measured: 229 for 200 tabs on one web
process). Here every cache object of a process shares one client, whose pool is
thread-safe and grows only with the calls made at the same moment.
"""

from __future__ import annotations

import threading
from typing import Any

from django.core.cache.backends.redis import RedisCache, RedisCacheClient

_clients: dict[tuple[Any, ...], RedisCacheClient] = {}
_lock = threading.Lock()


class SharedRedisCache(RedisCache):
    def __init__(self, server: str | list[str], params: dict[str, Any]) -> None:
        super().__init__(server, params)
        self._shared_key = (str(server), repr(sorted(params.get("OPTIONS", {}).items())))

    @property
    def _cache(self) -> RedisCacheClient:  # type: ignore[override]
        client = _clients.get(self._shared_key)
        if client is None:
            with _lock:
                client = _clients.get(self._shared_key)
                if client is None:
                    # Django's own construction of the client (its cached_property's body).
                    client = _clients[self._shared_key] = RedisCache.__dict__["_cache"].func(self)
        return client
