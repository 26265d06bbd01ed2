"""Estimated cost per reasoning effort: the domain function and its JSON endpoint."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from accounts.models import Organization, User
from billing.estimates import DEFAULT_SHARE, estimate_turn_costs, percentile
from conversations.models import Message
from llm.models import ModelProfile
from tests.accounts.factories import bill, conversation_for, make_answer

pytestmark = [pytest.mark.django_db, pytest.mark.urls("tests.accounts.urls")]


def _usd(profile: ModelProfile, prompt: int, completion: Decimal) -> str:
    cost = (prompt * profile.input_price + completion * profile.output_price) / Decimal(1_000_000)
    return str(cost.quantize(Decimal("0.000001")))


def test_percentiles_interpolate_between_ranks() -> None:
    values = list(range(100, 1100, 100))  # 100 … 1000
    assert percentile(values, 0.10) == pytest.approx(190)
    assert percentile(values, 0.90) == pytest.approx(910)
    assert percentile([7], 0.9) == 7


def test_without_enough_history_it_uses_a_share_of_the_cap_and_says_so(
    alice: User, org_a: Organization, o3_mini: Any
) -> None:
    conversation = conversation_for(alice, org_a)
    for _ in range(4):  # one short of the minimum
        make_answer(conversation, effort="low", completion=999)
    estimates = estimate_turn_costs(organization=org_a, profile=o3_mini, prompt_tokens=1000)
    assert list(estimates) == ["low", "medium", "high"]
    low = estimates["low"]
    cap = Decimal(o3_mini.completion_cap("low"))  # 10,000
    assert (low["basis"], low["samples"]) == ("default", "4")
    assert low["low"] == _usd(o3_mini, 1000, cap * DEFAULT_SHARE[0])
    assert low["high"] == _usd(o3_mini, 1000, cap * DEFAULT_SHARE[1])
    assert estimates["high"]["completion_tokens_high"] == str(int(50_000 * DEFAULT_SHARE[1]))


def test_with_history_it_uses_the_p10_to_p90_of_recent_completion_tokens(
    alice: User, org_a: Organization, charlie: User, o3_mini: Any
) -> None:
    conversation = conversation_for(alice, org_a)
    for tokens in range(100, 1100, 100):
        make_answer(conversation, effort="medium", completion=tokens)
    # None of these may count: unfinished, another org, another effort.
    make_answer(conversation, effort="medium", completion=90_000, status=Message.Status.FAILED)
    other = charlie.memberships.get().organization
    make_answer(conversation_for(charlie, other), effort="medium", completion=90_000)
    medium = estimate_turn_costs(organization=org_a, profile=o3_mini, prompt_tokens=2000)["medium"]
    assert (medium["basis"], medium["samples"]) == ("history", "10")
    assert (medium["completion_tokens_low"], medium["completion_tokens_high"]) == ("190", "910")
    assert medium["low"] == _usd(o3_mini, 2000, Decimal(190)) == "0.003036"
    assert medium["high"] == _usd(o3_mini, 2000, Decimal(910))


def test_only_the_last_200_turns_per_effort_count(
    alice: User, org_a: Organization, o3_mini: Any
) -> None:
    conversation = conversation_for(alice, org_a)
    long_ago = timezone.now() - dt.timedelta(days=30)
    bill(*Message.objects.bulk_create([
        Message(conversation=conversation, role="assistant", status="done", profile=o3_mini,
                reasoning_effort="high", completion_tokens=40_000, created_at=long_ago)
        for _ in range(50)
    ] + [
        Message(conversation=conversation, role="assistant", status="done", profile=o3_mini,
                reasoning_effort="high", completion_tokens=1_000)
        for _ in range(200)
    ]))
    high = estimate_turn_costs(organization=org_a, profile=o3_mini, prompt_tokens=0)["high"]
    assert (high["samples"], high["completion_tokens_high"]) == ("200", "1000")


def test_estimates_take_one_query(alice: User, org_a: Organization, o3_mini: Any) -> None:
    with CaptureQueriesContext(connection) as queries:
        estimate_turn_costs(organization=org_a, profile=o3_mini, prompt_tokens=10)
    assert len(queries) == 1


def test_the_endpoint_answers_bob_for_his_own_org(
    client: Client, bob: User, o3_mini: Any
) -> None:
    client.force_login(bob)
    response = client.get("/org/estimates/", {"profile": "o3-mini", "prompt_tokens": "1200"})
    assert response.status_code == 200
    body = response.json()
    assert body["ok"] is True and set(body["efforts"]) == {"low", "medium", "high"}


@pytest.mark.parametrize(("params", "status"), [
    ({"profile": "o3-mini", "prompt_tokens": "lots"}, 400),
    ({"profile": "o3-mini", "prompt_tokens": "-1"}, 400),
    ({"profile": "o3-mini", "prompt_tokens": "999999999"}, 400),
    ({"profile": "no-such-model", "prompt_tokens": "1"}, 404),
])
def test_the_endpoint_refuses_bad_input_with_a_clear_error(
    client: Client, alice: User, o3_mini: Any, params: dict[str, str], status: int
) -> None:
    client.force_login(alice)
    response = client.get("/org/estimates/", params)
    assert response.status_code == status
    assert response.json()["ok"] is False and response.json()["error"]


def test_charlie_cannot_read_estimates_for_alices_org(
    client: Client, charlie: User, org_a: Organization, o3_mini: Any
) -> None:
    client.force_login(charlie)
    response = client.get("/org/estimates/", {"profile": "o3-mini", "prompt_tokens": "1",
                                              "org": str(org_a.pk)})
    assert response.status_code == 404
