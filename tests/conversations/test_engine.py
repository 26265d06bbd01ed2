"""The worker's event loop (answers.engine): every answer of a process streams on
one loop, with no thread per answer, and frames of many answers share Redis round trips.
Counts, never timings."""

from __future__ import annotations

import threading
import time
from decimal import Decimal
from typing import Any

import pytest

from answers.engine import engine
from answers.replies import start_turn
from billing.models import Reservation
from chatsite.dbpool import ENGINE_DB_THREADS
from conversations.models import Message
from realtime.replay import get_replay_store

pytestmark = [pytest.mark.django_db(transaction=True)]

ANSWERS = 50
# Threads the loop may add however many answers it streams: its executor's database
# threads, asyncio's default executor (tools, control calls), the loop and the monitor.
FIXED_THREADS = ENGINE_DB_THREADS + 8


@pytest.fixture
def many_answers(settings: Any) -> None:
    settings.MAX_LIVE_ANSWERS_PER_USER = ANSWERS * 2
    settings.SENDS_PER_MINUTE = ANSWERS * 2
    settings.MAX_QUEUED_TURNS = ANSWERS * 2


def stream_many(user: Any, emulator: Any) -> tuple[list[int], int, int]:
    """Start ANSWERS answers that each stream for about two seconds, hand them to the
    loop as a worker's tasks do, and sample threads and live answers until they end.
    Returns the ids, the most threads added and the most answers live at once."""
    emulator.config.tokens_per_second = 100
    ids = [start_turn(user=user, organization_id=None, conversation_id=None,
                      content=f"Question {n}", reasoning_effort="low").assistant_message.pk
           for n in range(ANSWERS)]
    engine.loop  # noqa: B018 - the loop's own thread is not the answers'
    before = threading.active_count()
    # The loop starts none of them until all are handed over, so they overlap however
    # long the claims take on a slow machine (answers handed over one by one could
    # otherwise end before the last is claimed).
    handed_over = threading.Event()
    engine.loop.call_soon_threadsafe(handed_over.wait, 60)
    try:
        for message_id in ids:
            assert engine.hand_over(message_id, draining=lambda: False)
    finally:
        handed_over.set()
    most_threads = most_live = 0
    deadline = time.monotonic() + 120
    while Message.objects.filter(pk__in=ids, status__in=Message.LIVE_STATUSES).exists():
        assert time.monotonic() < deadline, "the answers did not end"
        most_threads = max(most_threads, threading.active_count() - before)
        most_live = max(most_live, engine.live_answers)
        time.sleep(0.05)
    assert engine.wait_idle(timeout=30)
    return ids, most_threads, most_live


def test_fifty_answers_stream_at_once_on_one_loop_without_a_thread_each(
    alice: Any, o3_mini: Any, emulator: Any, many_answers: None
) -> None:
    ids, most_threads, most_live = stream_many(alice, emulator)

    assert most_live >= ANSWERS * 0.8, most_live  # they overlapped
    assert most_threads <= FIXED_THREADS, (most_threads, "a thread per answer would add 50")
    store = get_replay_store()
    for message in Message.objects.filter(pk__in=ids):
        assert message.status == Message.Status.DONE, (message.pk, message.error_detail)
        deltas = [f for f in store.read_sync(message.pk) if f["type"] == "delta"]
        # Every token once, in order: the frames a tab saw add up to the saved answer.
        assert [d["seq"] for d in deltas] == list(range(1, len(deltas) + 1))
        assert "".join(d["text"] for d in deltas) == message.content != ""
        reservation = Reservation.objects.get(message=message)
        assert reservation.charged_usd == message.cost_usd > Decimal(0)
    assert not Reservation.objects.filter(settled_at=None).exists()
    print(f"\nengine: {most_live} answers live at once, {most_threads} threads added")


def test_frames_of_answers_streaming_together_share_redis_round_trips(
    alice: Any, o3_mini: Any, emulator: Any, many_answers: None
) -> None:
    publisher = engine.publisher
    trips, frames = publisher.round_trips, publisher.frames_sent

    stream_many(alice, emulator)

    trips, frames = publisher.round_trips - trips, publisher.frames_sent - frames
    assert frames >= ANSWERS * 3  # thinking, deltas and more per answer
    # A round trip per frame is what one Redis call per publish would cost.
    assert frames >= 2 * trips, (frames, trips)
    print(f"\nengine: {frames} frames in {trips} Redis round trips")


@pytest.mark.django_db
def test_closing_the_engine_closes_its_provider_clients_and_stops_the_loop(emulator: Any) -> None:
    """At exit (atexit) a worker closes the loop's HTTP clients instead of leaving each
    to be reported as an unclosed session; the next use starts a fresh loop."""
    import asyncio

    from llm.client import build_async_client
    from llm.models import ModelProfile

    profile = ModelProfile.objects.get(name="o3-mini")
    loop = engine.loop

    async def client() -> Any:
        return build_async_client(profile)

    opened = asyncio.run_coroutine_threadsafe(client(), loop).result(5)
    assert not opened.is_closed()
    engine.close()
    assert opened.is_closed()
    assert loop.is_closed()
    assert engine.loop is not loop and engine.loop.is_running()


def _handed_over(user: Any, emulator: Any) -> Message:
    message_id = start_turn(user=user, organization_id=None, conversation_id=None,
                            content="Which prompt? [prepared]", reasoning_effort="low").assistant_message.pk
    assert engine.hand_over(message_id, draining=lambda: False)
    assert engine.wait_idle(timeout=30)
    return Message.objects.get(pk=message_id)


def _watch_prepare(monkeypatch: pytest.MonkeyPatch, *, fail_first: bool) -> list[str]:
    """The threads that read an answer's prompt, in order; the first read fails if asked."""
    from django.db import OperationalError

    from answers import generation

    threads: list[str] = []
    real_prepare = generation._prepare

    def watched(message: Message) -> Any:
        threads.append(threading.current_thread().name)
        if fail_first and len(threads) == 1:
            raise OperationalError("server closed the connection unexpectedly")
        return real_prepare(message)

    monkeypatch.setattr(generation, "_prepare", watched)
    return threads


def test_the_claiming_thread_builds_the_prompt_and_the_loop_does_not_read_it_again(
    alice: Any, o3_mini: Any, emulator: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    prepared_in = _watch_prepare(monkeypatch, fail_first=False)
    answer = _handed_over(alice, emulator)
    assert answer.status == Message.Status.DONE
    assert len(prepared_in) == 1 and not prepared_in[0].startswith("answer-db")
    body = emulator.requests_to("/chat/completions")[-1]["body"]
    assert body["messages"][-1] == {"role": "user", "content": "Which prompt? [prepared]"}


def test_a_prompt_read_that_fails_after_the_claim_is_read_again_on_the_loop(
    alice: Any, o3_mini: Any, emulator: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = _watch_prepare(monkeypatch, fail_first=True)
    answer = _handed_over(alice, emulator)
    assert answer.status == Message.Status.DONE and answer.cost_usd > 0
    assert len(calls) == 2 and calls[1].startswith("answer-db")
