"""Titles are reserved and billed like any turn and shown as their own usage line;
prices are fixed when a turn reserves its budget."""

from __future__ import annotations

import csv
import io
from decimal import Decimal
from typing import Any

import pytest
from django.test import Client

from accounts.models import Organization, User
from answers.engine import run_generation
from answers.replies import start_turn
from answers.titles import generate_title
from billing import usage
from billing.models import Reservation, UsagePeriod
from billing.quotas import period_start
from conversations.models import Conversation, Message
from llm.pricing import Prices, usage_cost, worst_case_cost
from llm.types import Usage
from realtime.publishing import wait_until_sent
from realtime.replay import get_replay_store
from tests.accounts.factories import as_text

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def offline_demo_provider(settings: Any, emulator: Any) -> None:
    settings.OPENAI_API_KEY = ""
    settings.LLM_MAX_ATTEMPTS = 1


def begin(user: User, content: str = "Explain Euler's identity") -> Message:
    return start_turn(user=user, organization_id=None, conversation_id=None, content=content,
                      reasoning_effort="medium").assistant_message


def money(organization: Organization) -> dict[int | None, tuple[Decimal, Decimal]]:
    return {r.user_id: (r.spent_usd, r.reserved_usd)
            for r in UsagePeriod.objects.filter(organization=organization)}


def title_calls(emulator: Any) -> list[dict[str, Any]]:
    return [c for c in emulator.requests_to("/chat/completions") if "response_format" in c["body"]]


# --- Titles ----------------------------------------------------------------------------------


@pytest.mark.urls("tests.accounts.urls")
def test_a_title_is_reserved_billed_and_shown_as_its_own_usage_line(
    alice: User, org_a: Organization, o3_mini: Any, emulator: Any
) -> None:
    answer = begin(alice)
    run_generation(answer.pk)
    answer.refresh_from_db()

    title = generate_title(answer.conversation_id)

    assert title and Conversation.objects.get(pk=answer.conversation_id).title == title
    assert len(title_calls(emulator)) == 1
    reservation = Reservation.objects.get(kind=Reservation.Kind.TITLE)
    reported = Usage(prompt_tokens=reservation.prompt_tokens,
                     cached_tokens=reservation.cached_tokens,
                     completion_tokens=reservation.completion_tokens,
                     reasoning_tokens=reservation.reasoning_tokens)
    assert reported.completion_tokens > 0  # the provider's own usage report
    title_cost = usage_cost(Prices.of(o3_mini), reported)
    assert reservation.settled_at is not None and reservation.charged_usd == title_cost > 0
    assert reservation.amount_usd >= title_cost
    # A title's line has no "message cost" or outcome: those are an answer's.
    assert (reservation.cost_usd, reservation.outcome) == (None, "")
    both = answer.cost_usd + title_cost
    assert money(org_a) == {None: (both, Decimal(0)), alice.pk: (both, Decimal(0))}

    report = usage.usage_report(organization=org_a, period=period_start(org_a))
    assert report.total.cost == both
    by_model = dict(report.by_model)
    assert by_model["o3-mini (titles)"].cost == title_cost
    assert by_model["o3-mini (titles)"].messages == 1
    assert by_model["o3-mini"].cost == answer.cost_usd
    client = Client()
    client.force_login(alice)
    html = as_text(client.get("/org/usage/"))
    assert '<th scope="row">o3-mini (titles)</th>' in html
    out = io.StringIO()
    csv.writer(out).writerows(usage.csv_rows(report))
    lines = list(csv.reader(io.StringIO(out.getvalue())))
    assert [row for row in lines if row[1] == "o3-mini (titles)"] == [[
        "alice@example.com", "o3-mini (titles)", lines[1][2], "1",
        str(reported.prompt_tokens), str(reported.cached_tokens),
        str(reported.cache_write_tokens), str(reported.completion_tokens), str(reported.reasoning_tokens), f"{title_cost:.6f}",
    ]]


def test_no_title_is_asked_for_when_the_budget_cannot_hold_it(
    alice: User, org_a: Organization, o3_mini: Any, emulator: Any
) -> None:
    conversation = Conversation.objects.create(organization=org_a, user=alice, profile=o3_mini,
                                               title="fallback title")
    Message.objects.create(conversation=conversation, role="user", content="Hello")
    org_a.monthly_budget_usd = Decimal("0.001")  # below a title's worst case
    org_a.save(update_fields=["monthly_budget_usd"])

    assert generate_title(conversation.pk) is None

    assert title_calls(emulator) == []
    assert Conversation.objects.get(pk=conversation.pk).title == "fallback title"
    assert not Reservation.objects.exists()
    assert all(value == (0, 0) for value in money(org_a).values())


def test_a_title_request_the_provider_rejected_costs_nothing(
    alice: User, org_a: Organization, o3_mini: Any, emulator: Any
) -> None:
    conversation = Conversation.objects.create(organization=org_a, user=alice, profile=o3_mini,
                                               title="fallback title")
    Message.objects.create(conversation=conversation, role="user", content="Hello")
    emulator.push({"fault": "model_not_found"})

    assert generate_title(conversation.pk) is None

    reservation = Reservation.objects.get(kind=Reservation.Kind.TITLE)
    assert reservation.settled_at is not None and reservation.charged_usd == 0
    assert all(value == (0, 0) for value in money(org_a).values())
    assert Conversation.objects.get(pk=conversation.pk).title == "fallback title"


# --- Prices are snapshotted at reservation ---------------------------------------------------


def test_a_price_change_mid_answer_changes_nothing_for_that_answer(
    alice: User, org_a: Organization, o3_mini: Any
) -> None:
    old = Prices.of(o3_mini)
    message = begin(alice)
    assert message.price_snapshot == old.snapshot()
    reservation = Reservation.objects.get(message=message)
    assert message.max_completion_tokens is not None
    assert reservation.amount_usd == worst_case_cost(
        old, prompt_tokens=reservation.prompt_tokens_estimate,
        completion_cap=message.max_completion_tokens)
    # An admin raises every price tenfold while the answer is queued.
    o3_mini.input_price *= 10
    o3_mini.cached_input_price *= 10
    o3_mini.output_price *= 10
    o3_mini.save()

    run_generation(message.pk)

    message.refresh_from_db()
    billed = Usage(prompt_tokens=message.prompt_tokens, cached_tokens=message.cached_tokens,
                   completion_tokens=message.completion_tokens)
    assert message.status == Message.Status.DONE
    assert message.cost_usd == usage_cost(old, billed) != usage_cost(Prices.of(o3_mini), billed)
    assert message.price_snapshot == old.snapshot()
    assert Reservation.objects.get(message=message).charged_usd == message.cost_usd
    assert wait_until_sent()
    [done] = [f for f in get_replay_store().read_sync(message.pk) if f["type"] == "done"]
    assert Decimal(done["cost_usd"]) == message.cost_usd
    assert money(org_a)[None] == (message.cost_usd, Decimal(0))


def test_a_stopped_answer_is_billed_a_flagged_estimate_and_its_frame_says_so(
    alice: User, org_a: Organization, o3_mini: Any, emulator: Any
) -> None:
    emulator.push({"fault": "drop", "after_tokens": 5})
    message = begin(alice)

    run_generation(message.pk)

    message.refresh_from_db()
    assert message.usage_estimated and message.cost_usd > 0
    reservation = Reservation.objects.get(message=message)
    assert reservation.estimated and reservation.charged_usd == message.cost_usd
    assert wait_until_sent()
    [final] = [f for f in get_replay_store().read_sync(message.pk) if f["type"] == "error"]
    assert final["usage_estimated"] is True and Decimal(final["cost_usd"]) == message.cost_usd


def test_a_title_hold_whose_worker_died_is_released_by_the_reaper(
    alice: User, org_a: Organization, o3_mini: Any
) -> None:
    from datetime import timedelta

    from django.conf import settings
    from django.db import transaction
    from django.utils import timezone

    from answers.reaper import reap_stale_replies
    from billing.quotas import reserve_title

    with transaction.atomic():
        hold = reserve_title(membership=alice.memberships.get(), prices=Prices.of(o3_mini),
                             model_name="o3-mini", prompt_tokens=30, completion_cap=2000)
    assert money(org_a)[None] == (Decimal(0), hold.amount_usd)
    assert reap_stale_replies() == 0  # its call may still be running

    Reservation.objects.filter(pk=hold.pk).update(
        created_at=timezone.now() - timedelta(seconds=settings.LLM_READ_TIMEOUT + 61))
    assert reap_stale_replies() == 1

    assert all(value == (0, 0) for value in money(org_a).values())
    hold.refresh_from_db()
    assert hold.settled_at is not None and hold.charged_usd == 0
    assert reap_stale_replies() == 0


def test_a_title_settles_once_and_only_a_title_reservation(
    alice: User, org_a: Organization, o3_mini: Any
) -> None:
    """A redelivered title task settles nothing twice, and a title's settlement (one
    statement on PostgreSQL) given an answer's reservation id settles nothing."""
    from django.db import transaction

    from billing.quotas import reserve_title, settle_title

    turn = start_turn(user=alice, organization_id=None, conversation_id=None, content="Hi",
                      reasoning_effort="low", client_id="t1")
    answer_hold = Reservation.objects.get(message=turn.assistant_message)
    with transaction.atomic():
        hold = reserve_title(membership=alice.memberships.get(), prices=Prices.of(o3_mini),
                             model_name="o3-mini", prompt_tokens=30, completion_cap=2000)
        assert not settle_title(reservation_id=answer_hold.pk, cost=Decimal("0.000100"),
                                usage={})
    usage = {"prompt_tokens": 30, "cached_tokens": 0, "completion_tokens": 12,
             "reasoning_tokens": 8, "cache_write_tokens": 0}
    cost = Decimal("0.000086")
    for attempt in (1, 2):
        with transaction.atomic():
            assert settle_title(reservation_id=hold.pk, cost=cost, usage=usage) is (attempt == 1)

    hold.refresh_from_db()
    answer_hold.refresh_from_db()
    assert (hold.charged_usd, hold.completion_tokens, hold.reasoning_tokens) == (cost, 12, 8)
    assert answer_hold.settled_at is None
    assert money(org_a) == {None: (cost, answer_hold.amount_usd),
                            alice.pk: (cost, answer_hold.amount_usd)}
