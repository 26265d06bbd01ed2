"""Abuse limits on sending: at most MAX_LIVE_ANSWERS_PER_USER answers pending or streaming
per person, and at most SENDS_PER_MINUTE sends a minute. A refused send reaches the tab
as an error frame, writes nothing, and leaves the socket usable."""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from types import SimpleNamespace
from typing import Any

import django_ratelimit.core
import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.db import connection, connections
from django.test.utils import CaptureQueriesContext

from accounts.models import User
from answers import replies
from billing.models import Reservation
from chatsite.errors import Refused
from conversations.models import Conversation, Message
from tests.conversations.wsclient import connect, receive_skipping_queue, send

pytestmark = [pytest.mark.django_db(transaction=True)]

QUESTION = {"type": "send", "conversation": None, "content": "Explain Euler's identity",
            "reasoning_effort": "low", "client_id": "tab-1"}


@pytest.fixture(autouse=True)
def rate_counts_of_this_test_only(settings: Any) -> None:
    """Counts live in the shared Redis and are keyed by user id, which a later run (a fresh
    test database) hands out again: a prefix per test keeps them apart."""
    settings.RATELIMIT_CACHE_PREFIX = f"rl:test-{uuid.uuid4().hex}:"


@pytest.fixture(autouse=True)
def one_rate_window(monkeypatch: pytest.MonkeyPatch) -> None:
    """The send limit counts in fixed one-minute windows (django-ratelimit): a test whose
    sends straddled a window's end would see the count start again. The limiter's clock
    stands still for the test, so all its sends fall in one window."""
    now = time.time()
    monkeypatch.setattr(django_ratelimit.core, "time", SimpleNamespace(time=lambda: now))


async def open_socket(user: User) -> WebsocketCommunicator:
    ws = await connect(user)
    connected, code = await ws.connect()
    assert connected, code
    return ws


async def ask(ws: WebsocketCommunicator, n: int) -> dict[str, Any]:
    """A question in a new conversation (no worker runs: the answer stays pending)."""
    await send(ws, {**QUESTION, "content": f"Question {n}", "client_id": f"q{n}"})
    created = await receive_skipping_queue(ws)
    assert created["type"] == "message.created", created
    return created


@sync_to_async
def saved_rows() -> tuple[int, int, int]:
    return Message.objects.count(), Conversation.objects.count(), Reservation.objects.count()


def live_answers(user: User) -> int:
    return Message.objects.filter(
        conversation__user=user, role=Message.Role.ASSISTANT, status__in=Message.LIVE_STATUSES
    ).count()


def start(user: User, n: int) -> replies.Turn:
    return replies.start_turn(user=user, organization_id=None, conversation_id=None,
                              content=f"Question {n}", reasoning_effort="low",
                              client_id=f"tab-{n}")


# --- Live answers ------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_a_send_over_the_live_answer_limit_is_refused_writes_nothing_and_the_socket_stays_usable(
    alice: User, settings: Any
) -> None:
    settings.MAX_LIVE_ANSWERS_PER_USER = 2
    ws = await open_socket(alice)
    first = await ask(ws, 1)
    await ask(ws, 2)
    before = await saved_rows()

    await send(ws, {**QUESTION, "content": "Question 3"})
    error = await receive_skipping_queue(ws)

    assert error["type"] == "error" and error["code"] == "too_many_live_answers", error
    assert error["message"] is None
    assert "2 answers being written" in error["detail"] and "stop one" in error["detail"]
    assert await saved_rows() == before
    await send(ws, {"type": "stop", "message": first["assistant_message"]})
    done = await receive_skipping_queue(ws)
    assert done["type"] == "done" and done["status"] == "cancelled", done
    await ask(ws, 4)  # a slot is free again
    await ws.disconnect()


@pytest.mark.asyncio
async def test_answers_in_every_conversation_count_but_another_persons_do_not(
    alice: User, bob: User, settings: Any
) -> None:
    settings.MAX_LIVE_ANSWERS_PER_USER = 2
    alice_ws, bob_ws = await open_socket(alice), await open_socket(bob)
    await ask(bob_ws, 1)
    await ask(bob_ws, 2)
    await ask(alice_ws, 1)
    await ask(alice_ws, 2)  # a second conversation: both of alice's answers are live

    await send(alice_ws, {**QUESTION, "content": "Question 3"})
    error = await receive_skipping_queue(alice_ws)

    assert error["code"] == "too_many_live_answers", error
    assert await sync_to_async(live_answers)(alice) == 2
    assert await sync_to_async(live_answers)(bob) == 2
    await alice_ws.disconnect()
    await bob_ws.disconnect()


def test_two_tabs_sending_at_once_with_one_slot_left_start_exactly_one_answer(
    alice: User, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings.MAX_LIVE_ANSWERS_PER_USER = 2
    start(alice, 0)  # one live answer: one slot left
    # Hold each turn after its count until the other one has counted too (or a second
    # has passed): without the lock both count one live answer and both start.
    both_counted = threading.Barrier(2, timeout=1)
    real_reserve = replies.reserve

    def reserve_after_both_counted(**kwargs: Any) -> Any:
        with contextlib.suppress(threading.BrokenBarrierError):
            both_counted.wait()
        return real_reserve(**kwargs)

    monkeypatch.setattr(replies, "reserve", reserve_after_both_counted)
    outcomes: list[str] = []

    def tab(n: int) -> None:
        try:
            start(alice, n)
            outcomes.append("started")
        except Refused as refusal:
            outcomes.append(refusal.code)
        finally:
            connections.close_all()

    tabs = [threading.Thread(target=tab, args=(n,)) for n in (1, 2)]
    for thread in tabs:
        thread.start()
    for thread in tabs:
        thread.join(timeout=30)

    assert sorted(outcomes) == ["started", "too_many_live_answers"]
    assert live_answers(alice) == 2
    assert Message.objects.filter(conversation__user=alice).count() == 4
    assert Reservation.objects.filter(message__conversation__user=alice).count() == 2


def test_finished_answers_free_their_slot(alice: User, settings: Any) -> None:
    settings.MAX_LIVE_ANSWERS_PER_USER = 1
    turn = start(alice, 1)
    with pytest.raises(Refused) as refused:
        start(alice, 2)
    assert refused.value.code == "too_many_live_answers"

    replies.request_stop(user=alice, message_id=turn.assistant_message.pk)

    assert start(alice, 3).assistant_message.status == Message.Status.PENDING


# --- Sends per minute ---------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_a_send_over_sends_per_minute_is_rate_limited_with_a_retry_hint_and_writes_nothing(
    alice: User, bob: User, settings: Any
) -> None:
    settings.MAX_LIVE_ANSWERS_PER_USER = settings.SENDS_PER_MINUTE + 5
    ws = await open_socket(alice)
    for n in range(settings.SENDS_PER_MINUTE):
        created = await ask(ws, n)
    before = await saved_rows()

    await send(ws, {**QUESTION, "content": "One too many"})
    error = await receive_skipping_queue(ws)

    assert error["type"] == "error" and error["code"] == "rate_limited", error
    assert 1 <= error["retry_after"] <= 60
    assert f"{settings.SENDS_PER_MINUTE} messages in the last minute" in error["detail"]
    assert f"Wait {error['retry_after']} second" in error["detail"]
    assert await saved_rows() == before
    # Still usable: commands other than send run, and the count is per person.
    await send(ws, {"type": "stop", "message": created["assistant_message"]})
    done = await receive_skipping_queue(ws)
    assert done["type"] == "done" and done["status"] == "cancelled", done
    bob_ws = await open_socket(bob)
    await ask(bob_ws, 1)
    await ws.disconnect()
    await bob_ws.disconnect()


def test_a_rate_limited_send_is_refused_before_touching_the_database(
    alice: User, settings: Any
) -> None:
    settings.SENDS_PER_MINUTE = 2
    start(alice, 1)
    start(alice, 2)

    with CaptureQueriesContext(connection) as queries, pytest.raises(Refused) as refused:
        start(alice, 3)

    assert refused.value.code == "rate_limited"
    assert refused.value.retry_after >= 1  # type: ignore[attr-defined]
    assert len(queries) == 0
    assert Message.objects.filter(conversation__user=alice).count() == 4
