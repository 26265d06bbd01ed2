"""Every answer ends exactly once and costs exactly what the provider charged.

Faults are injected for real through the emulator over HTTP; answers run in this thread
through ``run_generation`` (no Celery), as in ``test_generation.py``.
"""

from __future__ import annotations

import time
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.utils import timezone

from accounts.models import Membership, Organization, User
from answers.engine import run_generation
from answers.lifecycle import claim
from answers.live import LiveReply, Monitor
from answers.replies import reap_stale_replies, start_turn
from billing.models import Reservation, UsagePeriod
from chatsite.errors import Refused
from conversations.models import Conversation, Message
from llm.models import ModelProfile
from realtime import replay
from realtime.publishing import wait_until_sent
from realtime.replay import get_replay_store

pytestmark = pytest.mark.django_db

QUESTION = "Explain Euler's identity"
ZERO = Decimal("0")


@pytest.fixture(autouse=True)
def offline_demo_provider(settings: Any, emulator: Any) -> None:
    settings.OPENAI_API_KEY = ""
    settings.LLM_MAX_ATTEMPTS = 3
    settings.LLM_MAX_RETRY_WAIT = 30


def begin(user: User, *, conversation: int | None = None, organization: int | None = None,
          content: str = QUESTION, profile: str | None = None) -> Message:
    turn = start_turn(
        user=user, organization_id=organization, conversation_id=conversation,
        content=content, reasoning_effort="medium", profile_name=profile,
    )
    return turn.assistant_message


def answer(message: Message) -> Message:
    run_generation(message.pk)
    return Message.objects.get(pk=message.pk)


def frames(message: Message) -> list[dict[str, Any]]:
    assert wait_until_sent()
    return get_replay_store().read_sync(message.pk)


def money() -> dict[tuple[int, int | None], tuple[Decimal, Decimal]]:
    """(spent, reserved) of every budget row, to the micro-dollar."""
    return {
        (row.organization_id, row.user_id): (row.spent_usd, row.reserved_usd)
        for row in UsagePeriod.objects.all()
    }


def spend_something(user: User) -> Decimal:
    """One successful turn first, so the rows hold money a failure must not move."""
    message = answer(begin(user, content="warm up"))
    assert message.status == Message.Status.DONE and message.cost_usd > 0
    return message.cost_usd


def upstream_calls(emulator: Any) -> list[dict[str, Any]]:
    return emulator.requests_to("/chat/completions")


# --- A request the provider rejected costs $0 ---------------------------------------------


@pytest.mark.parametrize(
    ("fault", "code", "attempts"),
    [
        pytest.param("model_not_found", "model_unavailable", 1, id="404 model not found"),
        pytest.param("unauthorized", "upstream_error", 1, id="401 wrong key"),
        pytest.param("forbidden", "upstream_error", 1, id="403 forbidden"),
        pytest.param("insufficient_quota", "provider_quota", 1, id="insufficient_quota"),
        pytest.param("context_length_exceeded", "context_too_long", 1, id="context too long"),
        pytest.param("prompt_filter", "content_filtered", 1, id="content filter on the prompt"),
        pytest.param("server_error", "upstream_error", 3, id="5xx after retries"),
    ],
)
def test_a_request_the_provider_rejected_costs_nothing_and_leaves_the_budget_untouched(
    alice: User, o3_mini: ModelProfile, emulator: Any, fault: str, code: str, attempts: int
) -> None:
    earlier = spend_something(alice)
    before = money()
    assert all(spent == earlier and reserved == ZERO for spent, reserved in before.values())
    emulator.push({"fault": fault, "times": attempts, "retry_after": 0})

    message = answer(begin(alice))

    assert len(upstream_calls(emulator)) == 1 + attempts
    assert message.status == Message.Status.FAILED
    assert message.error_code == code
    assert message.cost_usd == ZERO
    assert not message.usage_estimated
    assert (message.prompt_tokens, message.completion_tokens, message.reasoning_tokens) == (0, 0, 0)
    reservation = Reservation.objects.get(message=message)
    assert reservation.settled_at is not None
    assert reservation.charged_usd == ZERO and not reservation.estimated
    assert money() == before  # reservation released, spent unchanged, to the micro-dollar
    error = frames(message)[-1]
    assert error["type"] == "error" and error["code"] == code
    assert Decimal(error["cost_usd"]) == ZERO


def test_a_profile_misconfigured_before_any_call_costs_nothing(
    alice: User, o3_mini: ModelProfile, emulator: Any
) -> None:
    ModelProfile.objects.create(
        name="gateway-o3", display_name="Gateway o3", provider=ModelProfile.Provider.COMPATIBLE,
        model="o3-mini", endpoint="", context_window=200_000, max_output_tokens=100_000,
        max_completion_tokens=25_000, reasoning_efforts=["low", "medium", "high"],
        default_effort="medium", input_price=Decimal("1.10"),
        cached_input_price=Decimal("0.55"), output_price=Decimal("4.40"),
    )
    earlier = spend_something(alice)
    before = money()

    message = answer(begin(alice, profile="gateway-o3"))

    assert len(upstream_calls(emulator)) == 1  # only the warm-up: no HTTP call was made
    assert message.status == Message.Status.FAILED
    assert "no endpoint configured" in message.error_detail
    assert message.cost_usd == ZERO and not message.usage_estimated
    assert money() == before
    assert all(spent == earlier for spent, _ in before.values())


def test_a_failure_after_a_tool_round_bills_exactly_the_usage_the_provider_reported(
    alice: User, o3_mini: ModelProfile, emulator: Any
) -> None:
    emulator.push({"tool_call": {"name": "calculate", "arguments": {"expression": "6*7"}},
                   "reasoning_tokens": 100})
    emulator.push({"fault": "prompt_filter"})

    message = answer(begin(alice, content="What is 6*7?"))

    first, second = upstream_calls(emulator)
    assert second["status"] == 400
    assert message.status == Message.Status.FAILED
    assert message.error_code == "content_filtered"
    # Billed for the first call exactly as reported (its tool call), nothing for the
    # rejected second one, and not flagged as an estimate.
    assert not message.usage_estimated
    assert message.reasoning_tokens == 100
    expected = o3_mini.cost(
        prompt_tokens=message.prompt_tokens, cached_tokens=message.cached_tokens,
        completion_tokens=message.completion_tokens,
    ).quantize(Decimal("0.000001"))
    assert message.cost_usd == expected > 0
    for spent, reserved in money().values():
        assert (spent, reserved) == (expected, ZERO)
    assert Decimal(frames(message)[-1]["cost_usd"]) == expected


def test_a_connection_dropped_after_text_is_still_billed_a_flagged_estimate(
    alice: User, o3_mini: ModelProfile, emulator: Any
) -> None:
    emulator.push({"fault": "drop", "after_tokens": 6})

    message = answer(begin(alice))

    assert message.status == Message.Status.FAILED and message.content != ""
    assert message.usage_estimated and message.cost_usd > 0
    for spent, reserved in money().values():
        assert (spent, reserved) == (message.cost_usd, ZERO)


# --- Queued is not dead ------------------------------------------------------------------------


def test_a_pending_answer_may_wait_in_the_queue_for_the_pending_timeout(
    alice: User, o3_mini: ModelProfile, settings: Any
) -> None:
    settings.PENDING_TIMEOUT_SECONDS = 600
    message = begin(alice)

    assert message.status == Message.Status.PENDING
    assert message.lease_expires_at == message.created_at + timedelta(seconds=600)
    # Older than a streaming lease but inside its queue deadline: left alone, uncharged.
    Message.objects.filter(pk=message.pk).update(
        created_at=timezone.now() - timedelta(seconds=500),
        lease_expires_at=timezone.now() + timedelta(seconds=100),
    )
    assert reap_stale_replies() == 0
    message.refresh_from_db()
    assert message.status == Message.Status.PENDING and message.cost_usd == ZERO


def test_a_pending_answer_unclaimed_past_the_timeout_fails_as_queue_timeout_at_no_cost(
    alice: User, o3_mini: ModelProfile, emulator: Any
) -> None:
    earlier = spend_something(alice)
    before = money()
    message = begin(alice)
    held = Reservation.objects.get(message=message).amount_usd
    assert all(reserved == held for _, reserved in money().values())
    Message.objects.filter(pk=message.pk).update(
        lease_expires_at=timezone.now() - timedelta(seconds=1)
    )

    assert reap_stale_replies() == 1

    message.refresh_from_db()
    assert message.status == Message.Status.FAILED
    assert message.error_code == "queue_timeout"
    assert "nothing was charged" in message.error_detail
    assert message.cost_usd == ZERO and not message.usage_estimated
    reservation = Reservation.objects.get(message=message)
    assert reservation.charged_usd == ZERO and not reservation.estimated
    assert money() == before
    assert all(spent == earlier for spent, _ in before.values())
    error = frames(message)[-1]
    assert (error["type"], error["code"], Decimal(error["cost_usd"])) == (
        "error", "queue_timeout", ZERO
    )

    # The task that finally arrives finds nothing to claim: no upstream call, no charge.
    calls = len(upstream_calls(emulator))
    run_generation(message.pk)
    assert len(upstream_calls(emulator)) == calls
    message.refresh_from_db()
    assert message.status == Message.Status.FAILED and message.error_code == "queue_timeout"
    assert money() == before


def test_the_reaper_times_out_the_queued_and_interrupts_the_streaming(
    alice: User, bob: User, o3_mini: ModelProfile
) -> None:
    queued = begin(alice)
    streaming = claim(begin(bob).pk)
    assert streaming is not None
    Message.objects.filter(pk__in=[queued.pk, streaming.pk]).update(
        lease_expires_at=timezone.now() - timedelta(seconds=1)
    )

    assert reap_stale_replies() == 2

    queued.refresh_from_db()
    streaming.refresh_from_db()
    assert (queued.status, queued.error_code, queued.cost_usd) == (
        Message.Status.FAILED, "queue_timeout", ZERO
    )
    assert (streaming.status, streaming.error_code) == (Message.Status.INTERRUPTED, "interrupted")
    assert streaming.usage_estimated  # a claimed answer reached the model: a flagged estimate
    assert all(reserved == ZERO for _, reserved in money().values())


def test_the_reaper_goes_on_past_a_row_it_cannot_end(
    alice: User, bob: User, o3_mini: ModelProfile, monkeypatch: pytest.MonkeyPatch
) -> None:
    broken = claim(begin(alice).pk)
    healthy = claim(begin(bob).pk)
    assert broken is not None and healthy is not None
    Message.objects.filter(pk=broken.pk).update(
        lease_expires_at=timezone.now() - timedelta(seconds=10)  # oldest: reaped first
    )
    Message.objects.filter(pk=healthy.pk).update(
        lease_expires_at=timezone.now() - timedelta(seconds=1)
    )
    read_text = replay.read_text

    def failing_read_text(pk: int, content: str, seq: int) -> tuple[str, int]:
        if pk == broken.pk:
            raise RuntimeError("replay buffer unreadable")
        return read_text(pk, content, seq)

    monkeypatch.setattr(replay, "read_text", failing_read_text)

    assert reap_stale_replies() == 1

    assert Message.objects.get(pk=broken.pk).status == Message.Status.STREAMING
    assert Message.objects.get(pk=healthy.pk).status == Message.Status.INTERRUPTED
    monkeypatch.setattr(replay, "read_text", read_text)
    assert reap_stale_replies() == 1
    assert Message.objects.get(pk=broken.pk).status == Message.Status.INTERRUPTED
    assert all(reserved == ZERO for _, reserved in money().values())


# --- A lease proves progress of that answer ----------------------------------------------------


def test_a_second_tool_round_that_thinks_silently_past_the_idle_timeout_is_not_a_stall(
    alice: User, o3_mini: ModelProfile, emulator: Any, settings: Any
) -> None:
    settings.STREAM_IDLE_TIMEOUT = 1
    emulator.push({"tool_call": {"name": "calculate", "arguments": {"expression": "6*7"}}})
    emulator.push({"think_ms": 2500})  # the second call reasons silently for 2.5 s

    message = answer(begin(alice, content="What is 6*7?"))

    assert len(upstream_calls(emulator)) == 2
    assert message.status == Message.Status.DONE, message.error_detail
    assert message.content != "" and not message.usage_estimated


def test_an_answer_that_goes_quiet_after_it_started_writing_is_still_a_stall(
    alice: User, o3_mini: ModelProfile, emulator: Any, settings: Any
) -> None:
    settings.STREAM_IDLE_TIMEOUT = 1
    emulator.push({"fault": "stall", "after_tokens": 5, "stall_seconds": 4})

    started = time.monotonic()
    message = answer(begin(alice))

    assert time.monotonic() - started < 4
    assert message.status == Message.Status.FAILED
    assert "stopped sending" in message.error_detail
    assert message.usage_estimated and message.cost_usd > 0  # it had produced text


def _streaming(user: User, profile: ModelProfile) -> int:
    message = claim(begin(user).pk)
    assert message is not None
    return message.pk


def test_only_answers_making_progress_have_their_lease_renewed(
    alice: User, bob: User, charlie: User, o3_mini: ModelProfile, settings: Any
) -> None:
    settings.STREAM_IDLE_TIMEOUT = 90
    settings.LLM_READ_TIMEOUT = 600
    writing, thinking, hung = (_streaming(u, o3_mini) for u in (alice, bob, charlie))
    past = timezone.now() - timedelta(seconds=1)
    Message.objects.filter(pk__in=[writing, thinking, hung]).update(lease_expires_at=past)
    now = time.monotonic()
    replies = {pk: LiveReply(pk) for pk in (writing, thinking, hung)}
    replies[writing].touch()  # the provider just sent something
    replies[thinking].begin_round()  # a request went out 2 minutes ago; the model reasons
    replies[thinking].last_activity = now - 120
    replies[hung].touch()  # it wrote, then nothing for longer than the idle timeout
    replies[hung].last_activity = now - 100
    monitor = Monitor()
    monitor._replies = replies
    monitor._last_lease_renewal = now - settings.STREAM_LEASE_SECONDS

    monitor.tick()

    leases = dict(Message.objects.filter(pk__in=replies).values_list("pk", "lease_expires_at"))
    writing_lease, thinking_lease = leases[writing], leases[thinking]
    assert writing_lease is not None and thinking_lease is not None
    assert writing_lease > timezone.now() and thinking_lease > timezone.now()
    assert leases[hung] == past
    assert replies[hung].stalled and not replies[thinking].stalled


# --- The conversation's org decides -----------------------------------------------------------


@pytest.fixture
def alice_in_org_b(alice: User, charlie: User) -> Organization:
    org_b = charlie.memberships.get().organization
    Membership.objects.create(user=alice, organization=org_b, role=Membership.Role.MEMBER)
    return org_b


def test_a_turn_in_a_conversation_is_billed_to_its_own_org_not_the_sessions(
    alice: User, org_a: Organization, alice_in_org_b: Organization, o3_mini: ModelProfile,
    emulator: Any,
) -> None:
    org_a.developer_message = "House style of Acme."
    org_a.save(update_fields=["developer_message"])
    alice_in_org_b.developer_message = "House style of Other Corp."
    alice_in_org_b.save(update_fields=["developer_message"])
    first = answer(begin(alice, organization=org_a.pk))
    conversation = first.conversation_id
    assert Conversation.objects.get(pk=conversation).organization == org_a

    # The session now points at org B; the next turn goes into A's conversation.
    second = begin(alice, conversation=conversation, organization=alice_in_org_b.pk)
    period = Reservation.objects.get(message=second).member_period
    assert period is not None and period.organization == org_a
    second = answer(second)

    assert second.status == Message.Status.DONE
    rows = money()
    assert rows[(org_a.pk, alice.pk)] == (first.cost_usd + second.cost_usd, ZERO)
    assert rows[(org_a.pk, None)] == (first.cost_usd + second.cost_usd, ZERO)
    assert not UsagePeriod.objects.filter(organization=alice_in_org_b).exists()
    developer = upstream_calls(emulator)[-1]["body"]["messages"][0]["content"]
    assert "Acme" in developer and "Other Corp" not in developer


def test_a_turn_is_refused_when_the_conversations_org_budget_is_used_up(
    alice: User, org_a: Organization, alice_in_org_b: Organization, o3_mini: ModelProfile,
    emulator: Any,
) -> None:
    conversation = answer(begin(alice, organization=org_a.pk)).conversation_id
    Membership.objects.filter(user=alice, organization=org_a).update(monthly_budget_usd=ZERO)
    before = money()

    with pytest.raises(Refused) as refused:
        begin(alice, conversation=conversation, organization=alice_in_org_b.pk)

    assert refused.value.code == "quota_exceeded"
    assert money() == before
    assert not UsagePeriod.objects.filter(organization=alice_in_org_b).exists()
    assert Message.objects.filter(conversation_id=conversation).count() == 2


def test_a_new_conversation_still_goes_to_the_sessions_org(
    alice: User, org_a: Organization, alice_in_org_b: Organization, o3_mini: ModelProfile,
) -> None:
    message = begin(alice, organization=alice_in_org_b.pk)
    assert message.conversation.organization == alice_in_org_b
    period = Reservation.objects.get(message=message).member_period
    assert period is not None and period.organization == alice_in_org_b
