"""Group budgets: a member of a group with a budget reserves each turn's worst case on
the group's month too (refused when it does not fit, whoever in the group spent it), and
settles there to the actual cost; extensions hold on it as well."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from django.db import connection, transaction

from accounts.models import Group, GroupMembership, Organization, User
from answers.replies import start_turn
from billing import quotas
from billing.models import GroupHold, GroupUsagePeriod, Reservation, UsagePeriod
from chatsite.errors import Refused
from conversations.models import Message

pytestmark = pytest.mark.django_db


def send(user: User, text: str = "hello") -> Any:
    return start_turn(user=user, organization_id=None, conversation_id=None, content=text,
                      reasoning_effort="medium")


@pytest.fixture(params=["one statement", "row by row"])
def path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """PostgreSQL holds and settles in one statement; SQLite (embedded mode) row by row,
    which runs here on PostgreSQL too."""
    if request.param == "row by row":
        monkeypatch.setattr(connection, "vendor", "sqlite")
    return str(request.param)


@pytest.fixture
def team(org_a: Organization, alice: User, bob: User) -> Group:
    group = Group.objects.create(organization=org_a, name="Team",
                                 monthly_budget_usd=Decimal("0.30"))
    GroupMembership.objects.create(group=group, user=alice)
    GroupMembership.objects.create(group=group, user=bob)
    return group


def month(group: Group) -> GroupUsagePeriod:
    return GroupUsagePeriod.objects.get(group=group)


def test_a_members_turn_holds_its_worst_case_on_the_groups_month(
        alice: User, team: Group, path: str) -> None:
    turn = send(alice)

    reservation = Reservation.objects.get(message=turn.assistant_message)
    assert month(team).reserved_usd == reservation.amount_usd > 0
    assert list(GroupHold.objects.values_list("reservation", "period")) == [
        (reservation.pk, month(team).pk)]


def test_the_group_budget_is_shared_and_refuses_the_turn_that_would_pass_it(
        alice: User, bob: User, team: Group, path: str) -> None:
    send(alice)
    send(bob)  # two worst cases of about $0.11 each: $0.22 of $0.30 held
    before = (Message.objects.count(), Reservation.objects.count(), month(team).reserved_usd,
              sorted(UsagePeriod.objects.values_list("reserved_usd", flat=True)))

    with pytest.raises(Refused) as refused:
        send(alice, "a third")

    assert refused.value.code == "quota_exceeded"
    assert "Your group Team's monthly budget of $0.30 is used up" in refused.value.detail
    # Nothing held anywhere: the org's and the member's months are as they were.
    assert (Message.objects.count(), Reservation.objects.count(), month(team).reserved_usd,
            sorted(UsagePeriod.objects.values_list("reserved_usd", flat=True))) == before


def test_a_group_budget_below_one_worst_case_refuses_the_first_turn(
        alice: User, team: Group, path: str) -> None:
    Group.objects.filter(pk=team.pk).update(monthly_budget_usd=Decimal("0.05"))
    with pytest.raises(Refused) as refused:
        send(alice)
    assert "$0.05" in refused.value.detail
    assert not Message.objects.exists() and not GroupUsagePeriod.objects.exists()


def test_people_outside_the_group_and_groups_without_a_budget_are_not_held(
        alice: User, bob: User, charlie: User, team: Group, path: str) -> None:
    GroupMembership.objects.filter(user=bob).delete()
    free = Group.objects.create(organization=team.organization, name="Free")
    GroupMembership.objects.create(group=free, user=bob)
    send(bob)
    send(charlie)
    assert not GroupUsagePeriod.objects.exists() and not GroupHold.objects.exists()


def test_settlement_moves_the_actual_cost_to_spent_on_the_groups_month(
        alice: User, team: Group, path: str) -> None:
    turn = send(alice)
    with transaction.atomic():
        assert quotas.settle(message_id=turn.assistant_message.pk, cost=Decimal("0.012345"),
                             estimated=False)

    row = month(team)
    assert (row.reserved_usd, row.spent_usd) == (Decimal("0"), Decimal("0.012345"))
    # The person leaving the group later changes nothing that was settled.
    GroupMembership.objects.filter(user=alice).delete()
    assert month(team).spent_usd == Decimal("0.012345")


def test_settling_after_leaving_the_group_still_releases_its_hold(
        alice: User, team: Group, path: str) -> None:
    turn = send(alice)
    GroupMembership.objects.filter(user=alice).delete()
    with transaction.atomic():
        quotas.settle(message_id=turn.assistant_message.pk, cost=Decimal("0.01"),
                      estimated=False)
    assert (month(team).reserved_usd, month(team).spent_usd) == (Decimal("0"), Decimal("0.01"))


def test_an_extension_holds_on_the_groups_month_and_is_refused_past_its_budget(
        alice: User, team: Group) -> None:
    turn = send(alice)
    held = month(team).reserved_usd

    assert quotas.extend(message_id=turn.assistant_message.pk, amount=Decimal("0.05")) is not None
    assert month(team).reserved_usd == held + Decimal("0.05")

    assert quotas.extend(message_id=turn.assistant_message.pk, amount=Decimal("0.20")) is None
    assert month(team).reserved_usd == held + Decimal("0.05")
