"""The Redis cache with one client per process.

Django's Redis backend gives each cache object (one per async context, so one per
websocket consumer) a pool of its own. Here every cache object of a process shares one
client, whose pool is thread-safe and grows only with the calls made at the same moment.
See docs/decisions.md#0036.
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
