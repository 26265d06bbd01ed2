"""A worker's graceful stop: no new claims, live answers finish, a bounded wait.

Answers run on a real Celery worker (threads pool, Redis broker) against the emulator
over HTTP; the drain is begun as the worker's SIGTERM handler begins it. The real
SIGTERM on a worker process is in tests/chaos/.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
from celery.exceptions import Reject

from accounts.models import User
from answers import drain, tasks
from answers.replies import start_turn
from billing.models import Reservation, UsagePeriod
from conversations.models import Message
from llm.models import ModelProfile

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def not_draining() -> Iterator[None]:
    yield
    drain.stop_draining()


def begin(user: User, content: str) -> Message:
    return start_turn(user=user, organization_id=None, conversation_id=None,
                      content=content, reasoning_effort="low").assistant_message


def wait_for(predicate: Any, timeout: float = 30) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError("condition not reached")


def answer_calls(emulator: Any) -> list[dict[str, Any]]:
    """Streamed chat requests: answers (a finished answer's title request is not)."""
    return [e for e in emulator.requests_to("/chat/completions") if (e["body"] or {}).get("stream")]


def reserved_total() -> Decimal:
    return sum((row.reserved_usd for row in UsagePeriod.objects.all()), Decimal(0))


def test_a_draining_worker_hands_a_received_task_back_without_claiming_it(
    alice: User, o3_mini: ModelProfile, emulator: Any
) -> None:
    message = begin(alice, "Queued just as the worker was told to stop")
    exits: list[int] = []
    drain.begin_drain(seconds=3600, exit_process=exits.append)

    with pytest.raises(Reject) as rejected:
        tasks.generate_reply.run(message.pk)

    assert rejected.value.requeue is True
    message.refresh_from_db()
    assert message.status == Message.Status.PENDING
    assert emulator.requests_to("/chat/completions") == []
    assert exits == []


def test_answers_streaming_when_the_drain_begins_finish_done(
    alice: User, o3_mini: ModelProfile, emulator: Any, celery_worker: Any
) -> None:
    emulator.push({"match": "drain", "reply_tokens": 60, "tokens_per_second": 60})
    message = begin(alice, "Please answer this although a drain begins")
    wait_for(lambda: Message.objects.filter(pk=message.pk, status="streaming").exists())
    exits: list[int] = []

    drain.begin_drain(seconds=60, exit_process=exits.append)
    wait_for(lambda: Message.objects.get(pk=message.pk).status != "streaming")

    message.refresh_from_db()
    assert message.status == Message.Status.DONE
    assert message.finish_reason == "stop" and not message.usage_estimated
    assert message.completion_tokens - message.reasoning_tokens == 60
    assert len(answer_calls(emulator)) == 1
    assert Reservation.objects.get(message=message).settled_at is not None
    assert exits == []


def test_answers_still_streaming_at_the_deadline_end_interrupted_with_their_text(
    alice: User, o3_mini: ModelProfile, emulator: Any, celery_worker: Any, settings: Any
) -> None:
    settings.STREAM_FLUSH_MS = 20
    emulator.push({"match": "long", "reply_tokens": 2000, "tokens_per_second": 40})
    message = begin(alice, "A long answer that outlasts the drain")
    wait_for(lambda: Message.objects.filter(pk=message.pk, status="streaming").exists())
    from realtime.replay import get_replay_store

    wait_for(lambda: any(f["type"] == "delta" for f in get_replay_store().read_sync(message.pk)))
    exits: list[int] = []

    watchdog = drain.begin_drain(seconds=0.2, exit_process=exits.append)
    watchdog.join(timeout=30)

    assert exits == [0]
    message.refresh_from_db()
    assert message.status == Message.Status.INTERRUPTED
    assert message.content, "the partial text is kept"
    assert len(message.content.split()) < 2000
    reservation = Reservation.objects.get(message=message)
    assert reservation.settled_at is not None and reservation.estimated
    assert reservation.charged_usd == message.cost_usd
    assert reserved_total() == 0
    assert len(answer_calls(emulator)) == 1
    # The worker thread found its answer already ended: it does not end it again.
    time.sleep(0.5)
    assert Message.objects.get(pk=message.pk).status == Message.Status.INTERRUPTED


def test_a_background_answer_live_at_the_deadline_goes_to_another_worker_not_interrupted(
    alice: User, emulator: Any, celery_worker: Any, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A deploy that outlasts the drain must not throw away a high-effort answer the
    provider is still generating in background mode: it is handed back, lease lapsed,
    for a successor to resume, and its response is not cancelled upstream."""
    from django.utils import timezone

    from answers import lifecycle, reaper
    from realtime.replay import get_replay_store
    from tests.llm.test_responses_api import make_responses_profile

    settings.OPENAI_API_KEY = ""
    settings.STREAM_FLUSH_MS = 20
    make_responses_profile()
    emulator.push({"match": "outlasts", "reply_tokens": 400, "tokens_per_second": 40})
    message = start_turn(user=alice, organization_id=None, conversation_id=None,
                         content="A long answer that outlasts the drain", reasoning_effort="high",
                         profile_name="o3-mini-responses").assistant_message
    wait_for(lambda: Message.objects.filter(pk=message.pk, status="streaming")
             .exclude(provider_response_id="").exists())
    wait_for(lambda: any(f["type"] == "delta" for f in get_replay_store().read_sync(message.pk)))
    handed: list[int] = []
    monkeypatch.setattr(reaper, "hand_back", handed.append)
    exits: list[int] = []

    watchdog = drain.begin_drain(seconds=0.2, exit_process=exits.append)
    watchdog.join(timeout=30)

    assert exits == [0]
    assert handed == [message.pk]
    row = Message.objects.get(pk=message.pk)
    assert row.lease_expires_at is not None
    assert row.status == Message.Status.STREAMING and row.lease_expires_at <= timezone.now()
    assert Reservation.objects.get(message=message).settled_at is None  # not billed yet
    assert [e["path"] for e in emulator.journal if e["path"].endswith("/cancel")] == []
    # A successor can take it over; the old claim is fenced out from then on.
    successor = lifecycle.reclaim(message.pk)
    assert successor is not None and successor.claims == row.claims + 1
