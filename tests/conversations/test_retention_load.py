"""The issue's load test: retention deletes 10,000 old conversations in batches while
another person of the same org streams an answer over the real stack (uvicorn, a Celery
worker, Redis, PostgreSQL, the emulator). The answer finishes with every frame in order,
its frames arrive between retention's batches (told apart by the order events were
recorded, never by clocks), and the run is audited."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import websockets
from django.test import Client
from django.utils import timezone

from accounts.audit_models import AuditAction, AuditEntry
from accounts.models import Organization, User
from billing.models import Reservation
from chatsite.celery import app
from conversations.models import Conversation, Message
from llm.models import ModelProfile

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

OLD_CONVERSATIONS = 10_000
BATCH = 500
DAYS = 30


class Timeline:
    """Events from every thread in the order they happened: retention's committed
    batches (its log lines, written after each commit) and the frames the tab received."""

    def __init__(self) -> None:
        self.events: list[tuple[str, Any]] = []
        self._lock = threading.Lock()

    def add(self, kind: str, value: Any) -> None:
        with self._lock:
            self.events.append((kind, value))


class BatchLog(logging.Handler):
    def __init__(self, timeline: Timeline) -> None:
        super().__init__(level=logging.INFO)
        self.timeline = timeline

    def emit(self, record: logging.LogRecord) -> None:
        batch = getattr(record, "batch", None)
        if batch is not None:
            self.timeline.add("batch", batch)


@pytest.fixture
def timeline() -> Iterator[Timeline]:
    timeline = Timeline()
    handler = BatchLog(timeline)
    logger = logging.getLogger("conversations.retention")
    level = logger.level
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    yield timeline
    logger.removeHandler(handler)
    logger.setLevel(level)


def old_conversations(organization: Organization, owners: list[User], profile: ModelProfile,
                      count: int) -> None:
    """``count`` finished conversations of one turn each, untouched for a year."""
    long_ago = timezone.now() - dt.timedelta(days=365)
    conversations = Conversation.objects.bulk_create(
        (Conversation(organization=organization, user=owners[n % len(owners)], profile=profile,
                      title=f"Old conversation {n}", created_at=long_ago, updated_at=long_ago)
         for n in range(count)), batch_size=2000)
    Message.objects.bulk_create(
        (Message(conversation=conversation, role=role, content=f"{role} text {conversation.pk}",
                 created_at=long_ago)
         for conversation in conversations for role in (Message.Role.USER, Message.Role.ASSISTANT)),
        batch_size=4000)


def session_cookie(user: User) -> str:
    client = Client()
    client.force_login(user)
    return f"sessionid={client.cookies['sessionid'].value}"


async def stream_while_retention_runs(base: str, cookie: str, timeline: Timeline
                                      ) -> list[dict[str, Any]]:
    """Send a question; once its first delta arrived, queue the retention task for the
    worker; read every frame until the answer ends."""
    frames: list[dict[str, Any]] = []
    async with websockets.connect(base.replace("http", "ws", 1) + "/ws/chat/",
                                  additional_headers={"Cookie": cookie, "Origin": base}) as ws:
        await ws.send(json.dumps({"type": "send", "conversation": None, "client_id": "load",
                                  "content": "Tell me a long story", "reasoning_effort": "low"}))
        while True:
            frame = json.loads(await asyncio.wait_for(ws.recv(), 60))
            timeline.add("frame", frame)
            frames.append(frame)
            if frame["type"] == "delta" and frame["seq"] == 1:
                await asyncio.to_thread(app.send_task, "conversations.tasks.apply_retention")
            if frame["type"] in ("done", "error"):
                return frames


def run_entry(organization: Organization, timeout: float = 300) -> AuditEntry:
    deadline = time.monotonic() + timeout  # a limit so a failure cannot hang the suite
    while time.monotonic() < deadline:
        entry = AuditEntry.objects.filter(organization_id=organization.pk,
                                          action=AuditAction.RETENTION_RUN).first()
        if entry is not None:
            return entry
        time.sleep(0.2)
    raise AssertionError("the retention run was never audited")


def test_retention_deletes_10000_conversations_in_batches_while_bob_streams(
    alice: User, bob: User, org_a: Organization, o3_mini: ModelProfile, live_server_url: str,
    emulator: Any, settings: Any, timeline: Timeline,
) -> None:
    settings.RETENTION_BATCH_SIZE = BATCH
    emulator.config.tokens_per_second = 100
    emulator.config.reply_tokens = 600  # about six seconds of stream
    Organization.objects.filter(pk=org_a.pk).update(retention_days=DAYS,
                                                    retention_keep_shares=False)
    old_conversations(org_a, [alice, bob], o3_mini, OLD_CONVERSATIONS)

    frames = asyncio.run(stream_while_retention_runs(live_server_url, session_cookie(bob),
                                                     timeline))
    entry = run_entry(org_a)

    # The answer finished, every delta once and in order, and its money is exact.
    created, done = frames[0], frames[-1]
    assert created["type"] == "message.created" and done["type"] == "done", done
    deltas = [frame for frame in frames if frame["type"] == "delta"]
    assert [frame["seq"] for frame in deltas] == list(range(1, len(deltas) + 1))
    answer = Message.objects.get(pk=created["assistant_message"])
    assert answer.status == Message.Status.DONE
    assert answer.content == "".join(frame["text"] for frame in deltas)
    assert done["cost_usd"] == str(answer.cost_usd)
    assert Reservation.objects.get(message=answer).charged_usd == answer.cost_usd

    # Retention ran in 20 batches, and the stream went on between them.
    events = timeline.events
    batches = [i for i, (kind, _value) in enumerate(events) if kind == "batch"]
    assert [events[i][1] for i in batches] == list(range(1, OLD_CONVERSATIONS // BATCH + 1))
    gaps_with_frames = [
        (before, after) for before, after in zip(batches, batches[1:], strict=False)
        if any(kind == "frame" for kind, _value in events[before + 1:after])
    ]
    assert len(gaps_with_frames) >= 2, events

    # Audited with its counts; every old conversation erased, bob's answer untouched.
    assert (entry.details["conversations_deleted"], entry.details["batches"]) == (
        OLD_CONVERSATIONS, OLD_CONVERSATIONS // BATCH)
    left = Conversation.objects.filter(organization=org_a, deleted_at__isnull=True)
    assert list(left.values_list("pk", flat=True)) == [created["conversation"]]
    assert not Message.objects.filter(conversation__organization=org_a,
                                      content__startswith="user text").exists()
