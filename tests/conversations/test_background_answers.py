"""High-effort Responses answers run as background responses, in this thread against the
emulator over HTTP: a worker that dies mid-answer is replaced by one that resumes the
provider's stream right after the last checkpoint, tabs get the rest exactly once, and
the answer is billed once, at the usage the provider reported. Stop cancels the
response upstream. Writes per answer stay constant.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta
from decimal import Decimal
from typing import Any, cast

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from accounts.erasure import delete_organization, delete_user
from accounts.models import User
from answers import generation, lifecycle, reaper, tasks
from answers import relay as relay_module
from answers.draft import AnswerDraft
from answers.engine import engine, run_generation
from answers.lifecycle import MAX_CLAIMS, Abandoned, answer_prices, claim
from answers.prompts import build_prompt
from answers.relay import Relay
from answers.replies import reap_stale_replies, start_turn
from answers.runtime import Runtime
from billing.models import Reservation, UsagePeriod
from chatsite.errors import NotFound
from conversations.listing import delete_conversation
from conversations.models import Conversation, Message
from llm.models import ModelProfile
from llm.pricing import estimate_usage, usage_cost
from llm.stream import open_stream_async
from llm.tokens import count_tokens
from llm.types import (
    ChatRequest,
    ReasoningSummaryDelta,
    ResponseStarted,
    StreamEvent,
    TextDelta,
    Usage,
)
from realtime.publishing import wait_until_sent
from realtime.replay import get_replay_store, read_text
from tests.llm.test_responses_api import make_responses_profile

pytestmark = pytest.mark.django_db

Status = Message.Status
REPLY = " ".join(f"Step {n}: sunlight scatters off air molecules." for n in range(1, 13))
REASONING_TOKENS = 300


@pytest.fixture
def responses_profile(settings: Any, emulator: Any) -> ModelProfile:
    settings.OPENAI_API_KEY = ""  # the offline demo model answers OpenAI profiles
    settings.STREAM_FLUSH_MS = 0  # one frame per delta: the counts below are exact
    settings.STREAM_CHECKPOINT_SECONDS = 3600  # only the checkpoints a test takes itself
    return make_responses_profile()


def begin(user: User, effort: str = "high") -> Message:
    return start_turn(user=user, organization_id=None, conversation_id=None,
                      content="Why is the sky blue?", reasoning_effort=effort,
                      profile_name="o3-mini-responses").assistant_message


def work(message: Message, request: ChatRequest,
         handle: Callable[[Relay, StreamEvent, Runtime], Awaitable[bool]]) -> Relay:
    """Stream ``request`` for the claimed answer as a worker does, on the worker's loop
    with this thread serving its database calls: each event goes to ``handle`` until it
    returns True; then the worker stops dead (no final state, no cancel), its connection
    gone."""
    profile = message.profile
    assert profile is not None
    relay = Relay(AnswerDraft(message.pk), claim=message.claims, resumable=True)

    async def read(runtime: Runtime) -> None:
        stream = await open_stream_async(profile, request, db=runtime.db)
        relay.upstream = stream
        events = aiter(stream)
        try:
            async for event in events:
                if await handle(relay, event, runtime):
                    break
        finally:
            stream.close()
            await events.aclose()

    engine.run_here(read)
    return relay


def work_then_die(message: Message, *, deltas: int, checkpoint_at: int | None) -> Relay:
    """Stream the answer as a worker does (its response id saved, one checkpoint when
    ``checkpoint_at`` deltas were shown), publish ``deltas`` deltas, then stop dead."""
    profile = message.profile
    assert profile is not None
    prompt = build_prompt(message, profile=profile, org_message="", custom="")
    request = ChatRequest(messages=prompt.messages, reasoning_effort="high",
                          max_completion_tokens=message.max_completion_tokens or 0,
                          background=True)

    async def handle(relay: Relay, event: StreamEvent, runtime: Runtime) -> bool:
        if isinstance(event, ResponseStarted):
            await relay.track(runtime.db, event.response_id)
        elif isinstance(event, ReasoningSummaryDelta):
            relay.add_summary(event.text)
        elif isinstance(event, TextDelta):
            relay.add_text(event.text)
            if relay.draft.seq == checkpoint_at:
                await relay.checkpoint(runtime.db, time.monotonic())
            return relay.draft.seq == deltas
        return False

    relay = work(message, request, handle)
    assert wait_until_sent()
    return relay


def die_at_response_created(user: User) -> tuple[Message, str]:
    """A claimed high-effort answer whose worker started its background response, saved
    the response's id at ``response.created`` and died before any content."""
    message = claim(begin(user).pk)
    assert message is not None
    request = ChatRequest(
        messages=[{"role": "user", "content": "Why is the sky blue?"}], reasoning_effort="high",
        max_completion_tokens=5_000, background=True)

    async def handle(relay: Relay, event: StreamEvent, runtime: Runtime) -> bool:
        if isinstance(event, ResponseStarted):
            await relay.track(runtime.db, event.response_id)
            return True  # then the worker died
        return False

    relay = work(message, request, handle)
    return message, relay.draft.response_id


def lapse(message: Message, *, ago: float = 1) -> None:
    """The dead worker's lease runs out (nobody renews it)."""
    Message.objects.filter(pk=message.pk).update(
        lease_expires_at=timezone.now() - timedelta(seconds=ago)
    )


def frames(message: Message) -> list[dict[str, Any]]:
    assert wait_until_sent()
    return sorted(get_replay_store().read_sync(message.pk), key=lambda f: f.get("seq", 0))


def deltas(message: Message) -> list[dict[str, Any]]:
    return [f for f in frames(message) if f["type"] == "delta"]


def upstream(emulator: Any) -> list[tuple[str, str, dict[str, str]]]:
    return [(e["method"], e["path"], e["query"]) for e in emulator.journal_snapshot()]


def reserved() -> Decimal:
    return sum((row.reserved_usd for row in UsagePeriod.objects.all()), Decimal(0))


def handed_back(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The ids the reaper queues for the workers (the test runs their task itself)."""
    queued: list[int] = []
    monkeypatch.setattr(reaper, "hand_back", queued.append)
    return queued


def test_a_dead_workers_answer_is_resumed_after_its_checkpoint_with_no_text_lost_or_repeated(
    alice: User, responses_profile: ModelProfile, emulator: Any,
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
) -> None:
    emulator.push({"reply": REPLY, "reasoning_tokens": REASONING_TOKENS})
    message = claim(begin(alice).pk)
    assert message is not None
    dead = work_then_die(message, deltas=9, checkpoint_at=5)
    saved = Message.objects.get(pk=message.pk)
    response_id = dead.draft.response_id
    assert (saved.provider_response_id, saved.stream_seq) == (response_id, 5)
    assert saved.provider_seq is not None
    assert [f["seq"] for f in deltas(message)] == list(range(1, 10))  # 4 beyond the checkpoint

    run_generation(message.pk)  # the redelivered task, while the lease still runs
    assert Message.objects.get(pk=message.pk).claims == 1
    assert len(upstream(emulator)) == 1

    lapse(message)
    queued = handed_back(monkeypatch)
    assert reap_stale_replies() == 1 and queued == [message.pk]
    run_generation(message.pk)  # the task the reaper queued

    done = Message.objects.get(pk=message.pk)
    assert (done.status, done.claims, done.content) == (Status.DONE, 2, REPLY)
    sent = deltas(done)
    assert [f["seq"] for f in sent] == list(range(1, len(sent) + 1))
    assert "".join(f["text"] for f in sent) == REPLY
    assert frames(done)[-1]["type"] == "done" and frames(done)[-1]["seq"] == len(sent) + 1
    assert upstream(emulator) == [
        ("POST", "/v1/responses", {}),
        ("GET", f"/v1/responses/{response_id}", {}),  # its status: not stuck in the queue
        ("GET", f"/v1/responses/{response_id}",
         {"stream": "true", "starting_after": str(saved.provider_seq)}),
        ("DELETE", f"/v1/responses/{response_id}", {}),
    ]
    # Billed once, at the usage the provider reported for the whole response.
    assert not done.usage_estimated
    assert (done.reasoning_tokens, done.completion_tokens) == (
        REASONING_TOKENS, REASONING_TOKENS + count_tokens(REPLY)
    )
    reservation = Reservation.objects.get(message=done)
    recorded = Usage(**cast("dict[str, Any]", done.usage_dict()))
    cost = usage_cost(answer_prices(done).at_tier(done.service_tier), recorded)
    assert reservation.charged_usd == done.cost_usd == cost > 0
    assert not reservation.estimated and reserved() == 0
    assert done.reasoning_items and done.reasoning_items[0]["encrypted_content"]
    assert "differs from the text shown" not in caplog.text


def test_a_worker_that_died_before_its_first_checkpoint_is_resumed_from_the_start(
    alice: User, responses_profile: ModelProfile, emulator: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    emulator.push({"reply": REPLY, "reasoning_tokens": REASONING_TOKENS})
    message = claim(begin(alice).pk)
    assert message is not None
    dead = work_then_die(message, deltas=3, checkpoint_at=None)
    lapse(message)
    handed_back(monkeypatch)
    reap_stale_replies()

    run_generation(message.pk)

    done = Message.objects.get(pk=message.pk)
    assert (done.status, done.content) == (Status.DONE, REPLY)
    assert "".join(f["text"] for f in deltas(done)) == REPLY
    [get] = [e for e in upstream(emulator) if e[0] == "GET" and e[2]]
    assert get == ("GET", f"/v1/responses/{dead.draft.response_id}", {"stream": "true"})


def test_a_dropped_connection_mid_answer_is_resumed_in_the_same_worker_after_the_last_event(
    alice: User, responses_profile: ModelProfile, emulator: Any,
) -> None:
    # The connection drops once 20 tokens of text were sent; the response runs on upstream.
    emulator.push({"reply": REPLY, "reasoning_tokens": REASONING_TOKENS, "fault": "drop",
                   "after_tokens": 20})
    message = begin(alice)

    run_generation(message.pk)

    done = Message.objects.get(pk=message.pk)
    assert (done.status, done.claims, done.content) == (Status.DONE, 1, REPLY)
    sent = deltas(done)
    assert [f["seq"] for f in sent] == list(range(1, len(sent) + 1))
    assert "".join(f["text"] for f in sent) == REPLY  # nothing lost, nothing repeated
    response_id = done.provider_response_id
    calls = upstream(emulator)
    [resumed] = [c for c in calls if c[0] == "GET" and c[2]]
    assert calls == [
        ("POST", "/v1/responses", {}),
        ("GET", f"/v1/responses/{response_id}", {}),  # not stuck in the queue
        resumed,
        ("DELETE", f"/v1/responses/{response_id}", {}),
    ]
    assert resumed[1] == f"/v1/responses/{response_id}" and resumed[2]["stream"] == "true"
    assert int(resumed[2]["starting_after"]) > 0
    # Billed once, at the usage the provider reported for the whole response.
    assert not done.usage_estimated and done.reasoning_tokens == REASONING_TOKENS
    recorded = Usage(**cast("dict[str, Any]", done.usage_dict()))
    cost = usage_cost(answer_prices(done).at_tier(done.service_tier), recorded)
    assert Reservation.objects.get(message=done).charged_usd == done.cost_usd == cost > 0
    assert reserved() == 0


def test_a_background_response_stuck_in_the_queue_is_cancelled_at_the_deadline_and_the_answer_fails(
    alice: User, responses_profile: ModelProfile, emulator: Any, settings: Any,
) -> None:
    settings.BACKGROUND_QUEUED_DEADLINE_SECONDS = 1
    # The connection drops right after response.created, and the response stays queued.
    emulator.push({"fault": "stuck_queued"})
    message = begin(alice)

    run_generation(message.pk)

    failed = Message.objects.get(pk=message.pk)
    assert (failed.status, failed.error_code) == (Status.FAILED, "upstream_error")
    assert "stayed queued" in failed.error_detail and "send the question again" in failed.error_detail
    response_id = failed.provider_response_id
    calls = upstream(emulator)
    assert not [c for c in calls if c[0] == "GET" and c[2]]  # never resumed
    assert calls[-2:] == [("POST", f"/v1/responses/{response_id}/cancel", {}),
                          ("DELETE", f"/v1/responses/{response_id}", {})]
    assert len([c for c in calls if c == ("POST", "/v1/responses", {})]) == 1
    # Nothing was produced: nothing is charged.
    assert failed.cost_usd == 0 and not failed.usage_estimated and reserved() == 0


def test_a_resumed_answer_whose_response_stayed_queued_is_cancelled_and_fails(
    alice: User, responses_profile: ModelProfile, emulator: Any, settings: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings.BACKGROUND_QUEUED_DEADLINE_SECONDS = 1
    emulator.push({"fault": "stuck_queued"})
    message, response_id = die_at_response_created(alice)
    lapse(message)
    handed_back(monkeypatch)
    reap_stale_replies()

    run_generation(message.pk)  # the worker that takes it over

    failed = Message.objects.get(pk=message.pk)
    assert (failed.status, failed.claims, failed.error_code) == (Status.FAILED, 2, "upstream_error")
    assert "stayed queued" in failed.error_detail
    calls = upstream(emulator)
    assert ("GET", f"/v1/responses/{response_id}", {}) in calls
    assert not [c for c in calls if c[0] == "GET" and c[2]]
    assert calls[-2:] == [("POST", f"/v1/responses/{response_id}/cancel", {}),
                          ("DELETE", f"/v1/responses/{response_id}", {})]
    assert reserved() == 0


@pytest.mark.parametrize("checkpoint_at", [5, None], ids=["after a checkpoint", "before any"])
def test_a_resumed_answer_restarts_the_reasoning_summary_from_its_checkpoint(
    alice: User, responses_profile: ModelProfile, emulator: Any,
    monkeypatch: pytest.MonkeyPatch, checkpoint_at: int | None,
) -> None:
    ModelProfile.objects.filter(pk=responses_profile.pk).update(reasoning_summaries=True)
    summary = "First, recall Rayleigh scattering. Then compare wavelengths."
    emulator.push({"reply": REPLY, "reasoning_summary": summary})
    message = claim(begin(alice).pk)
    assert message is not None
    work_then_die(message, deltas=7, checkpoint_at=checkpoint_at)
    lapse(message)
    sent: list[dict[str, Any]] = []
    publish = relay_module.publish

    def recording_publish(pk: int, frame: dict[str, Any]) -> None:
        sent.append(frame)
        publish(pk, frame)

    monkeypatch.setattr(relay_module, "publish", recording_publish)

    run_generation(message.pk)

    done = Message.objects.get(pk=message.pk)
    assert (done.status, done.content, done.reasoning_summary) == (Status.DONE, REPLY, summary)
    reasoning = [f for f in sent if f["type"] == "reasoning"]
    # Tabs restart from the checkpointed summary, then get the rest of it once.
    assert reasoning[0] == {"type": "reasoning", "message": message.pk, "replace": True,
                            "text": summary if checkpoint_at else ""}
    assert "".join(f["text"] for f in reasoning) == summary


def test_a_worker_that_outlived_its_lease_cannot_write_over_its_successor(
    alice: User, responses_profile: ModelProfile, emulator: Any
) -> None:
    emulator.push({"reply": REPLY})
    message = claim(begin(alice).pk)
    assert message is not None
    late = work_then_die(message, deltas=4, checkpoint_at=2)
    lapse(message)

    assert lifecycle.reclaim(message.pk) is not None  # another worker has it now
    late.add_text(" and something stale")
    with pytest.raises(Abandoned):
        engine.run_here(lambda runtime: late.checkpoint(runtime.db, time.monotonic()))

    after = Message.objects.get(pk=message.pk)
    assert (after.status, after.claims) == (Status.STREAMING, 2)
    assert " and something stale" not in after.content


@pytest.mark.parametrize("why", ["claims used up", "waited too long"])
def test_an_answer_nobody_may_resume_is_interrupted_cancelled_and_deleted_upstream(
    alice: User, responses_profile: ModelProfile, emulator: Any, settings: Any,
    monkeypatch: pytest.MonkeyPatch, why: str,
) -> None:
    emulator.push({"reply": REPLY, "think_ms": 60_000})  # still reasoning upstream
    message, response_id = die_at_response_created(alice)
    if why == "claims used up":
        Message.objects.filter(pk=message.pk).update(claims=MAX_CLAIMS)
        lapse(message)
    else:
        lapse(message, ago=settings.PENDING_TIMEOUT_SECONDS + 1)
    queued = handed_back(monkeypatch)

    assert reap_stale_replies() == 1

    ended = Message.objects.get(pk=message.pk)
    assert (ended.status, ended.error_code) == (Status.INTERRUPTED, "interrupted")
    assert queued == [] and ended.usage_estimated
    calls = upstream(emulator)
    cancel = calls.index(("POST", f"/v1/responses/{response_id}/cancel", {}))
    # Then nothing of it stays stored at the provider.
    assert calls[cancel + 1:] == [("DELETE", f"/v1/responses/{response_id}", {})]
    assert reserved() == 0


@pytest.mark.django_db(transaction=True)
def test_taking_an_answer_new_or_resumed_leaves_the_claiming_thread_no_connection(
    alice: User, responses_profile: ModelProfile
) -> None:
    message = begin(alice)

    taken = generation.take(message.pk)  # a new answer: claimed, its prompt built
    assert taken is not None and taken[1] is None and taken[2] is not None
    assert connection.connection is None

    Message.objects.filter(pk=message.pk).update(provider_response_id="resp_dead", provider_seq=3)
    lapse(message)
    taken = generation.take(message.pk)  # its worker died: taken over to be resumed
    assert taken is not None and taken[1] == generation.Resume("resp_dead", 3)
    assert taken[2] is None
    assert connection.connection is None


@pytest.mark.django_db(transaction=True)
def test_stop_on_a_background_answer_cancels_it_upstream_and_bills_a_flagged_estimate(
    alice: User, responses_profile: ModelProfile, emulator: Any
) -> None:
    emulator.push({"reply_tokens": 2000, "tokens_per_second": 100})
    message = begin(alice)
    worker = threading.Thread(target=run_generation, args=(message.pk,), daemon=True)
    worker.start()
    deadline = time.monotonic() + 30
    while len(deltas(message)) < 3:
        assert time.monotonic() < deadline, "the answer never started streaming"
        time.sleep(0.02)

    lifecycle.request_cancel(message)
    worker.join(timeout=30)

    assert not worker.is_alive()
    stopped = Message.objects.get(pk=message.pk)
    assert (stopped.status, stopped.finish_reason) == (Status.CANCELLED, "cancelled")
    assert stopped.content == "".join(f["text"] for f in deltas(stopped)) != ""
    response_id = stopped.provider_response_id
    assert [e for e in upstream(emulator) if e[0] != "GET"] == [
        ("POST", "/v1/responses", {}),
        ("POST", f"/v1/responses/{response_id}/cancel", {}),
        ("DELETE", f"/v1/responses/{response_id}", {}),
    ]
    # The existing rule for a stopped answer: the provider reported nothing, so a
    # flagged estimate of the prompt, the effort's reasoning and the text shown.
    profile = stopped.profile
    assert profile is not None
    prompt = build_prompt(stopped, profile=profile, org_message="", custom="")
    estimate = estimate_usage(effort="high", completion_cap=stopped.max_completion_tokens,
                              prompt_tokens=prompt.prompt_tokens, visible_text=stopped.content)
    assert stopped.usage_estimated and Usage(**cast("dict[str, Any]", stopped.usage_dict())) == estimate
    reservation = Reservation.objects.get(message=stopped)
    assert reservation.estimated and reservation.charged_usd == stopped.cost_usd > 0
    assert reserved() == 0


def test_stop_while_no_worker_had_the_answer_ends_it_when_a_worker_takes_it_back(
    alice: User, responses_profile: ModelProfile, emulator: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    emulator.push({"reply": REPLY})
    message = claim(begin(alice).pk)
    assert message is not None
    dead = work_then_die(message, deltas=6, checkpoint_at=3)
    lapse(message)
    lifecycle.request_cancel(message)
    handed_back(monkeypatch)
    reap_stale_replies()

    run_generation(message.pk)

    stopped = Message.objects.get(pk=message.pk)
    assert stopped.status == Status.CANCELLED and stopped.usage_estimated
    assert stopped.content == read_text(message.pk, "", 0)[0] == dead.draft.text
    assert ("POST", f"/v1/responses/{dead.draft.response_id}/cancel", {}) in upstream(emulator)


# --- Deleting an answer's owner forgets its background response upstream ---------------------


def forgotten_later(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, str]]:
    """The (profile id, response id) pairs queued for ``forget_background_response``."""
    queued: list[tuple[int, str]] = []

    def forget_later(profile_id: int, response_id: str) -> None:
        queued.append((profile_id, response_id))

    monkeypatch.setattr(lifecycle, "forget_later", forget_later)
    return queued


def delete_the(what: str, user: User) -> None:
    if what == "conversation":
        conversation = Conversation.objects.get(user=user)
        delete_conversation(user=user, conversation_id=conversation.pk)
    elif what == "person":
        delete_user(user=user)
    else:
        delete_organization(organization=user.memberships.get().organization)


@pytest.mark.parametrize("what", ["conversation", "person", "org"])
def test_deleting_a_conversation_person_or_org_mid_answer_cancels_and_deletes_its_response_upstream(
    bob: User, responses_profile: ModelProfile, emulator: Any, monkeypatch: pytest.MonkeyPatch,
    django_capture_on_commit_callbacks: Any, what: str,
) -> None:
    emulator.push({"reply": REPLY, "think_ms": 0, "tokens_per_second": 5})  # still writing
    message = claim(begin(bob).pk)
    assert message is not None
    dead = work_then_die(message, deltas=3, checkpoint_at=2)
    queued = forgotten_later(monkeypatch)

    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        delete_the(what, bob)

    assert callbacks and queued == [(responses_profile.pk, dead.draft.response_id)]
    assert all(e[0] == "POST" and e[1] == "/v1/responses" for e in upstream(emulator))
    tasks.forget_background_response(*queued[0])  # what the worker that takes the task runs

    assert [e for e in upstream(emulator) if dead.draft.response_id in e[1]] == [
        ("POST", f"/v1/responses/{dead.draft.response_id}/cancel", {}),
        ("DELETE", f"/v1/responses/{dead.draft.response_id}", {}),
    ]
    assert not Message.objects.filter(pk=message.pk, status__in=Message.LIVE_STATUSES).exists()
    assert reserved() == 0


def test_charlie_cannot_delete_bobs_conversation_nor_touch_its_response_upstream(
    bob: User, charlie: User, responses_profile: ModelProfile, emulator: Any,
    monkeypatch: pytest.MonkeyPatch, django_capture_on_commit_callbacks: Any,
) -> None:
    emulator.push({"reply": REPLY, "tokens_per_second": 5})
    message = claim(begin(bob).pk)
    assert message is not None
    work_then_die(message, deltas=2, checkpoint_at=None)
    queued = forgotten_later(monkeypatch)

    with django_capture_on_commit_callbacks(execute=True), pytest.raises(NotFound):
        delete_conversation(user=charlie, conversation_id=message.conversation_id)

    assert queued == []
    assert Message.objects.get(pk=message.pk).status == Status.STREAMING
    assert [e[0] for e in upstream(emulator)] == ["POST"]


# --- Writes per answer stay constant ----------------------------------------------------------


def message_writes(queries: CaptureQueriesContext) -> list[str]:
    """Statements that write the answer's row (the claim's and the ending's carry other
    work in the same statement, after a WITH)."""
    return [q["sql"] for q in queries.captured_queries
            if 'UPDATE "conversations_message"' in q["sql"]]


def writes_for_answer(user: User, emulator: Any, tokens: int, effort: str) -> int:
    emulator.push({"reply_tokens": tokens})
    message = begin(user, effort)
    with CaptureQueriesContext(connection) as queries:
        run_generation(message.pk)
    message.refresh_from_db()
    assert message.status == Status.DONE
    assert message.completion_tokens - message.reasoning_tokens == tokens
    return len(message_writes(queries))


def test_a_background_answer_adds_one_write_for_its_response_id_whatever_its_length(
    alice: User, responses_profile: ModelProfile, emulator: Any, settings: Any
) -> None:
    settings.STREAM_CHECKPOINT_SECONDS = 0  # a checkpoint is due after every delta
    settings.STREAM_MAX_CHECKPOINTS = 4
    emulator.config.tokens_per_second = 50_000

    short = writes_for_answer(alice, emulator, 20, "high")
    long = writes_for_answer(alice, emulator, 2000, "high")
    foreground = writes_for_answer(alice, emulator, 2000, "medium")

    # The claim, the response id, four checkpoints (each with the provider's sequence
    # number) and the final state; a foreground answer has no response id to save.
    assert short == long == 1 + 1 + 4 + 1
    assert foreground == 1 + 4 + 1


def test_a_resumed_answer_writes_a_constant_number_of_times_too(
    alice: User, responses_profile: ModelProfile, emulator: Any, settings: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    emulator.push({"reply": REPLY})
    message = claim(begin(alice).pk)
    assert message is not None
    work_then_die(message, deltas=4, checkpoint_at=2)
    lapse(message)
    settings.STREAM_CHECKPOINT_SECONDS = 0
    settings.STREAM_MAX_CHECKPOINTS = 4

    with CaptureQueriesContext(connection) as queries:
        run_generation(message.pk)

    assert Message.objects.get(pk=message.pk).status == Status.DONE
    # A claim that finds nothing pending, the reclaim, the checkpoints and the final state.
    assert len(message_writes(queries)) == 1 + 1 + 4 + 1
