"""The chat websocket accepts a handshake only from the site's own origin.

Channels' ``AllowedHostsOriginValidator`` compares the Origin's host name with
ALLOWED_HOSTS and ignores its scheme and port, so a page on ``http://chat.example.com:8080``
(another service on the same host) or on plain ``http://`` could open a signed-in
person's socket. ``SameOriginValidator`` keeps that check as its base and adds the rest:
the Origin's scheme, host and port must equal one of CSRF_TRUSTED_ORIGINS or, when that
setting is empty, the request's own (its scheme as uvicorn saw it, which believes
X-Forwarded-Proto only from TRUSTED_PROXIES, and its Host header). Anything else is
closed before the socket is accepted, as Django's CSRF check refuses such a form post.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from channels.security.websocket import AllowedHostsOriginValidator, WebsocketDenier
from django.conf import settings
from django.utils.http import is_same_domain

Origin = tuple[str, str, int]
DEFAULT_PORTS = {"http": 80, "https": 443}
WEBSOCKET_SCHEMES = {"ws": "http", "wss": "https"}


def parse_origin(value: str) -> Origin | None:
    """``(scheme, host, port)`` of an origin, with the scheme's default port filled in;
    None for anything that is not an http(s) origin."""
    try:
        parts = urlsplit(value.strip())
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS or not parts.hostname or parts.path or parts.query:
        return None
    return scheme, parts.hostname.lower(), port if port is not None else DEFAULT_PORTS[scheme]


def _header(scope: dict[str, Any], name: bytes) -> str | None:
    values = [value for key, value in scope.get("headers", []) if key == name]
    if len(values) != 1:
        return None  # absent, or sent twice: ambiguous, so refused
    try:
        return values[0].decode("latin1")
    except UnicodeDecodeError:  # pragma: no cover - latin1 decodes every byte
        return None


def own_origin(scope: dict[str, Any]) -> Origin | None:
    """The origin the page that opened this socket must have had: the socket's scheme
    turned into its page's, and the Host header."""
    host = _header(scope, b"host")
    scheme = WEBSOCKET_SCHEMES.get(scope.get("scheme", "ws"))
    if not host or scheme is None:
        return None
    return parse_origin(f"{scheme}://{host}")


def _trusted(origin: Origin, pattern: str) -> bool:
    """``origin`` matches a CSRF_TRUSTED_ORIGINS entry, whose host may start with ``*.``
    (any subdomain), as Django's CSRF check reads it."""
    wildcard = "://*." in pattern
    allowed = parse_origin(pattern.replace("://*.", "://", 1))
    if allowed is None:
        return False
    scheme, host, port = allowed
    if (origin[0], origin[2]) != (scheme, port):
        return False
    return is_same_domain(origin[1], f".{host}") if wildcard else origin[1] == host


def origin_allowed(scope: dict[str, Any]) -> bool:
    raw = _header(scope, b"origin")
    origin = parse_origin(raw) if raw else None
    if origin is None:
        return False
    if settings.CSRF_TRUSTED_ORIGINS:
        return any(_trusted(origin, pattern) for pattern in settings.CSRF_TRUSTED_ORIGINS)
    return origin == own_origin(scope)


class SameOriginValidator:
    """Passes a websocket on to ``application`` only from an allowed origin (see the
    module docstring); refuses it before ``accept`` otherwise (HTTP 403)."""

    def __init__(self, application: Any) -> None:
        self.application = application

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "websocket" and not origin_allowed(scope):
            await WebsocketDenier()(scope, receive, send)
            return
        await self.application(scope, receive, send)


def websocket_origin_guard(application: Any) -> Any:
    """Channels' host check (ALLOWED_HOSTS) first, then scheme, host and port."""
    return AllowedHostsOriginValidator(SameOriginValidator(application))
