"""Worker processes killed (SIGKILL) or stopped (SIGTERM) while answers stream.

Each round starts a real Celery worker process, sends answers through ``start_turn``
(queued on this run's private queue in Redis), waits until text has been shown, then
signals the worker. The reaper runs here, as beat would run it. The chaos workers hand
an unacknowledged task out again after 2 s, so every killed answer's task is delivered
a second time: the emulator's journal shows whether the provider was called twice.
"""

from __future__ import annotations

import signal
import time
from collections import Counter
from decimal import Decimal
from typing import Any

import pytest
import redis

from accounts.models import User
from answers import reaper
from answers.replies import start_turn
from billing.models import Reservation, UsagePeriod
from conversations.models import Message
from llm.models import ModelProfile
from realtime.replay import get_replay_store
from tests.chaos.conftest import Processes, fast_and_full, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

PER_ROUND = 2
Status = Message.Status


def begin(user: User, tag: str) -> Message:
    return start_turn(user=user, organization_id=None, conversation_id=None,
                      content=f"Chaos question {tag}", reasoning_effort="low").assistant_message


def deltas(message_id: int) -> list[dict[str, Any]]:
    frames = get_replay_store().read_sync(message_id)
    return sorted((f for f in frames if f["type"] == "delta"), key=lambda f: f["seq"])


def upstream_calls_by_tag(emulator: Any) -> Counter[str]:
    calls: Counter[str] = Counter()
    for entry in emulator.requests_to("/chat/completions"):
        if not (entry["body"] or {}).get("stream"):
            continue  # a finished answer's title request
        text = " ".join(str(m.get("content", "")) for m in (entry["body"] or {}).get("messages", []))
        for word in text.split():
            if word.startswith(("kill-", "term-")):
                calls[word] += 1
    return calls


def budgets() -> tuple[Decimal, Decimal, Decimal]:
    """The org's spent and reserved, and the sum of every settled charge (answers and
    their titles): spent must equal the charges, to the micro-dollar."""
    rows = list(UsagePeriod.objects.filter(user__isnull=True))
    charged = sum((r.charged_usd or Decimal(0) for r in Reservation.objects.all()), Decimal(0))
    return (sum((r.spent_usd for r in rows), Decimal(0)),
            sum((r.reserved_usd for r in rows), Decimal(0)), charged)


def unacked_tasks() -> int:
    from django.conf import settings

    client = redis.Redis.from_url(settings.REDIS_URL)
    try:
        return int(client.hlen("unacked"))
    finally:
        client.close()


@fast_and_full("kills", 3, 50)
def test_workers_killed_mid_answer_leave_every_answer_interrupted_with_its_text_and_settled(
    alice: User, o3_mini: ModelProfile, emulator: Any, processes: Processes,
    private_task_queue: str, many_sends: None, kills: int,
) -> None:
    started = time.monotonic()
    messages: list[Message] = []
    for round_ in range(kills):
        worker = processes.worker(queue=private_task_queue)
        batch = []
        for i in range(PER_ROUND):
            tag = f"kill-{round_}-{i}"
            emulator.push({"match": tag, "reply_tokens": 2000, "tokens_per_second": 40})
            batch.append(begin(alice, tag))

        def round_shows_text(b: list[Message] = batch) -> bool:
            return all(deltas(m.pk) for m in b)

        wait_for(round_shows_text, timeout=60, what="every answer of the round to show text")
        processes.signal(worker, signal.SIGKILL)
        assert worker.process.wait(timeout=10) == -signal.SIGKILL
        messages += batch
    ids = [m.pk for m in messages]

    # A last worker takes the redelivered tasks (each finds its answer no longer pending),
    # and the reaper ends the answers whose leases lapsed. A starting worker hands out
    # again only tasks unacknowledged for longer than the visibility timeout (2 s here):
    # start it once the last killed worker's tasks are that old, or a busy machine can
    # leave them waiting for the next periodic restore.
    time.sleep(3)
    processes.worker(queue=private_task_queue)
    wait_for(lambda: unacked_tasks() == 0, timeout=60, what="every task redelivered and acked")

    def reaped() -> bool:
        reaper.reap_stale_replies()
        return not Message.objects.filter(pk__in=ids, status__in=Message.LIVE_STATUSES).exists()

    wait_for(reaped, timeout=90, what="the reaper to end every answer", every=1.0)

    for message in Message.objects.filter(pk__in=ids):
        assert message.status == Status.INTERRUPTED, message.pk
        shown = deltas(message.pk)
        assert message.content, "the partial text is kept"
        assert message.content == "".join(f["text"] for f in shown)
        assert message.stream_seq == shown[-1]["seq"]
        assert message.usage_estimated and message.cost_usd > 0
        reservation = Reservation.objects.get(message=message)
        assert reservation.settled_at is not None
        assert reservation.charged_usd == message.cost_usd
    spent, reserved, charged = budgets()
    assert reserved == 0
    assert spent == charged
    assert not Reservation.objects.filter(settled_at=None).exists()
    calls = upstream_calls_by_tag(emulator)
    assert len(calls) == len(ids) and set(calls.values()) == {1}, calls
    print(f"\nchaos: {kills} SIGKILLs, {len(ids)} answers interrupted with text, "
          f"{sum(calls.values())} upstream calls, {time.monotonic() - started:.0f}s")


@fast_and_full("stops", 3, 50)
def test_workers_stopped_mid_answer_finish_their_answers_done(
    alice: User, o3_mini: ModelProfile, emulator: Any, processes: Processes,
    private_task_queue: str, many_sends: None, stops: int,
) -> None:
    started = time.monotonic()
    messages: list[Message] = []
    for round_ in range(stops):
        worker = processes.worker(queue=private_task_queue, WORKER_DRAIN_SECONDS="60")
        batch = []
        for i in range(PER_ROUND):
            tag = f"term-{round_}-{i}"
            emulator.push({"match": tag, "reply_tokens": 120, "tokens_per_second": 60})
            batch.append(begin(alice, tag))

        def round_shows_text(b: list[Message] = batch) -> bool:
            return all(deltas(m.pk) for m in b)

        wait_for(round_shows_text, timeout=60, what="every answer of the round to show text")
        processes.signal(worker, signal.SIGTERM)
        assert worker.process.wait(timeout=90) == 0, worker.tail()
        messages += batch
        # Ended by the worker that was told to stop, before it exited.
        for message in Message.objects.filter(pk__in=[m.pk for m in batch]):
            assert message.status == Status.DONE, (message.pk, message.status, worker.tail())
    ids = [m.pk for m in messages]

    for message in Message.objects.filter(pk__in=ids):
        assert message.finish_reason == "stop" and not message.usage_estimated
        assert message.completion_tokens - message.reasoning_tokens == 120
        assert message.content == "".join(f["text"] for f in deltas(message.pk))
        assert Reservation.objects.get(message=message).charged_usd == message.cost_usd
    spent, reserved, charged = budgets()
    assert reserved == 0
    assert spent == charged
    assert not Reservation.objects.filter(settled_at=None).exists()
    calls = upstream_calls_by_tag(emulator)
    assert len(calls) == len(ids) and set(calls.values()) == {1}, calls
    print(f"\nchaos: {stops} SIGTERMs, {len(ids)} answers done, {time.monotonic() - started:.0f}s")
