"""Rate limits on django-ratelimit, counted in the default cache (Redis in the full
topology), so every web process shares one count.

Views call ``over_limit`` and answer with their own page or JSON. The default key is the
client address (``REMOTE_ADDR``, which uvicorn sets from X-Forwarded-For only for the
proxies in TRUSTED_PROXIES); ``over_limit_for`` counts any other key, such as a user id,
from code that has no HTTP request (the websocket consumer).
"""

from __future__ import annotations

from collections.abc import Callable

from django.http import HttpRequest
from django_ratelimit import ALL
from django_ratelimit.core import get_usage

Key = str | Callable[[str, HttpRequest], str]


def over_limit(request: HttpRequest, *, group: str, rate: str, key: Key = "ip") -> tuple[bool, int]:
    """Count this request in ``group`` and say whether it is over ``rate`` (e.g. "20/h").

    Returns (limited, seconds until the window resets).
    """
    usage = get_usage(request, group=group, key=key, rate=rate, method=ALL, increment=True)
    if usage is None:  # RATELIMIT_ENABLE = False
        return False, 0
    return bool(usage["should_limit"]), max(1, int(usage["time_left"]))


def over_limit_for(value: str, *, group: str, rate: str) -> tuple[bool, int]:
    """Count one event for ``value`` (a user id, an address) outside any HTTP request."""
    request = HttpRequest()
    request.method = "POST"
    return over_limit(request, group=group, rate=rate, key=lambda _group, _request: value)

