"""The chat page's budget meter (GET /budget/) lists the member's groups with a budget:
what the group's members spent and hold this month, in the same shape as the member's
and the org's lines, for the org the member is in, in a number of queries that does not
grow with the groups."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from django.db import connection, transaction
from django.test import Client
from django.test.utils import CaptureQueriesContext

from accounts.models import Group, GroupMembership, Membership, Organization, User
from answers.replies import start_turn
from billing import quotas
from billing.models import GroupUsagePeriod, Reservation
from llm.models import ModelProfile

pytestmark = pytest.mark.django_db

STATUS_KEYS = {"limit", "spent", "reserved", "remaining", "resets_on"}


def send(user: User, text: str = "hello", effort: str = "medium") -> Any:
    return start_turn(user=user, organization_id=None, conversation_id=None, content=text,
                      reasoning_effort=effort)


def meter(user: User, organization: Organization | None = None) -> dict[str, Any]:
    client = Client()
    client.force_login(user)
    if organization is not None:
        session = client.session
        session["organization_id"] = organization.pk
        session.save()
    response = client.get("/budget/")
    assert response.status_code == 200
    body: dict[str, Any] = response.json()
    return body


def budgeted(organization: Organization, name: str, budget: str | None, *members: User) -> Group:
    group = Group.objects.create(organization=organization, name=name,
                                 monthly_budget_usd=None if budget is None else Decimal(budget))
    for user in members:
        GroupMembership.objects.create(group=group, user=user)
    return group


def test_it_lists_the_group_with_a_settled_turn_and_an_open_reservation(
        alice: User, bob: User, org_a: Organization) -> None:
    budgeted(org_a, "Team", "0.30", alice, bob)
    settled = send(alice)
    with transaction.atomic():
        assert quotas.settle(message_id=settled.assistant_message.pk, cost=Decimal("0.012345"),
                             estimated=False)
    open_turn = send(bob)  # still generating: its worst case is held on the group's month
    held = Reservation.objects.get(message=open_turn.assistant_message).amount_usd
    assert held > 0
    resets = quotas.next_period_start(quotas.period_start(org_a)).isoformat()

    body = meter(alice)

    assert body["budget"]["groups"] == [{
        "name": "Team",
        "limit": "0.30",
        "spent": "0.012345",
        "reserved": f"{held:.6f}",
        "remaining": f"{Decimal('0.30') - Decimal('0.012345') - held:.6f}",
        "resets_on": resets,
    }]
    # The member's and the org's lines keep their shape: alice's own month has only her
    # settled turn; the org's has both.
    assert set(body["budget"]) == {"member", "org", "groups"}
    assert body["budget"]["member"] == {"limit": None, "spent": "0.012345",
                                       "reserved": "0.000000", "remaining": None,
                                       "resets_on": resets}
    assert body["budget"]["org"]["reserved"] == f"{held:.6f}"
    # bob sees the same group month: the budget is the group's, not his.
    assert meter(bob)["budget"]["groups"] == body["budget"]["groups"]


def test_a_used_up_group_shows_nothing_left_and_a_zero_budget_is_still_a_budget(
        alice: User, org_a: Organization) -> None:
    research = budgeted(org_a, "Research", "0.50", alice)
    budgeted(org_a, "Frozen", "0", alice)
    GroupUsagePeriod.objects.create(group=research, period_start=quotas.period_start(org_a),
                                    spent_usd=Decimal("0.50"))

    groups = meter(alice)["budget"]["groups"]

    assert [(g["name"], g["limit"], g["spent"], g["remaining"]) for g in groups] == [
        ("Frozen", "0.00", "0.000000", "0.000000"),
        ("Research", "0.50", "0.500000", "0.000000"),
    ]
    assert all(set(g) == STATUS_KEYS | {"name"} for g in groups)


def test_groups_without_a_budget_and_groups_the_person_is_not_in_are_not_listed(
        alice: User, bob: User, org_a: Organization) -> None:
    budgeted(org_a, "Open", None, alice)
    budgeted(org_a, "Bobs only", "5.00", bob)
    budgeted(org_a, "Team", "1.00", alice, bob)

    assert [g["name"] for g in meter(alice)["budget"]["groups"]] == ["Team"]
    GroupMembership.objects.filter(user=alice).delete()
    assert meter(alice)["budget"]["groups"] == []


def test_another_orgs_groups_are_never_listed(
        alice: User, charlie: User, org_a: Organization) -> None:
    other = Organization.objects.get(memberships__user=charlie)
    Membership.objects.create(user=alice, organization=other, role=Membership.Role.MEMBER)
    budgeted(org_a, "Acme team", "1.00", alice)
    budgeted(other, "Other team", "2.00", alice, charlie)
    budgeted(other, "Charlies own", "3.00", charlie)

    assert [g["name"] for g in meter(alice, org_a)["budget"]["groups"]] == ["Acme team"]
    assert [g["name"] for g in meter(alice, other)["budget"]["groups"]] == ["Other team"]
    assert [g["name"] for g in meter(charlie)["budget"]["groups"]] == [
        "Charlies own", "Other team"]


def test_the_query_count_does_not_grow_with_the_groups(
        alice: User, org_a: Organization) -> None:
    start = quotas.period_start(org_a)

    def count() -> tuple[int, int]:
        client = Client()
        client.force_login(alice)
        with CaptureQueriesContext(connection) as queries:
            response = client.get("/budget/")
        return len(response.json()["budget"]["groups"]), len(queries)

    first = budgeted(org_a, "Group 1", "1.00", alice)
    GroupUsagePeriod.objects.create(group=first, period_start=start, spent_usd=Decimal("0.25"))
    one = count()
    for n in range(2, 6):
        group = budgeted(org_a, f"Group {n}", "1.00", alice)
        GroupUsagePeriod.objects.create(group=group, period_start=start,
                                        reserved_usd=Decimal("0.10"))

    assert one[0] == 1
    assert count() == (5, one[1])


def test_each_estimate_says_what_the_turn_would_reserve(
        alice: User, org_a: Organization, o3_mini: ModelProfile) -> None:
    estimates = meter(alice)["estimates"]
    assert set(estimates) == {"low", "medium", "high"}

    for effort, estimate in estimates.items():
        # The whole cap at the output price: above the range, which assumes part of it.
        assert Decimal(estimate["worst"]) > Decimal(estimate["high"]) > 0
        # What a turn of a short message then holds: the same worst case, plus the
        # message's few prompt tokens.
        turn = send(alice, "hi", effort)
        held = Reservation.objects.get(message=turn.assistant_message).amount_usd
        assert Decimal(estimate["worst"]) <= held < Decimal(estimate["worst"]) + Decimal("0.0001")
