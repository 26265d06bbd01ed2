"""One account cannot hold unlimited websockets: over MAX_SOCKETS_PER_USER (counted in
Redis, shared by every web process) the next socket is closed with 4429 and its reason,
over a real socket to the real server. A crashed process's sockets stop counting once
their claims lapse."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any, cast

import pytest
import redis
import websockets
from django.conf import settings as django_settings
from django.test import Client
from websockets.exceptions import ConnectionClosed

from accounts.models import User
from realtime.socket_limits import (
    CLAIM_SECONDS,
    TOO_MANY_SOCKETS,
    TOO_MANY_SOCKETS_REASON,
    claims_key,
)
from tests.conftest import serve_asgi

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def server(settings: Any) -> Iterator[str]:
    settings.MAX_SOCKETS_PER_USER = 3
    with serve_asgi() as url:
        yield url


@pytest.fixture
def store() -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(django_settings.REDIS_URL)
    yield client
    client.close()


@pytest.fixture(autouse=True)
def no_claims_left_over(alice: User, bob: User, store: redis.Redis) -> Iterator[None]:
    """Claims are keyed by user id, which a new test database hands out again."""
    store.delete(claims_key(alice.pk), claims_key(bob.pk))
    yield
    store.delete(claims_key(alice.pk), claims_key(bob.pk))


def _cookie(user: User) -> str:
    client = Client()
    client.force_login(user)
    return f"sessionid={client.cookies['sessionid'].value}"


async def _open(base: str, cookie: str) -> Any:
    socket = await websockets.connect(base.replace("http", "ws", 1) + "/ws/chat/",
                                      additional_headers={"Cookie": cookie, "Origin": base},
                                      open_timeout=10)
    return socket


async def _closed_by_server(socket: Any) -> tuple[int, str] | None:
    """(code, reason) if the server closes the socket within a second, else None."""
    try:
        await asyncio.wait_for(socket.recv(), timeout=1.0)
    except ConnectionClosed as closed:
        assert closed.rcvd is not None, "the connection ended without a close frame"
        return closed.rcvd.code, closed.rcvd.reason
    except TimeoutError:
        return None
    return None


def test_the_socket_over_the_cap_is_closed_with_4429_and_a_reason(
    server: str, alice: User, bob: User
) -> None:
    cookie, bobs_cookie = _cookie(alice), _cookie(bob)

    async def run() -> None:
        sockets = [await _open(server, cookie) for _ in range(3)]
        # Each stays open for its second, watched side by side.
        assert await asyncio.gather(*map(_closed_by_server, sockets)) == [None] * 3
        extra = await _open(server, cookie)
        assert await _closed_by_server(extra) == (TOO_MANY_SOCKETS, TOO_MANY_SOCKETS_REASON)
        # Another person is counted on their own.
        bobs = await _open(server, bobs_cookie)
        assert await _closed_by_server(bobs) is None
        # Closing a tab frees its place.
        await sockets[0].close()
        await asyncio.sleep(0.3)
        again = await _open(server, cookie)
        assert await _closed_by_server(again) is None
        for socket in [*sockets[1:], bobs, again]:
            await socket.close()

    asyncio.run(run())


def test_the_count_lives_in_redis_and_drops_closed_sockets(
    server: str, alice: User, store: redis.Redis
) -> None:
    cookie = _cookie(alice)

    async def run() -> None:
        sockets = [await _open(server, cookie) for _ in range(2)]
        await asyncio.sleep(0.3)
        assert store.zcard(claims_key(alice.pk)) == 2
        assert 0 < store.ttl(claims_key(alice.pk)) <= CLAIM_SECONDS
        for socket in sockets:
            await socket.close()
        await asyncio.sleep(0.3)
        assert store.zcard(claims_key(alice.pk)) == 0

    asyncio.run(run())


def test_a_crashed_processs_sockets_stop_counting_once_their_claims_lapse(
    server: str, alice: User, store: redis.Redis
) -> None:
    """A process killed with three open sockets never released their claims: claims it
    last refreshed longer ago than CLAIM_SECONDS no longer count."""
    lapsed = int(time.time()) - 1
    store.zadd(claims_key(alice.pk), {f"crashed-{i}": lapsed for i in range(3)})

    cookie = _cookie(alice)

    async def run() -> None:
        socket = await _open(server, cookie)
        assert await _closed_by_server(socket) is None
        await socket.close()

    asyncio.run(run())
    # Without withscores zrange returns bare members; its return type covers both shapes.
    members = cast("list[bytes]", store.zrange(claims_key(alice.pk), 0, -1))
    assert not any(member.startswith(b"crashed-") for member in members)


def test_live_claims_of_another_process_do_count(
    server: str, alice: User, store: redis.Redis
) -> None:
    live = int(time.time()) + CLAIM_SECONDS
    store.zadd(claims_key(alice.pk), {f"elsewhere-{i}": live for i in range(3)})

    cookie = _cookie(alice)

    async def run() -> None:
        socket = await _open(server, cookie)
        assert await _closed_by_server(socket) == (TOO_MANY_SOCKETS, TOO_MANY_SOCKETS_REASON)

    asyncio.run(run())
