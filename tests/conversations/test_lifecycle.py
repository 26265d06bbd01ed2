"""Every state change of an answer (answers.lifecycle): its guard, its settlement
and its final frame, which is the same whether sent live or rebuilt from Postgres."""

from __future__ import annotations

import json
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
import redis
from asgiref.sync import sync_to_async
from django.conf import settings as django_settings
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from answers import lifecycle
from answers.draft import AnswerDraft
from answers.engine import run_generation
from answers.lifecycle import Abandoned
from answers.relay import Relay
from answers.replies import start_turn
from billing.models import Reservation, UsagePeriod
from conversations.models import Message
from llm.types import Usage
from realtime.frames import final_frame
from realtime.publishing import wait_until_sent
from realtime.replay import get_replay_store, replay_key
from tests.conversations.wsclient import connect, receive, send

pytestmark = pytest.mark.django_db

QUESTION = "Explain Euler's identity"
ZERO = Decimal("0.000000")


@pytest.fixture(autouse=True)
def offline_demo_provider(settings: Any, emulator: Any) -> None:
    settings.OPENAI_API_KEY = ""
    settings.LLM_MAX_ATTEMPTS = 1


def begin(user: Any) -> Message:
    return start_turn(user=user, organization_id=None, conversation_id=None, content=QUESTION,
                      reasoning_effort="low").assistant_message


def published(message_id: int) -> list[dict[str, Any]]:
    assert wait_until_sent()
    return get_replay_store().read_sync(message_id)


def final_frames(message_id: int) -> list[dict[str, Any]]:
    return [f for f in published(message_id) if f["type"] in ("done", "error")]


def money() -> dict[tuple[int, int | None], tuple[Decimal, Decimal]]:
    return {(r.organization_id, r.user_id): (r.spent_usd, r.reserved_usd)
            for r in UsagePeriod.objects.all()}


def assert_settled_to(message: Message, cost: Decimal, *, estimated: bool) -> None:
    reservation = Reservation.objects.get(message=message)
    assert reservation.settled_at is not None
    assert (reservation.charged_usd, reservation.estimated) == (cost, estimated)
    for spent, reserved in money().values():
        assert (spent, reserved) == (cost, 0)


def assert_frame_is_the_saved_row(message_id: int) -> dict[str, Any]:
    """Exactly one final frame went out, equal to the one rebuilt from Postgres (what a
    resuming tab gets), and its cost is what the budget was charged."""
    [live] = final_frames(message_id)
    saved = Message.objects.get(pk=message_id)
    assert live == final_frame(saved)
    assert Decimal(live["cost_usd"]) == saved.cost_usd == Reservation.objects.get(
        message_id=message_id).charged_usd
    return live


# --- pending → streaming ---------------------------------------------------------------------


def test_a_claim_starts_the_answer_once_and_a_second_claim_does_nothing(alice: Any,
                                                                        o3_mini: Any) -> None:
    message = begin(alice)

    claimed = lifecycle.claim(message.pk)
    assert claimed is not None and claimed.status == Message.Status.STREAMING
    assert claimed.lease_expires_at is not None and claimed.lease_expires_at > timezone.now()
    with CaptureQueriesContext(connection) as queries:
        assert lifecycle.claim(message.pk) is None
    # One statement: the claim's conditional UPDATE (with, on PostgreSQL, its read).
    [statement] = [q["sql"] for q in queries.captured_queries]
    assert statement.startswith(("UPDATE", "WITH claimed AS (UPDATE"))
    assert published(message.pk) == []


def test_a_checkpoint_saves_only_while_the_answer_is_streaming(alice: Any, o3_mini: Any) -> None:
    message = begin(alice)
    assert not lifecycle.checkpoint(message_id=message.pk, content="early", refusal="", seq=1)
    lifecycle.claim(message.pk)
    assert lifecycle.checkpoint(message_id=message.pk, content="so far", refusal="", seq=2)
    saved = Message.objects.get(pk=message.pk)
    assert (saved.content, saved.stream_seq) == ("so far", 2)


def test_a_workers_checkpoint_saves_only_under_its_own_claim(alice: Any, o3_mini: Any) -> None:
    """A worker names its claim: the compiled UPDATE (chatsite.compiled) writes the text
    as given, quotes and percent signs included, and a stale claim writes nothing."""
    message = lifecycle.claim(begin(alice).pk)
    assert message is not None
    text = "50% of 'x' is \"y\"; %s stays"
    assert lifecycle.checkpoint(message_id=message.pk, content=text, refusal="", seq=7,
                                reasoning_summary="Weighing it.", provider_seq=None,
                                claim=message.claims)
    assert not lifecycle.checkpoint(message_id=message.pk, content="stale", refusal="", seq=9,
                                    claim=message.claims + 1)
    saved = Message.objects.get(pk=message.pk)
    assert (saved.content, saved.stream_seq, saved.reasoning_summary, saved.provider_seq) == (
        text, 7, "Weighing it.", None)


# --- streaming → done | failed | cancelled ---------------------------------------------------


def test_finish_ends_the_answer_settles_it_and_sends_the_saved_rows_frame_once(
    alice: Any, o3_mini: Any
) -> None:
    message = lifecycle.claim(begin(alice).pk)
    assert message is not None
    usage = Usage(prompt_tokens=1200, cached_tokens=1024, completion_tokens=650,
                  reasoning_tokens=600)
    draft = AnswerDraft(message.pk, text_parts=["e^(iπ) + 1 = 0"], seq=3, usage=usage)
    draft.end(Message.Status.DONE, finish_reason="stop")

    frame = lifecycle.finish(message, draft)

    # 176 × $1.10 + 1024 × $0.55 + 650 × $4.40 per million
    expected = Decimal("0.003617")
    saved = Message.objects.get(pk=message.pk)
    assert (saved.status, saved.content, saved.stream_seq, saved.cost_usd) == (
        Message.Status.DONE, "e^(iπ) + 1 = 0", 3, expected)
    assert frame["type"] == "done" and frame["seq"] == 4 and frame["cost_usd"] == "0.003617"
    assert_settled_to(message, expected, estimated=False)
    assert assert_frame_is_the_saved_row(message.pk) == frame

    late = AnswerDraft(message.pk, usage=Usage(completion_tokens=99_999))
    late.end(Message.Status.FAILED, finish_reason="error")
    with pytest.raises(Abandoned):
        lifecycle.finish(message, late)
    assert Message.objects.get(pk=message.pk).status == Message.Status.DONE
    assert_settled_to(message, expected, estimated=False)
    assert len(final_frames(message.pk)) == 1


@pytest.mark.parametrize(
    ("fault", "status", "code"),
    [
        pytest.param(None, "done", None, id="done"),
        pytest.param({"fault": "model_not_found"}, "failed", "model_unavailable", id="failed"),
        pytest.param({"fault": "drop", "after_tokens": 5}, "failed", "upstream_error",
                     id="dropped mid-answer"),
    ],
)
def test_every_streamed_ending_sends_the_frame_a_resuming_tab_would_get(
    alice: Any, o3_mini: Any, emulator: Any, fault: dict[str, Any] | None, status: str,
    code: str | None,
) -> None:
    if fault:
        emulator.push(fault)
    message = begin(alice)
    run_generation(message.pk)

    frame = assert_frame_is_the_saved_row(message.pk)
    assert frame["status"] == status and frame.get("code") == code
    saved = Message.objects.get(pk=message.pk)
    assert_settled_to(message, saved.cost_usd, estimated=saved.usage_estimated)


def test_a_second_run_of_a_finished_answer_does_nothing(alice: Any, o3_mini: Any,
                                                       emulator: Any) -> None:
    message = begin(alice)
    run_generation(message.pk)
    before = (money(), published(message.pk))

    run_generation(message.pk)  # a redelivered task

    assert (money(), published(message.pk)) == before
    assert len(emulator.requests_to("/chat/completions")) == 1


# --- pending → cancelled | failed ------------------------------------------------------------


def test_stopping_a_pending_answer_cancels_it_at_no_cost_once(alice: Any, o3_mini: Any) -> None:
    message = begin(alice)

    frame = lifecycle.cancel(message)

    assert frame is not None and frame["type"] == "done" and frame["status"] == "cancelled"
    assert frame["cost_usd"] == "0.000000" and frame["usage_estimated"] is False
    assert_settled_to(message, ZERO, estimated=False)
    assert_frame_is_the_saved_row(message.pk)
    assert lifecycle.claim(message.pk) is None  # the late worker finds nothing to claim
    assert lifecycle.cancel(message) is None
    assert len(final_frames(message.pk)) == 1


def test_stopping_a_streaming_answer_asks_its_worker_and_ends_nothing_here(
    alice: Any, o3_mini: Any
) -> None:
    message = lifecycle.claim(begin(alice).pk)
    assert message is not None

    assert lifecycle.cancel(message) is None

    saved = Message.objects.get(pk=message.pk)
    assert saved.status == Message.Status.STREAMING and saved.cancel_requested
    assert Reservation.objects.get(message=message).settled_at is None
    assert final_frames(message.pk) == []


def test_an_answer_that_never_started_fails_at_no_cost_once(alice: Any, o3_mini: Any) -> None:
    message = begin(alice)

    frame = lifecycle.fail_pending(message.pk, code="service_unavailable", detail="Try again.")

    assert frame is not None and frame["type"] == "error"
    assert (frame["code"], frame["detail"], frame["cost_usd"]) == (
        "service_unavailable", "Try again.", "0.000000")
    assert_settled_to(message, ZERO, estimated=False)
    assert_frame_is_the_saved_row(message.pk)
    assert lifecycle.fail_pending(message.pk, code="x", detail="y") is None
    assert lifecycle.claim(message.pk) is None


def test_a_queued_answer_expires_only_after_its_deadline(alice: Any, o3_mini: Any) -> None:
    message = begin(alice)
    now = timezone.now()

    assert not lifecycle.expire_pending(message.pk, now)
    assert Message.objects.get(pk=message.pk).status == Message.Status.PENDING

    assert lifecycle.expire_pending(
        message.pk, now + timedelta(seconds=django_settings.PENDING_TIMEOUT_SECONDS + 1))
    frame = assert_frame_is_the_saved_row(message.pk)
    assert frame["code"] == "queue_timeout" and frame["cost_usd"] == "0.000000"
    assert_settled_to(message, ZERO, estimated=False)


# --- streaming → interrupted -----------------------------------------------------------------


def test_an_answer_whose_lease_lapsed_is_interrupted_with_its_text_and_a_flagged_estimate(
    alice: Any, o3_mini: Any
) -> None:
    message = lifecycle.claim(begin(alice).pk)
    assert message is not None
    relay = Relay(AnswerDraft(message.pk))
    relay.add_text("Half an answer")
    relay.flush()
    now = timezone.now()
    assert not lifecycle.interrupt(message.pk, now=now)  # its lease still runs
    Message.objects.filter(pk=message.pk).update(lease_expires_at=now - timedelta(seconds=1))

    assert lifecycle.interrupt(message.pk, now=now)

    frame = assert_frame_is_the_saved_row(message.pk)
    saved = Message.objects.get(pk=message.pk)
    assert saved.status == Message.Status.INTERRUPTED and saved.content == "Half an answer"
    assert frame["code"] == "interrupted" and frame["usage_estimated"] is True
    assert "estimate" in frame["detail"]
    assert saved.cost_usd > 0
    assert_settled_to(message, saved.cost_usd, estimated=True)
    assert not lifecycle.interrupt(message.pk, now=now)
    assert len(final_frames(message.pk)) == 1


# --- the final frame goes out even when follow-up work fails ---------------------------------


@pytest.mark.django_db(transaction=True)
def test_the_final_frame_is_published_when_after_commit_hooks_raise(
    alice: Any, o3_mini: Any, emulator: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from answers import titles
    from billing import quotas

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("broker down")

    monkeypatch.setattr(quotas, "_check_alerts", broken)
    monkeypatch.setattr(titles, "needs_title", broken)
    message = begin(alice)

    run_generation(message.pk)

    assert Message.objects.get(pk=message.pk).status == Message.Status.DONE
    assert assert_frame_is_the_saved_row(message.pk)["type"] == "done"


@pytest.mark.django_db(transaction=True)
def test_a_title_is_queued_for_an_untitled_conversation_and_a_titled_one_costs_no_query(
    alice: Any, o3_mini: Any, emulator: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The end of an answer queues the title request while the conversation has none;
    the hook asks the database neither way: the claim read whether it has one (the title
    task checks again before it asks the model)."""
    from answers import tasks, titles
    from conversations.models import Conversation

    queued: list[int] = []
    asked: list[int] = []
    real_needs_title = titles.needs_title
    monkeypatch.setattr(tasks.generate_title, "delay", queued.append)

    def needs_title(conversation_id: int) -> bool:
        asked.append(conversation_id)
        return real_needs_title(conversation_id)

    monkeypatch.setattr(titles, "needs_title", needs_title)

    first = begin(alice)
    run_generation(first.pk)
    assert (queued, asked) == ([first.conversation_id], [])

    Conversation.objects.filter(pk=first.conversation_id).update(title_generated=True)
    second = start_turn(user=alice, organization_id=None, conversation_id=first.conversation_id,
                        content="And then?", reasoning_effort="low").assistant_message
    run_generation(second.pk)
    assert Message.objects.get(pk=second.pk).status == Message.Status.DONE
    assert (queued, asked) == ([first.conversation_id], [])  # no second title, no query


# --- resuming: live and rebuilt final frames are the same ------------------------------------


@sync_to_async
def answered(user: Any) -> Message:
    message = begin(user)
    run_generation(message.pk)
    return Message.objects.get(pk=message.pk)


@pytest.mark.django_db(transaction=True)
@pytest.mark.asyncio
async def test_a_tab_resuming_across_a_hole_in_the_buffer_gets_a_snapshot_then_the_final_frame(
    alice: Any, o3_mini: Any, emulator: Any
) -> None:
    emulator.config.reply_tokens = 60
    message = await answered(alice)
    live = await sync_to_async(published)(message.pk)
    assert len([f for f in live if f["type"] == "delta"]) >= 2
    # Redis lost the first delta (a restart): the buffer holds the later ones and `done`.
    client = redis.Redis.from_url(django_settings.REDIS_URL)
    client.delete(replay_key(message.pk))
    client.rpush(replay_key(message.pk), *[json.dumps(f) for f in live if f["seq"] != 1])

    ws = await connect(alice)
    assert (await ws.connect())[0]
    await send(ws, {"type": "resume", "message": message.pk, "after_seq": 0})
    snapshot = await receive(ws)
    final = await receive(ws)

    assert snapshot == {"type": "snapshot", "message": message.pk, "seq": message.stream_seq,
                        "text": message.content}
    assert final == live[-1] == await sync_to_async(final_frame)(message)
    assert await ws.receive_nothing(timeout=0.2)
    await ws.disconnect()
