"""How many chat websockets one person may hold open at once (MAX_SOCKETS_PER_USER).

Each open socket holds a claim: a member of the person's sorted set in Redis (shared by
every web process), scored with the time its claim lapses. A socket refreshes its claim
every ``REFRESH_SECONDS`` and drops it when it closes; a process that dies without
closing its sockets stops refreshing, and its claims lapse ``CLAIM_SECONDS`` later, so a
crash never leaves a person locked out. Embedded mode (one process, no Redis) keeps the
same claims in memory.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import uuid
from functools import cache
from typing import Any, Protocol

import redis.asyncio as aredis
from django.conf import settings

logger = logging.getLogger(__name__)

# The close code of a socket over the cap; the chat page explains it and stops retrying.
TOO_MANY_SOCKETS = 4429
TOO_MANY_SOCKETS_REASON = "too many open chat tabs"
CLAIM_SECONDS = 90
REFRESH_SECONDS = 30
# Redis connections one process's socket claims share, and how long a claim waits for one.
POOL_CONNECTIONS = 16
POOL_WAIT_SECONDS = 10


def claims_key(user_id: int) -> str:
    return f"teamchat:sockets:{user_id}"


# Atomic, so two tabs opening together cannot both take the last place. Lapsed claims
# (a crashed process's) are dropped first; the time is Redis's, the same for every host.
_CLAIM = """
local now = tonumber(redis.call('TIME')[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then
  return 0
end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[1])
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[3]))
return 1
"""
# A socket that is open keeps its place, even if its claim lapsed meanwhile (a long
# pause of its process): it is not closed after the fact.
_REFRESH = """
local now = tonumber(redis.call('TIME')[1])
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[2]))
return 1
"""


class SocketClaims(Protocol):
    async def claim(self, user_id: int, member: str, limit: int) -> bool: ...

    async def refresh(self, user_id: int, member: str) -> None: ...

    async def release(self, user_id: int, member: str) -> None: ...


class RedisSocketClaims:
    def __init__(self, url: str) -> None:
        self.url = url
        self._clients: dict[Any, Any] = {}

    def client(self) -> Any:
        # One client per event loop: redis-py asyncio connections must not cross loops.
        loop = asyncio.get_running_loop()
        client = self._clients.get(loop)
        if client is None:
            # A blocking pool: when hundreds of tabs connect or close at once their claims
            # wait a moment for one of a few connections, instead of failing with "Too
            # many connections" past redis-py's default of 100 (seen at 200 tabs).
            pool = aredis.BlockingConnectionPool.from_url(
                self.url, max_connections=POOL_CONNECTIONS, timeout=POOL_WAIT_SECONDS)
            client = self._clients[loop] = aredis.Redis(connection_pool=pool)
        return client

    async def claim(self, user_id: int, member: str, limit: int) -> bool:
        return bool(await self.client().eval(_CLAIM, 1, claims_key(user_id), member, limit,
                                             CLAIM_SECONDS))

    async def refresh(self, user_id: int, member: str) -> None:
        await self.client().eval(_REFRESH, 1, claims_key(user_id), member, CLAIM_SECONDS)

    async def release(self, user_id: int, member: str) -> None:
        await self.client().zrem(claims_key(user_id), member)


class MemorySocketClaims:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._claims: dict[int, dict[str, float]] = {}

    def _live(self, user_id: int, now: float) -> dict[str, float]:
        claims = self._claims.setdefault(user_id, {})
        for member in [m for m, lapses in claims.items() if lapses <= now]:
            del claims[member]
        return claims

    async def claim(self, user_id: int, member: str, limit: int) -> bool:
        now = time.monotonic()
        with self._lock:
            claims = self._live(user_id, now)
            if len(claims) >= limit:
                return False
            claims[member] = now + CLAIM_SECONDS
            return True

    async def refresh(self, user_id: int, member: str) -> None:
        with self._lock:
            self._claims.setdefault(user_id, {})[member] = time.monotonic() + CLAIM_SECONDS

    async def release(self, user_id: int, member: str) -> None:
        with self._lock:
            claims = self._claims.get(user_id, {})
            claims.pop(member, None)
            if not claims:
                self._claims.pop(user_id, None)


@cache
def get_socket_claims() -> SocketClaims:
    if settings.REDIS_URL:
        return RedisSocketClaims(settings.REDIS_URL)
    return MemorySocketClaims()


class SocketSlot:
    """One socket's place among its person's open sockets."""

    def __init__(self, user_id: int) -> None:
        self.user_id = user_id
        self.member = uuid.uuid4().hex
        self._refresher: asyncio.Task[None] | None = None

    async def take(self) -> bool:
        """Whether the person is under MAX_SOCKETS_PER_USER with this socket; a Redis
        failure lets the socket open (the cap guards against abuse, not correctness)."""
        try:
            taken = await get_socket_claims().claim(self.user_id, self.member,
                                                    settings.MAX_SOCKETS_PER_USER)
        except Exception:  # noqa: BLE001 - any Redis error
            logger.warning("could not count the sockets of user %s; letting one open",
                           self.user_id, exc_info=True)
            return True
        if taken:
            self._refresher = asyncio.create_task(self._refresh_forever())
        return taken

    async def _refresh_forever(self) -> None:
        while True:
            await asyncio.sleep(REFRESH_SECONDS)
            try:
                await get_socket_claims().refresh(self.user_id, self.member)
            except Exception:  # noqa: BLE001 - retried on the next tick
                logger.warning("could not refresh a socket claim of user %s", self.user_id,
                               exc_info=True)

    async def give_back(self) -> None:
        if self._refresher is None:
            return
        self._refresher.cancel()
        self._refresher = None
        try:
            await get_socket_claims().release(self.user_id, self.member)
        except Exception:  # noqa: BLE001 - the claim lapses on its own
            logger.warning("could not release a socket claim of user %s", self.user_id,
                           exc_info=True)
