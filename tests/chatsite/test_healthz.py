"""/healthz through the real ASGI app, against the real Redis: monitoring that calls it
every few seconds must not grow Redis's client list or its pub/sub subscriptions."""

from __future__ import annotations

import asyncio
import json
import os
from typing import Any
from urllib.parse import urlsplit

import pytest
import redis
from django.conf import settings

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.asyncio]

CALLS = 1_000


async def get(application: Any, path: str) -> tuple[int, bytes]:
    """One HTTP request the way uvicorn delivers it: the body, then a disconnect once
    the response is complete."""
    inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    inbox.put_nowait({"type": "http.request", "body": b"", "more_body": False})
    status, body = 0, b""

    async def send(message: dict[str, Any]) -> None:
        nonlocal status, body
        if message["type"] == "http.response.start":
            status = message["status"]
        elif message["type"] == "http.response.body":
            body += message.get("body", b"")
            if not message.get("more_body"):
                inbox.put_nowait({"type": "http.disconnect"})

    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET",
        "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"",
        "root_path": "", "headers": [(b"host", b"localhost")],
        "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 8000),
    }
    await application(scope, inbox.get, send)
    return status, body


def sibling_databases(database: int) -> set[int]:
    """The Redis databases of this run's other pytest-xdist workers (chatsite.settings_test
    gives worker gwN the database of gw0 + N), whose clients come and go meanwhile."""
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    if not worker:
        return set()
    first = database - int(worker.removeprefix("gw"))
    return {first + n for n in range(int(os.environ["PYTEST_XDIST_WORKER_COUNT"]))} - {database}


def redis_usage(client: redis.Redis, database: int) -> tuple[int, int, int]:
    """(clients of the whole server but this run's other workers, clients on our
    database, their pub/sub subscriptions)."""
    clients = client.client_list()
    siblings = sibling_databases(database)
    ours = [c for c in clients if int(c.get("db", -1)) == database]
    subscriptions = sum(int(c.get("sub", 0)) + int(c.get("psub", 0)) for c in ours)
    server = [c for c in clients if int(c.get("db", -1)) not in siblings]
    return len(server), len(ours), subscriptions


@pytest.mark.soak
async def test_a_thousand_health_checks_leave_redis_clients_and_subscriptions_flat() -> None:
    if not settings.REDIS_URL:
        pytest.skip("needs REDIS_URL: the embedded mode has no Redis to leak")
    from chatsite.asgi import application

    database = int(urlsplit(settings.REDIS_URL).path.strip("/") or 0)
    client = redis.Redis.from_url(settings.REDIS_URL)
    try:
        for _ in range(5):  # first calls open the pooled connections that then stay
            status, body = await get(application, "/healthz")
        assert status == 200, body
        assert json.loads(body) == {"status": "ok", "database": "ok", "channel_layer": "ok",
                                    "broker": "ok", "mode": "full"}
        server_before, ours_before, subscriptions_before = redis_usage(client, database)

        for _ in range(CALLS):
            status, body = await get(application, "/healthz")
            assert status == 200, body

        server_after, ours_after, subscriptions_after = redis_usage(client, database)
    finally:
        client.close()
    assert ours_after <= ours_before + 2, (ours_before, ours_after)
    assert subscriptions_after <= subscriptions_before, (subscriptions_before, subscriptions_after)
    # The whole server, with slack for other test runs sharing this Redis meanwhile.
    assert server_after <= server_before + 10, (server_before, server_after)
