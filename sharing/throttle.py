"""Per-client rate limit on share-token lookups, so tokens cannot be guessed in bulk.

A fixed one-minute window counted in Django's cache (Redis in production). The client
is ``REMOTE_ADDR``: behind a reverse proxy, run uvicorn with ``--proxy-headers`` and
``--forwarded-allow-ips`` so that it is the real client and not the proxy.
"""

from __future__ import annotations

from time import time as _now

from django.conf import settings
from django.core.cache import cache
from django.http import HttpRequest

DEFAULT_LOOKUPS_PER_MINUTE = 60
WINDOW_SECONDS = 60


def lookups_per_minute() -> int:
    return int(getattr(settings, "SHARE_LOOKUPS_PER_MINUTE", DEFAULT_LOOKUPS_PER_MINUTE))


def client_ip(request: HttpRequest) -> str:
    return str(request.META.get("REMOTE_ADDR") or "unknown")


def allow_lookup(request: HttpRequest) -> tuple[bool, int]:
    """Count one lookup for the client; (allowed, seconds until the window resets)."""
    now = _now()
    window = int(now // WINDOW_SECONDS)
    retry_after = max(1, int((window + 1) * WINDOW_SECONDS - now))
    key = f"sharing:lookups:{client_ip(request)}:{window}"
    # Race: parallel requests from one client; add() + incr() are atomic in Redis, so
    # no lookup goes uncounted (a read-modify-write would let a burst through).
    cache.add(key, 0, timeout=WINDOW_SECONDS + 5)
    try:
        count = cache.incr(key)
    except ValueError:  # the key expired between add() and incr()
        cache.add(key, 1, timeout=WINDOW_SECONDS + 5)
        count = 1
    return count <= lookups_per_minute(), retry_after
