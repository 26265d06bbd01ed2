"""Side calls (titles) never delay an answer: they run on their own queue, on a pool of
their own of SIDE_CALL_CONCURRENCY threads, never on the threads that claim answers.

A real Celery worker (tests/conftest.py's ``celery_worker``: 8 claim threads, and its side
pool) against the emulator over HTTP. The emulator's existing per-effort think time makes
a title slow: a title asks at ``low`` effort, these answers at ``medium``, which thinks
for nothing. What is asserted are counts read from the database and from the emulator's
journal (which records a request when it arrives and its status once it is answered),
never a duration.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from accounts.models import User
from answers.replies import start_turn
from billing.models import Reservation
from conversations.models import Conversation, Message

pytestmark = pytest.mark.django_db(transaction=True)

CLAIM_THREADS = 8  # celery_worker's
WAIT_SECONDS = 60


def title_requests(emulator: Any) -> list[dict[str, Any]]:
    """Requests for a title: the only non-streamed ones these tests make."""
    return [entry for entry in emulator.journal_snapshot()
            if entry["method"] == "POST" and not (entry["body"] or {}).get("stream")]


def titles_in_flight(emulator: Any) -> int:
    """Title requests the emulator received and has not answered yet."""
    return sum(1 for entry in title_requests(emulator) if entry["status"] is None)


def wait_for(predicate: Any, what: str) -> None:
    deadline = time.monotonic() + WAIT_SECONDS
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def new_conversations(user: User, tag: str, count: int) -> list[Message]:
    """``count`` first questions, each in a new (untitled) conversation; their answers."""
    return [start_turn(user=user, organization_id=None, conversation_id=None,
                       content=f"Question {i} of the {tag} burst", reasoning_effort="medium",
                       ).assistant_message
            for i in range(count)]


def all_done(answers: list[Message]) -> bool:
    return Message.objects.filter(pk__in=[a.pk for a in answers],
                                  status=Message.Status.DONE).count() == len(answers)


def untitled(answers: list[Message]) -> int:
    return Conversation.objects.filter(pk__in=[a.conversation_id for a in answers],
                                       title_generated=False).count()


def every_title_billed(answers: list[Message]) -> None:
    """Each conversation got its title, reserved and billed as its own usage line."""
    wait_for(lambda: untitled(answers) == 0
             and not Reservation.objects.filter(settled_at=None).exists(), "every title")
    titles = Reservation.objects.filter(kind=Reservation.Kind.TITLE)
    assert titles.count() == len(answers)
    assert all(t.charged_usd and t.charged_usd > 0 for t in titles)


@pytest.fixture
def sender(alice: User, o3_mini: Any, settings: Any) -> User:
    settings.SENDS_PER_MINUTE = 10_000
    settings.MAX_LIVE_ANSWERS_PER_USER = 1_000
    return alice


def test_a_burst_of_new_conversations_gets_every_answer_while_the_titles_wait(
    sender: User, celery_worker: Any, emulator: Any, settings: Any
) -> None:
    concurrency = settings.SIDE_CALL_CONCURRENCY
    k = CLAIM_THREADS + 2  # more titles than the worker has claim threads
    # A title thinks for seconds (a reasoning model's low effort); an answer does not.
    emulator.config.think_ms = {**emulator.config.think_ms, "low": 6000, "medium": 0}

    first = new_conversations(sender, "first", k)
    wait_for(lambda: all_done(first), "the first burst's answers")
    # Their k titles are queued; the side pool has taken SIDE_CALL_CONCURRENCY of them.
    wait_for(lambda: titles_in_flight(emulator) == concurrency, "the first titles to be asked")

    # Had the titles run on the claim threads, these answers would wait for them.
    second = new_conversations(sender, "second", k)
    wait_for(lambda: all_done(second), "the second burst's answers")

    # Every answer of both bursts is done while the titles are still being made: at most
    # one round of SIDE_CALL_CONCURRENCY titles can have come back, and the emulator never
    # had more title requests at once than the side pool's threads.
    assert untitled(first) >= k - concurrency
    assert untitled(second) == k
    assert 1 <= titles_in_flight(emulator) <= concurrency
    assert len(title_requests(emulator)) <= 2 * concurrency
    answers = [entry for entry in emulator.journal_snapshot() if (entry["body"] or {}).get("stream")]
    assert len(answers) == 2 * k and all(entry["status"] == 200 for entry in answers)

    emulator.config.think_ms = {**emulator.config.think_ms, "low": 0}  # the rest come quickly
    every_title_billed(first + second)


def test_the_side_pool_makes_at_most_side_call_concurrency_titles_at_once(
    sender: User, celery_worker: Any, emulator: Any, settings: Any
) -> None:
    concurrency = settings.SIDE_CALL_CONCURRENCY
    k = 3 * concurrency
    emulator.config.think_ms = {**emulator.config.think_ms, "low": 400, "medium": 0}
    seen: list[int] = []
    stop = threading.Event()

    def watch() -> None:
        # A title request stays in flight for its think time: a sample every 10 ms sees
        # each set of concurrent requests many times over.
        while not stop.is_set():
            seen.append(titles_in_flight(emulator))
            time.sleep(0.01)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        answers = new_conversations(sender, "bounded", k)
        wait_for(lambda: all_done(answers), "the answers")
        every_title_billed(answers)
    finally:
        stop.set()
        watcher.join(timeout=5)

    assert len(title_requests(emulator)) == k
    assert max(seen) == concurrency  # the pool is used to its bound, never beyond it
