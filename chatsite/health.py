"""``/healthz``: what the container healthcheck (``chatsite/healthcheck.py``) and any
monitoring call. It reports the database, the channel layer and the broker, each
bounded in time, and answers 503 when any of them fails."""

from __future__ import annotations

import asyncio

from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from django.conf import settings
from django.db import connection
from django.http import HttpRequest, JsonResponse

from chatsite.celery import app

# /healthz publishes to this group, which no consumer joins.
HEALTHZ_GROUP = "healthz"
HEALTHZ_TIMEOUT_SECONDS = 5


def _check_database() -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    connection.close()
    return "ok"


def _check_broker() -> str:
    """Ping the broker over a connection from Celery's pool.

    Monitoring calls /healthz every few seconds: a connection of its own per call
    (connection_for_write) opened and closed a Redis client every time.
    """
    with app.pool.acquire(block=True, timeout=2) as conn:
        conn.ensure_connection(max_retries=1, timeout=2)
        client = getattr(conn.default_channel, "client", None)
        if client is not None:  # Redis: prove the pooled connection still answers
            client.ping()
    return "ok"


async def _check_channel_layer() -> str:
    """Publish to a group no consumer joins: it reaches Redis through the layer's
    own connection and subscribes to nothing. (A round trip through a new channel
    left one pub/sub subscription behind per call: the layer unsubscribes only when
    a receive is cancelled.)"""
    layer = get_channel_layer()
    if layer is None:
        return "missing"
    await layer.group_send(HEALTHZ_GROUP, {"type": "healthz"})
    return "ok"


async def healthz(request: HttpRequest) -> JsonResponse:
    checks: dict[str, str] = {}
    for name, check in (
        ("database", sync_to_async(_check_database)),
        ("channel_layer", _check_channel_layer),
        ("broker", sync_to_async(_check_broker)),
    ):
        try:
            # Bounded: a hung Redis or database must not hang the monitor's request.
            checks[name] = await asyncio.wait_for(check(), timeout=HEALTHZ_TIMEOUT_SECONDS)
        except Exception as exc:  # report, never raise: this is what monitoring reads
            checks[name] = f"error: {type(exc).__name__}"
    healthy = all(value == "ok" for value in checks.values())
    return JsonResponse(
        {"status": "ok" if healthy else "degraded", **checks,
         "mode": "embedded" if settings.EMBEDDED else "full"},
        status=200 if healthy else 503,
    )
