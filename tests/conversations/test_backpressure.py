"""Visible back-pressure: `queued` frames while no worker has an answer, and `busy`
beyond MAX_QUEUED_TURNS. No worker runs here, so every answer stays pending until the
test claims it as a worker would."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator

from accounts.models import User
from answers import lifecycle
from billing.models import Reservation
from conversations.models import Message
from realtime import consumers
from realtime.backpressure import queue_position
from tests.conversations.wsclient import connect, receive, send

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.asyncio]

POLL_SECONDS = 0.25
# Long enough for a poll to come round and its frame to land (0.6 s to spare, as beside the
# product's one-second poll), and to show that no second frame follows it.
WINDOW = POLL_SECONDS + 0.6


@pytest.fixture
def quick_queue_poll(monkeypatch: pytest.MonkeyPatch) -> Callable[[], None]:
    """The consumer counts a waiting answer's place once a second; calling this makes it
    four times a second from each watcher's next count on, so the waits for reports (or for
    none) take under a second. A test calls it once its turns are sent: before, a report
    could come between a send and its message.created."""
    return lambda: monkeypatch.setattr(consumers, "QUEUE_POLL_SECONDS", POLL_SECONDS)


async def open_socket(user: Any) -> WebsocketCommunicator:
    ws = await connect(user)
    connected, code = await ws.connect()
    assert connected, code
    return ws


async def turn(ws: WebsocketCommunicator, content: str) -> dict[str, Any]:
    await send(ws, {"type": "send", "conversation": None, "content": content,
                    "reasoning_effort": "low", "client_id": content[:60]})
    created = await receive(ws)
    assert created["type"] == "message.created", created
    return created


async def frames_within(ws: WebsocketCommunicator, seconds: float) -> list[dict[str, Any]]:
    """Every frame that arrives in the next ``seconds`` (the poll runs once a second, or
    every ``POLL_SECONDS`` after ``quick_queue_poll``)."""
    frames = []
    # receive_nothing, unlike a timed-out receive, leaves the app running.
    while not await ws.receive_nothing(timeout=seconds, interval=0.02):
        frames.append(await receive(ws))
    return frames


@sync_to_async
def counts() -> tuple[int, int]:
    return Message.objects.count(), Reservation.objects.count()


async def test_a_turn_behind_others_is_told_its_place_and_follows_the_queue(
    alice: User, bob: User, quick_queue_poll: Callable[[], None]
) -> None:
    hers = await open_socket(alice)
    first = await turn(hers, "first in line")
    assert first["ahead"] == 0
    second = await turn(hers, "second in line")
    # Queued behind her first answer: message.created says so at once.
    assert second["ahead"] == 1

    his = await open_socket(bob)
    third = await turn(his, "third in line")
    assert third["ahead"] == 2
    quick_queue_poll()

    # Still waiting a second later, the first answer learns it is next; nothing repeats
    # an unchanged place.
    assert await receive(hers, timeout=1.6) == {
        "type": "queued", "message": first["assistant_message"], "ahead": 0}
    assert await frames_within(hers, WINDOW) == []
    assert await his.receive_nothing(timeout=0.1)

    # A worker claims the first answer: the ones behind it move up, once each.
    assert await sync_to_async(lifecycle.claim)(first["assistant_message"]) is not None
    assert await frames_within(hers, WINDOW) == [
        {"type": "queued", "message": second["assistant_message"], "ahead": 0}]
    assert await frames_within(his, 0.5) == [
        {"type": "queued", "message": third["assistant_message"], "ahead": 1}]

    # Stop takes the second out of the queue: bob is next.
    await send(hers, {"type": "stop", "message": second["assistant_message"]})
    assert await frames_within(his, WINDOW) == [
        {"type": "queued", "message": third["assistant_message"], "ahead": 0}]
    assert await sync_to_async(queue_position)(message_id=third["assistant_message"]) == 0
    assert await sync_to_async(queue_position)(message_id=first["assistant_message"]) is None
    await hers.disconnect()
    await his.disconnect()


async def test_a_worker_frame_ends_the_queued_reports(alice: User) -> None:
    ws = await open_socket(alice)
    first = await turn(ws, "one")
    second = await turn(ws, "two")
    assert second["ahead"] == 1

    @sync_to_async
    def claim_both() -> None:
        for created in (first, second):
            assert lifecycle.claim(created["assistant_message"]) is not None

    await claim_both()
    # Claimed: no more queue reports for either, though neither has sent a frame yet.
    assert await frames_within(ws, 2.2) == []
    await ws.disconnect()


async def test_a_reloaded_tab_that_resumes_a_waiting_answer_learns_its_place(
    alice: User, quick_queue_poll: Callable[[], None]
) -> None:
    ws = await open_socket(alice)
    await turn(ws, "one")
    second = await turn(ws, "two")
    await ws.disconnect()
    quick_queue_poll()

    reloaded = await open_socket(alice)
    await send(reloaded, {"type": "resume", "message": second["assistant_message"], "after_seq": 0})
    frames = await frames_within(reloaded, WINDOW)
    assert frames == [{"type": "queued", "message": second["assistant_message"], "ahead": 1}]
    await reloaded.disconnect()


@pytest.mark.parametrize("intruder", ["bob", "charlie"])
async def test_nobody_else_learns_the_place_of_alices_answer(
    request: pytest.FixtureRequest, alice: User, intruder: str
) -> None:
    other: User = await sync_to_async(request.getfixturevalue)(intruder)
    mine = await open_socket(alice)
    await turn(mine, "one")
    second = await turn(mine, "two")
    theirs = await open_socket(other)
    await send(theirs, {"type": "resume", "message": second["assistant_message"], "after_seq": 0})
    error = await receive(theirs)
    assert error["type"] == "error" and error["code"] == "forbidden", error
    assert await frames_within(theirs, 1.4) == []
    await mine.disconnect()
    await theirs.disconnect()


async def test_beyond_max_queued_turns_a_send_is_refused_busy_and_nothing_is_saved(
    alice: User, bob: User, settings: Any
) -> None:
    settings.MAX_QUEUED_TURNS = 2
    hers = await open_socket(alice)
    await turn(hers, "one")
    created = await turn(hers, "two")
    before = await counts()

    his = await open_socket(bob)
    for ws in (hers, his):
        await send(ws, {"type": "send", "conversation": None, "content": "three",
                        "reasoning_effort": "low", "client_id": "c3"})
        error = await receive(ws)
        assert error["type"] == "error" and error["code"] == "busy", error
        assert error["retry_after"] == 30 and "30 seconds" in error["detail"]
        assert "Nothing was saved" in error["detail"]
    # Regenerate is a send too.
    await send(hers, {"type": "regenerate", "message": created["assistant_message"]})
    assert (await receive(hers))["code"] == "busy"
    assert await counts() == before

    # Once a worker claims one, there is room again.
    claimed = await sync_to_async(lifecycle.claim)(created["assistant_message"])
    assert claimed is not None
    accepted = await turn(his, "three")
    assert accepted["assistant_message"]
    await hers.disconnect()
    await his.disconnect()
