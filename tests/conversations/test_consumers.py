"""The chat websocket, driven through the real ASGI app with WebsocketCommunicator."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
import redis
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.db import connections

from billing.models import Reservation, UsagePeriod
from conversations.models import Conversation, Message
from tests.conversations.wsclient import connect, receive, receive_until, send

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.asyncio]

QUESTION = {"type": "send", "conversation": None, "content": "Explain Euler's identity",
            "reasoning_effort": "low", "client_id": "tab-1"}


async def open_socket(user: Any) -> WebsocketCommunicator:
    ws = await connect(user)
    connected, code = await ws.connect()
    assert connected, code
    return ws


async def ask(ws: WebsocketCommunicator, **fields: Any) -> dict[str, Any]:
    await send(ws, {**QUESTION, **fields})
    created = await receive(ws)
    assert created["type"] == "message.created", created
    return created


@sync_to_async
def load(message_id: int) -> Message:
    return Message.objects.get(pk=message_id)


@sync_to_async
def message_count(**filters: Any) -> int:
    return Message.objects.filter(**filters).count()


def text_of(frames: list[dict[str, Any]]) -> str:
    return "".join(f["text"] for f in frames if f["type"] == "delta")


def deltas_in(frames: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [f for f in frames if f["type"] == "delta"]


async def receive_deltas_until_seq(ws: WebsocketCommunicator, seq: int) -> list[dict[str, Any]]:
    frames: list[dict[str, Any]] = []
    while True:
        frame = await receive(ws)
        frames.append(frame)
        assert frame["type"] not in ("done", "error"), frame
        if frame["type"] == "delta" and frame["seq"] >= seq:
            return frames


def slow_answers(emulator: Any) -> None:
    """Long enough to act on while it streams (about 15 s if nobody stops it)."""
    emulator.config.tokens_per_second = 20
    emulator.config.reply_tokens = 300


# --- Connecting --------------------------------------------------------------------------


async def test_an_unauthenticated_socket_is_closed_with_4401() -> None:
    ws = await connect(None)
    connected, code = await ws.connect()
    assert not connected
    assert code == 4401


async def test_a_socket_from_a_foreign_origin_is_rejected(alice: Any) -> None:
    ws = await connect(alice, origin=b"https://evil.example.com")
    connected, _ = await ws.connect()
    assert not connected
    # No consumer ran to close the connection the session cookie was made with; an
    # open one would keep the test database from being dropped.
    await sync_to_async(connections.close_all)()


# --- Bad frames ------------------------------------------------------------------------------

TOO_LONG = settings.MAX_MESSAGE_CHARS + 1


def text(raw: str) -> Callable[[], dict[str, Any]]:
    return lambda: {"text_data": raw}


def frame(**fields: Any) -> Callable[[], dict[str, Any]]:
    return lambda: {"text_data": json.dumps(fields)}


BAD_FRAMES = [
    pytest.param(text("{not json"), id="not JSON"),
    pytest.param(text("[1, 2, 3]"), id="a JSON array"),
    pytest.param(text('"send"'), id="a JSON string"),
    pytest.param(frame(type="dance"), id="an unknown type"),
    pytest.param(frame(content="hi"), id="no type"),
    pytest.param(frame(type=["send"], content="hi"), id="type as a list"),
    pytest.param(frame(type={"send": 1}, content="hi"), id="type as an object"),
    pytest.param(lambda: {"bytes_data": b'{"type":"send","content":"hi"}'}, id="a binary frame"),
    pytest.param(frame(type="send", conversation="1", content="hi"), id="conversation as string"),
    pytest.param(frame(type="send", conversation=True, content="hi"), id="conversation as bool"),
    pytest.param(frame(type="send", conversation=None, content=42), id="content as number"),
    pytest.param(frame(type="send", conversation=None), id="content missing"),
    pytest.param(frame(type="send", conversation=None, content="hi", reasoning_effort="extreme"),
                 id="reasoning_effort extreme"),
    pytest.param(frame(type="send", conversation=None, content="hi", reasoning_effort=["low"]),
                 id="reasoning_effort as a list"),
    pytest.param(frame(type="send", conversation=None, content="hi", reasoning_effort=3),
                 id="reasoning_effort as a number"),
    pytest.param(frame(type="send", conversation=None, content="hi", reasoning_effort=True),
                 id="reasoning_effort as a bool"),
    pytest.param(frame(type="send", conversation=None, content="hi", reasoning_effort=""),
                 id="reasoning_effort empty"),
    pytest.param(frame(type="send", conversation=None, content="hi", reasoning_effort="XHIGH"),
                 id="reasoning_effort in capitals"),
    pytest.param(frame(type="regenerate", message=1, reasoning_effort={"effort": "low"}),
                 id="regenerate with reasoning_effort as an object"),
    pytest.param(frame(type="send", conversation=None, content="hi", client_id="x" * 65),
                 id="client_id too long"),
    pytest.param(frame(type="send", conversation=None, content="hi", client_id=7),
                 id="client_id as number"),
    pytest.param(frame(type="send", conversation=None, content="x" * TOO_LONG),
                 id="content over MAX_MESSAGE_CHARS"),
    pytest.param(frame(type="send", conversation=None, content="x" * (TOO_LONG * 3)),
                 id="a frame far over the size limit"),
    pytest.param(frame(type="send", conversation=None, content=""), id="empty content"),
    pytest.param(frame(type="send", conversation=None, content=" \n\t "), id="blank content"),
    pytest.param(frame(type="stop"), id="stop without id"),
    pytest.param(frame(type="stop", message=-1), id="stop with negative id"),
    pytest.param(frame(type="stop", message=True), id="stop with bool id"),
    pytest.param(frame(type="stop", message="12"), id="stop with string id"),
    pytest.param(frame(type="resume", after_seq=0), id="resume without id"),
    pytest.param(frame(type="resume", message=-5, after_seq=0), id="resume with negative id"),
    pytest.param(frame(type="resume", message=False, after_seq=0), id="resume with bool id"),
    pytest.param(frame(type="resume", message=1), id="resume without after_seq"),
    pytest.param(frame(type="resume", message=1, after_seq=-1), id="resume with negative seq"),
    pytest.param(frame(type="resume", message=1, after_seq=True), id="resume with bool seq"),
]


@pytest.mark.parametrize("bad", BAD_FRAMES)
async def test_a_bad_frame_gets_invalid_request_changes_nothing_and_the_socket_stays_usable(
    alice: Any, bad: Callable[[], dict[str, Any]]
) -> None:
    ws = await open_socket(alice)

    await ws.send_to(**bad())
    error = await receive(ws)

    assert error["type"] == "error"
    assert error["code"] == "invalid_request"
    assert error["detail"]
    assert await message_count() == 0
    assert await sync_to_async(Conversation.objects.count)() == 0
    created = await ask(ws)
    assert await message_count(conversation=created["conversation"]) == 2
    await ws.disconnect()


# --- Someone else's ids ----------------------------------------------------------------------


async def test_another_org_cannot_send_into_stop_or_resume_alices_answer(
    alice: Any, charlie: Any, celery_worker: Any, emulator: Any
) -> None:
    emulator.config.tokens_per_second = 100
    emulator.config.reply_tokens = 150
    alice_ws = await open_socket(alice)
    charlie_ws = await open_socket(charlie)
    created = await ask(alice_ws)
    answer_id, conversation_id = created["assistant_message"], created["conversation"]
    seen = await receive_deltas_until_seq(alice_ws, 1)

    attempts = [
        {"type": "send", "conversation": conversation_id, "content": "mine now"},
        {"type": "stop", "message": answer_id},
        {"type": "resume", "message": answer_id, "after_seq": 0},
        {"type": "stop", "message": created["user_message"]},
    ]
    for attempt in attempts:
        await send(charlie_ws, attempt)
        error = await receive(charlie_ws)
        assert error["type"] == "error" and error["code"] == "forbidden", (attempt, error)
        assert error["message"] == attempt.get("message")

    seen += await receive_until(alice_ws, "done", "error")
    done = seen[-1]
    assert done["type"] == "done" and done["status"] == "done", done
    answer = await load(answer_id)
    assert answer.status == Message.Status.DONE and answer.finish_reason == "stop"
    assert not answer.cancel_requested
    assert answer.content == text_of(seen)
    assert await message_count(conversation_id=conversation_id) == 2
    assert await message_count(conversation__user=charlie) == 0
    assert await charlie_ws.receive_nothing(timeout=0.5)
    await alice_ws.disconnect()
    await charlie_ws.disconnect()


async def test_a_member_of_the_same_org_cannot_touch_alices_conversation_by_id(
    alice: Any, bob: Any
) -> None:
    alice_ws = await open_socket(alice)
    bob_ws = await open_socket(bob)
    created = await ask(alice_ws)
    answer_id = created["assistant_message"]

    for attempt in [
        {"type": "send", "conversation": created["conversation"], "content": "hello"},
        {"type": "stop", "message": answer_id},
        {"type": "resume", "message": answer_id, "after_seq": 0},
    ]:
        await send(bob_ws, attempt)
        error = await receive(bob_ws)
        assert error["type"] == "error" and error["code"] == "forbidden", (attempt, error)

    answer = await load(answer_id)
    assert answer.status == Message.Status.PENDING and not answer.cancel_requested
    assert await message_count(conversation_id=created["conversation"]) == 2
    assert await message_count(conversation__user=bob) == 0
    reservation = await sync_to_async(Reservation.objects.get)(message_id=answer_id)
    assert reservation.settled_at is None
    assert await alice_ws.receive_nothing(timeout=0.2)
    assert await bob_ws.receive_nothing(timeout=0.2)
    await alice_ws.disconnect()
    await bob_ws.disconnect()


async def test_a_second_send_while_an_answer_is_live_is_refused(alice: Any) -> None:
    ws = await open_socket(alice)
    created = await ask(ws)

    await send(ws, {**QUESTION, "conversation": created["conversation"], "content": "And?"})
    error = await receive(ws)

    assert error["type"] == "error" and error["code"] == "invalid_request"
    assert await message_count(conversation_id=created["conversation"]) == 2
    await ws.disconnect()


# --- Stop ------------------------------------------------------------------------------------


async def test_stop_ends_a_streaming_answer_as_cancelled_and_keeps_the_text_streamed(
    alice: Any, celery_worker: Any, emulator: Any
) -> None:
    slow_answers(emulator)
    ws = await open_socket(alice)
    created = await ask(ws)
    answer_id = created["assistant_message"]
    frames = await receive_deltas_until_seq(ws, 3)

    await send(ws, {"type": "stop", "message": answer_id})
    frames += await receive_until(ws, "done", "error")

    done = frames[-1]
    assert done["type"] == "done", done
    assert done["status"] == "cancelled" and done["finish_reason"] == "cancelled"
    answer = await load(answer_id)
    assert answer.status == Message.Status.CANCELLED
    assert answer.content == text_of(frames) != ""
    assert answer.stream_seq == deltas_in(frames)[-1]["seq"]
    assert answer.completion_tokens - answer.reasoning_tokens < 300
    assert len(emulator.requests_to("/chat/completions")) == 1
    reservation = await sync_to_async(Reservation.objects.get)(message_id=answer_id)
    assert reservation.settled_at is not None and reservation.charged_usd == answer.cost_usd
    await ws.disconnect()


async def test_stop_cancels_a_pending_answer_at_once_and_releases_its_reservation(
    alice: Any
) -> None:
    ws = await open_socket(alice)  # no worker runs: the answer stays pending
    created = await ask(ws)
    answer_id = created["assistant_message"]
    reservation = await sync_to_async(Reservation.objects.get)(message_id=answer_id)
    assert reservation.amount_usd > 0

    await send(ws, {"type": "stop", "message": answer_id})
    done = await receive(ws)

    assert done["type"] == "done" and done["status"] == "cancelled", done
    answer = await load(answer_id)
    assert answer.status == Message.Status.CANCELLED
    reservation = await sync_to_async(Reservation.objects.get)(message_id=answer_id)
    assert reservation.settled_at is not None
    assert reservation.charged_usd == 0
    periods = await sync_to_async(lambda: list(UsagePeriod.objects.all()))()
    assert len(periods) == 2
    assert all(p.reserved_usd == 0 and p.spent_usd == 0 for p in periods)
    await ws.disconnect()


# --- Resume ------------------------------------------------------------------------------------


async def test_resume_from_a_second_socket_mid_stream_sends_exactly_the_missed_deltas(
    alice: Any, celery_worker: Any, emulator: Any
) -> None:
    emulator.config.tokens_per_second = 40
    emulator.config.reply_tokens = 200
    first = await open_socket(alice)
    created = await ask(first)
    answer_id = created["assistant_message"]
    before = await receive_deltas_until_seq(first, 3)
    last_seen = deltas_in(before)[-1]["seq"]

    second = await open_socket(alice)
    await send(second, {"type": "resume", "message": answer_id, "after_seq": last_seen})
    after = await receive_until(second, "done", "error")

    assert after[-1]["type"] == "done", after[-1]
    resumed = deltas_in(after)
    assert [f["seq"] for f in resumed] == list(range(last_seen + 1, last_seen + 1 + len(resumed)))
    assert after[-1]["seq"] == last_seen + len(resumed) + 1
    answer = await load(answer_id)
    assert text_of(before) + text_of(resumed) == answer.content
    rest = await receive_until(first, "done", "error")
    assert text_of(before + rest) == answer.content
    await first.disconnect()
    await second.disconnect()


async def finished_answer(ws: WebsocketCommunicator) -> tuple[int, list[dict[str, Any]]]:
    created = await ask(ws)
    frames = await receive_until(ws, "done", "error")
    assert frames[-1]["type"] == "done"
    return created["assistant_message"], frames


async def test_resume_of_a_finished_answer_replays_the_buffer_then_the_terminal_frame(
    alice: Any, celery_worker: Any, emulator: Any
) -> None:
    ws = await open_socket(alice)
    answer_id, live = await finished_answer(ws)

    await send(ws, {"type": "resume", "message": answer_id, "after_seq": 0})
    replayed = await receive_until(ws, "done", "error")

    # Thinking heartbeats are progress, not part of the answer: only sequenced frames replay.
    assert replayed == [frame for frame in live if "seq" in frame]
    await send(ws, {"type": "resume", "message": answer_id, "after_seq": live[-2]["seq"]})
    assert await receive(ws) == live[-1]
    await ws.disconnect()


async def test_resume_of_a_finished_answer_whose_buffer_expired_sends_a_snapshot_and_done(
    alice: Any, celery_worker: Any, emulator: Any
) -> None:
    ws = await open_socket(alice)
    answer_id, live = await finished_answer(ws)
    redis.Redis.from_url(settings.REDIS_URL).delete(f"teamchat:replay:{answer_id}")

    other = await open_socket(alice)
    await send(other, {"type": "resume", "message": answer_id, "after_seq": 0})
    snapshot = await receive(other)
    done = await receive(other)

    answer = await load(answer_id)
    assert snapshot["type"] == "snapshot"
    assert snapshot["text"] == answer.content == text_of(live)
    assert snapshot["seq"] == answer.stream_seq
    assert done["type"] == "done" and done["status"] == "done"
    assert done["seq"] == live[-1]["seq"]
    assert done["usage"] == live[-1]["usage"] and done["cost_usd"] == live[-1]["cost_usd"]
    assert await other.receive_nothing(timeout=0.2)
    await ws.disconnect()
    await other.disconnect()


# --- Thinking ----------------------------------------------------------------------------------


async def test_thinking_frames_arrive_before_the_first_delta_with_growing_elapsed_time(
    alice: Any, celery_worker: Any, emulator: Any
) -> None:
    emulator.config.think_ms = {**emulator.config.think_ms, "medium": 2500}
    ws = await open_socket(alice)
    await ask(ws, reasoning_effort="medium")
    frames = await receive_until(ws, "done", "error")

    assert frames[-1]["type"] == "done"
    kinds = [f["type"] for f in frames]
    first_delta = kinds.index("delta")
    thinking = [f for f in frames if f["type"] == "thinking"]
    assert len(thinking) >= 2
    assert kinds.index("thinking") < first_delta
    assert "thinking" not in kinds[first_delta:]
    elapsed = [f["elapsed_ms"] for f in thinking]
    assert elapsed == sorted(elapsed) and len(set(elapsed)) == len(elapsed)
    await ws.disconnect()


async def test_stop_during_the_silent_reasoning_pause_cancels_without_waiting_for_it(
    alice: Any, celery_worker: Any, emulator: Any
) -> None:
    emulator.config.think_ms = {**emulator.config.think_ms, "medium": 60_000}
    ws = await open_socket(alice)
    created = await ask(ws, reasoning_effort="medium")
    thinking = await receive(ws)
    assert thinking["type"] == "thinking"

    await send(ws, {"type": "stop", "message": created["assistant_message"]})
    frames = await receive_until(ws, "done", "error")

    assert frames[-1]["type"] == "done" and frames[-1]["status"] == "cancelled", frames[-1]
    assert not deltas_in(frames)
    # A heartbeat goes out each second of thinking; Stop is polled twice a second. Waiting
    # out the pause instead of cutting the read would mean about sixty more heartbeats.
    assert len([f for f in frames if f["type"] == "thinking"]) <= 3
    answer = await load(created["assistant_message"])
    assert answer.status == Message.Status.CANCELLED and answer.content == ""
    await ws.disconnect()


def test_frames_go_out_as_compact_json_even_with_a_lone_surrogate() -> None:
    from realtime.consumers import _dumps

    frame = {"type": "delta", "message": 7, "seq": 1, "text": "π ≈ 3.14 — ok"}
    assert json.loads(_dumps(frame)) == frame
    assert ", " not in _dumps(frame) and ": " not in _dumps(frame)
    odd = {"type": "delta", "message": 7, "seq": 2, "text": "half \ud800 pair"}
    assert json.loads(_dumps(odd)) == odd


# --- Reasoning efforts ---------------------------------------------------------------------


@sync_to_async
def catalog_profile(key: str) -> Any:
    from llm.catalog.sync import ensure_catalog_profile

    return ensure_catalog_profile(key)


@pytest.mark.parametrize("effort", ["xhigh", "max"])
async def test_xhigh_and_max_are_accepted_where_the_profile_lists_them_and_the_answer_carries_it(
    alice: Any, celery_worker: Any, emulator: Any, effort: str
) -> None:
    profile = await catalog_profile("openai:gpt-6.1-sol")  # low...xhigh and max (Responses)
    assert effort in profile.reasoning_efforts
    ws = await open_socket(alice)

    created = await ask(ws, profile=profile.name, reasoning_effort=effort)
    frames = await receive_until(ws, "done", "error")

    assert frames[-1]["type"] == "done" and frames[-1]["status"] == "done", frames[-1]
    assert created["reasoning_effort"] == effort
    answer = await load(created["assistant_message"])
    assert answer.status == Message.Status.DONE and answer.content == text_of(frames)
    assert (answer.reasoning_effort, answer.model_name) == (effort, "gpt-6.1-sol")
    # The answer's call (streamed); the new conversation's title is a separate call.
    sent = [e["body"] for e in emulator.requests_to("/v1/responses")
            if e["method"] == "POST" and e["body"].get("stream")]
    assert [body["reasoning"]["effort"] for body in sent] == [effort]
    await ws.disconnect()


async def test_an_effort_the_profile_lacks_is_refused_naming_its_efforts_on_every_path(
    alice: Any, celery_worker: Any, emulator: Any
) -> None:
    """Send (new and follow-up), edit and regenerate all refuse it alike, saving nothing."""
    ws = await open_socket(alice)
    expected = "o3-mini does not take reasoning effort 'xhigh'. Choose low, medium or high."

    await send(ws, {**QUESTION, "reasoning_effort": "xhigh"})
    refused_new = await receive(ws)
    assert await sync_to_async(Conversation.objects.count)() == 0
    answer_id, _ = await finished_answer(ws)
    answer = await load(answer_id)
    attempts: list[dict[str, Any]] = [
        {**QUESTION, "conversation": answer.conversation_id, "content": "And then?"},
        {**QUESTION, "conversation": answer.conversation_id, "content": "Edited", "parent": None},
        {"type": "regenerate", "message": answer_id, "client_id": "tab-2"},
    ]
    refusals = [refused_new]
    for attempt in attempts:
        await send(ws, {**attempt, "reasoning_effort": "xhigh"})
        refusals.append(await receive(ws))

    for refusal in refusals:
        assert refusal["type"] == "error" and refusal["code"] == "invalid_request", refusal
        assert refusal["detail"] == expected
    assert refusals[-1]["message"] == answer_id
    assert await message_count() == 2
    answers_reserved = Reservation.objects.filter(kind=Reservation.Kind.ANSWER)
    assert await sync_to_async(answers_reserved.count)() == 1
    # The socket stays usable, and the same profile answers at an effort it lists.
    created = await ask(ws, conversation=answer.conversation_id, content="And then?")
    assert created["reasoning_effort"] == "low"
    await ws.disconnect()


# --- The loop's own hops ----------------------------------------------------------------------


async def test_a_command_takes_no_hop_through_channels_thread_sensitive_executor(
    alice: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Channels closes stale database connections before every handler through its one
    thread-sensitive executor, which every socket's commands would queue behind; the
    consumer's own threads close them around each database call instead."""
    from channels import consumer

    hops: list[int] = []

    async def counted() -> None:
        hops.append(1)

    monkeypatch.setattr(consumer, "aclose_old_connections", counted)
    ws = await open_socket(alice)

    created = await ask(ws)
    await send(ws, {"type": "stop", "message": created["assistant_message"]})
    await receive_until(ws, "done", "error")
    await ws.disconnect()

    assert hops == []
    assert await message_count(conversation=created["conversation"]) == 2
