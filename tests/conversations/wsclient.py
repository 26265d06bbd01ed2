"""Helpers to drive the real ASGI app's websocket as a signed-in browser would."""

from __future__ import annotations

import json
from typing import Any

from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.test import Client

from chatsite.asgi import application

ORIGIN = b"http://127.0.0.1:8000"


def _session_cookie(user: Any) -> str:
    client = Client()
    client.force_login(user)
    return client.cookies["sessionid"].value


async def connect(user: Any | None, *, origin: bytes = ORIGIN) -> WebsocketCommunicator:
    headers = [(b"origin", origin), (b"host", b"127.0.0.1:8000")]
    if user is not None:
        cookie = await sync_to_async(_session_cookie)(user)
        headers.append((b"cookie", f"sessionid={cookie}".encode()))
    communicator = WebsocketCommunicator(application, "/ws/chat/", headers=headers)
    return communicator


async def send(communicator: WebsocketCommunicator, frame: Any) -> None:
    await communicator.send_to(text_data=json.dumps(frame))


# The timeouts are handed to WebsocketCommunicator, whose API takes them as arguments.
async def receive(communicator: WebsocketCommunicator, timeout: float = 10) -> dict[str, Any]:  # noqa: ASYNC109
    return json.loads(await communicator.receive_from(timeout=timeout))


async def receive_skipping_queue(
    communicator: WebsocketCommunicator, timeout: float = 10  # noqa: ASYNC109
) -> dict[str, Any]:
    """The next frame other than ``queued``: a tab's queue watcher reports a waiting answer's
    place whenever it changes, which on a slow machine can fall between any two frames."""
    while True:
        frame = await receive(communicator, timeout)
        if frame["type"] != "queued":
            return frame


async def receive_until(
    communicator: WebsocketCommunicator, *types: str, timeout: float = 20  # noqa: ASYNC109
) -> list[dict[str, Any]]:
    """Every frame up to and including the first whose type is in `types`."""
    frames = []
    while True:
        frame = await receive(communicator, timeout)
        frames.append(frame)
        if frame["type"] in types:
            return frames


async def open_socket(user: Any) -> WebsocketCommunicator:
    """A connected socket for ``user``, or the test fails with the close code."""
    ws = await connect(user)
    connected, code = await ws.connect()
    assert connected, code
    return ws


@sync_to_async
def finish(message_id: int, text: str) -> None:
    """What a worker would leave behind (for tests that run none)."""
    from conversations.models import Message

    Message.objects.filter(pk=message_id).update(status=Message.Status.DONE, content=text)


@sync_to_async
def counts() -> tuple[int, int]:
    """Messages and reservations: a refused command changes neither."""
    from billing.models import Reservation
    from conversations.models import Message

    return Message.objects.count(), Reservation.objects.count()
