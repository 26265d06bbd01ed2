"""Budget arithmetic is exact to the micro-dollar on every database.

PostgreSQL computes ``numeric`` exactly; SQLite (embedded mode) computes in binary
floating point. These tests run on whichever database the suite uses, and the last one
re-runs this module against SQLite when the suite runs on PostgreSQL.
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from django.db import connection, transaction

from accounts.models import Membership, Organization, User
from billing import quotas
from billing.models import Reservation, UsagePeriod
from chatsite.errors import Refused
from conversations.models import Conversation, Message
from llm.models import ModelProfile
from tests.embedded import run_module_on_sqlite

pytestmark = pytest.mark.django_db



def _pending_answer(user: User, organization: Organization, profile: ModelProfile) -> Message:
    conversation = Conversation.objects.create(organization=organization, user=user, profile=profile)
    return Message.objects.create(
        conversation=conversation, role=Message.Role.ASSISTANT, status=Message.Status.PENDING,
        profile=profile, model_name=profile.model, reasoning_effort="medium",
        max_completion_tokens=profile.completion_cap("medium"),
    )


def _reserve(user: User, profile: ModelProfile, prompt_tokens: int) -> Message:
    membership = Membership.objects.select_related("organization").get(user=user)
    with transaction.atomic():
        message = _pending_answer(user, membership.organization, profile)
        quotas.reserve(membership=membership, message=message, profile=profile,
                       prompt_tokens=prompt_tokens)
    return message


def _settle(message: Message, cost: Decimal) -> None:
    with transaction.atomic():
        assert quotas.settle(message_id=message.pk, cost=cost, estimated=False)


def _raw_money(row: UsagePeriod) -> tuple[Any, Any]:
    """The stored values as the database holds them, before Django quantizes them."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT reserved_usd, spent_usd FROM billing_usageperiod WHERE id = %s", [row.pk]
        )
        reserved, spent = cursor.fetchone()
    return reserved, spent


def test_twenty_overlapping_turns_release_their_reservations_to_exactly_zero(
    alice: User, org_a: Organization, o3_mini: ModelProfile
) -> None:
    org_a.monthly_budget_usd = Decimal("50.00")
    org_a.member_budget_usd = Decimal("10.00")
    org_a.save(update_fields=["monthly_budget_usd", "member_budget_usd"])
    # Prompt sizes that give holds like 0.110111 and charges like 0.000333: sums of such
    # decimals are not representable in binary floating point.
    messages = [_reserve(alice, o3_mini, prompt_tokens=101 * (i + 1)) for i in range(20)]
    held = sum(Reservation.objects.values_list("amount_usd", flat=True), Decimal(0))
    for row in UsagePeriod.objects.all():
        assert row.reserved_usd == held

    charges = [Decimal("0.000333") * (i + 1) + Decimal("0.1") for i in range(20)]
    # Settle out of order, the way overlapping answers end.
    for index in [*range(1, 20, 2), *range(18, -1, -2)]:
        _settle(messages[index], charges[index])

    spent = sum(charges, Decimal(0))
    assert spent == Decimal("2.069930")
    rows = list(UsagePeriod.objects.all())
    assert len(rows) == 2
    for row in rows:
        assert row.reserved_usd == Decimal("0")
        assert row.spent_usd == spent
        reserved_raw, spent_raw = _raw_money(row)
        assert reserved_raw == 0  # not -5.55e-17: the check constraint holds
        assert Decimal(str(spent_raw)).quantize(quotas.CENT) == spent
    assert all(r.charged_usd == c for r, c in zip(
        Reservation.objects.order_by("message_id"), charges, strict=True))


def test_a_budget_fills_to_the_exact_micro_dollar_and_not_one_past(
    alice: User, org_a: Organization, o3_mini: ModelProfile
) -> None:
    # Spend 0.1 + 0.2 (0.30000000000000004 in floating point) and hold the rest exactly
    # (each charge within its turn's reservation: 100,000 prompt tokens hold $0.11 more).
    for charge in (Decimal("0.1"), Decimal("0.2")):
        _settle(_reserve(alice, o3_mini, prompt_tokens=100_000), charge)
    worst = quotas.worst_case_cost(o3_mini, prompt_tokens=0,
                                   completion_cap=o3_mini.completion_cap("medium"))
    membership = Membership.objects.get(user=alice)
    membership.monthly_budget_usd = Decimal("0.30") + worst
    membership.save(update_fields=["monthly_budget_usd"])

    fits = _reserve(alice, o3_mini, prompt_tokens=0)
    with pytest.raises(Refused):
        _reserve(alice, o3_mini, prompt_tokens=1)  # one more prompt token: a micro-dollar more
    _settle(fits, Decimal(0))

    row = UsagePeriod.objects.get(user=alice)
    assert (row.spent_usd, row.reserved_usd) == (Decimal("0.300000"), Decimal("0"))


def test_a_released_turn_leaves_both_rows_exactly_as_they_were(
    alice: User, org_a: Organization, o3_mini: ModelProfile
) -> None:
    _settle(_reserve(alice, o3_mini, prompt_tokens=777), Decimal("0.123457"))
    before = {row.pk: _raw_money(row) for row in UsagePeriod.objects.all()}

    _settle(_reserve(alice, o3_mini, prompt_tokens=1234), Decimal(0))

    assert {row.pk: _raw_money(row) for row in UsagePeriod.objects.all()} == before


@pytest.mark.slow
def test_the_same_arithmetic_is_exact_in_embedded_sqlite_mode(tmp_path: Path) -> None:
    if connection.vendor == "sqlite":
        pytest.skip("this run is already on SQLite")
    output = run_module_on_sqlite(__file__, tmp_path, timeout=300)
    assert "3 passed" in output
