"""Cross-site websocket hijacking, over a real socket to the real server: a page on another
origin (another scheme, another port of the same host, another host that ALLOWED_HOSTS
lists) cannot open a signed-in person's chat socket. Channels' host-only check let all of
them through; only the page's own origin (or, when set, CSRF_TRUSTED_ORIGINS) gets in."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
import websockets
from django.test import Client
from websockets.exceptions import InvalidStatus

from accounts.models import User
from tests.conftest import serve_asgi

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def server() -> Iterator[str]:
    with serve_asgi() as url:
        yield url


def _cookie(user: User) -> str:
    client = Client()
    client.force_login(user)
    return f"sessionid={client.cookies['sessionid'].value}"


def handshake(base: str, cookie: str, origin: str | None) -> int:
    """101 when the socket opened (and then is closed by us), else the HTTP status."""
    headers = {"Cookie": cookie, **({"Origin": origin} if origin else {})}

    async def run() -> int:
        try:
            async with websockets.connect(base.replace("http", "ws", 1) + "/ws/chat/",
                                          origin=None, additional_headers=headers,
                                          open_timeout=10):
                return 101
        except InvalidStatus as refused:
            return refused.response.status_code

    return asyncio.run(run())


def test_the_pages_own_origin_opens_the_socket(server: str, alice: User) -> None:
    assert handshake(server, _cookie(alice), server) == 101


@pytest.mark.parametrize("change", ["scheme", "port", "host", "foreign host", "none", "junk"])
def test_any_other_origin_is_refused_before_the_socket_opens(
    server: str, alice: User, change: str
) -> None:
    port = int(server.rsplit(":", 1)[1])
    origin = {
        "scheme": f"https://127.0.0.1:{port}",
        "port": f"http://127.0.0.1:{port + 1}",
        "host": f"http://localhost:{port}",  # in ALLOWED_HOSTS, but not this page
        "foreign host": f"http://evil.example:{port}",
        "none": None,
        "junk": "null",
    }[change]
    assert handshake(server, _cookie(alice), origin) == 403


def test_trusted_origins_replace_the_requests_own(server: str, alice: User, settings: Any) -> None:
    """Behind a TLS proxy the page is https on 443 while the app hears plain http."""
    settings.CSRF_TRUSTED_ORIGINS = ["https://127.0.0.1:8443"]
    cookie = _cookie(alice)
    assert handshake(server, cookie, "https://127.0.0.1:8443") == 101
    assert handshake(server, cookie, "http://127.0.0.1:8443") == 403
    assert handshake(server, cookie, "https://127.0.0.1") == 403
    assert handshake(server, cookie, server) == 403
