"""Deleting people and orgs that chatted: no ProtectedError, personal data gone, the
org's money kept to the micro-dollar, and nothing of another org touched."""

from __future__ import annotations

import csv
import io
from decimal import Decimal
from typing import Any

import pytest

from accounts.erasure import delete_organization, delete_user
from accounts.models import Membership, Organization, User
from answers.engine import run_generation
from answers.replies import start_turn
from billing import usage
from billing.models import Reservation, UsagePeriod
from billing.quotas import period_start
from conversations.models import Conversation, Message
from sharing.links import create_link
from sharing.models import ShareLink

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def offline_demo_provider(settings: Any, emulator: Any) -> None:
    settings.OPENAI_API_KEY = ""


def chat(user: User, content: str, *, answer: bool = True) -> Message:
    message = start_turn(user=user, organization_id=None, conversation_id=None, content=content,
                         reasoning_effort="low").assistant_message
    if answer:
        run_generation(message.pk)
    return Message.objects.get(pk=message.pk)


def org_money(organization: Organization) -> list[tuple[int | None, Decimal, Decimal]]:
    return sorted(
        ((r.user_id, r.spent_usd, r.reserved_usd)
         for r in UsagePeriod.objects.filter(organization=organization)),
        key=lambda row: row[0] or 0,
    )


def org_row(organization: Organization) -> tuple[Decimal, Decimal]:
    row = UsagePeriod.objects.get(organization=organization, user=None)
    return row.spent_usd, row.reserved_usd


def report_csv(organization: Organization) -> str:
    report = usage.usage_report(organization=organization, period=period_start(organization))
    out = io.StringIO()
    csv.writer(out).writerows(usage.csv_rows(report))
    return out.getvalue()


def test_deleting_a_member_who_chatted_keeps_the_orgs_month_and_erases_the_member(
    alice: User, bob: User, org_a: Organization, o3_mini: Any
) -> None:
    mine = chat(alice, "Alice asks about budgets")
    his = chat(bob, "Bob's secret plan for the merger")
    assert his.status == Message.Status.DONE and his.cost_usd > 0
    create_link(user=bob, conversation_id=his.conversation_id, visibility=ShareLink.Visibility.ORG,
                expires_at=None)
    assert ShareLink.objects.filter(conversation=his.conversation).exists()
    spent_before = org_row(org_a)
    report_before = usage.usage_report(organization=org_a, period=period_start(org_a))
    assert spent_before == (mine.cost_usd + his.cost_usd, Decimal(0))

    delete_user(user=bob)

    assert not User.objects.filter(email="bob@example.com").exists()
    assert not Membership.objects.filter(user_id=bob.pk).exists()
    # The org's month is unchanged to the micro-dollar, in the budget and in the report.
    assert org_row(org_a) == spent_before
    report = usage.usage_report(organization=org_a, period=period_start(org_a))
    assert report.total.cost == report_before.total.cost == spent_before[0]
    assert dict(report.by_member)[usage.DELETED_MEMBER].cost == his.cost_usd
    assert dict(report.by_member)["alice@example.com"].cost == mine.cost_usd
    # The billing row of bob's answer keeps its charge, without a person on it.
    reservation = Reservation.objects.get(message_id=his.pk)
    assert reservation.charged_usd == his.cost_usd and reservation.member_period_id is None
    # Nothing personal of bob's is left.
    erased = Message.objects.filter(conversation=his.conversation)
    assert {m.content for m in erased} == {""}
    conversation = Conversation.objects.get(pk=his.conversation_id)
    assert (conversation.user_id, conversation.title, conversation.deleted_at is not None) == (
        None, "", True)
    assert not ShareLink.objects.filter(conversation=conversation).exists()
    assert not Message.objects.filter(content__contains="secret plan").exists()
    assert "bob@example.com" not in report_csv(org_a)
    # Alice's own conversation is untouched.
    assert Message.objects.get(pk=mine.pk).content == mine.content != ""


def test_deleting_a_member_with_a_live_answer_cancels_and_settles_it_first(
    alice: User, bob: User, org_a: Organization, o3_mini: Any
) -> None:
    done = chat(alice, "First")
    live = chat(bob, "Still thinking", answer=False)
    assert org_row(org_a)[1] > 0  # bob's worst case is held

    bob.delete()  # the admin's path: the pre_delete receiver erases and settles first

    assert org_row(org_a) == (done.cost_usd, Decimal(0))
    ended = Message.objects.get(pk=live.pk)
    assert ended.status == Message.Status.CANCELLED and ended.cost_usd == 0
    assert Reservation.objects.get(message_id=live.pk).settled_at is not None


def test_deleting_another_org_leaves_org_a_untouched(
    alice: User, bob: User, charlie: User, org_a: Organization, o3_mini: Any
) -> None:
    chat(alice, "In org A")
    chat(bob, "Also in org A")
    theirs = chat(charlie, "In org B")
    org_b = theirs.conversation.organization
    assert org_b != org_a and org_money(org_b)
    before = (
        org_money(org_a),
        list(Message.objects.filter(conversation__organization=org_a).values()),
        list(Reservation.objects.filter(org_period__organization=org_a).values()),
        list(Membership.objects.filter(organization=org_a).values()),
    )

    delete_organization(organization=org_b)

    assert not Organization.objects.filter(pk=org_b.pk).exists()
    assert not UsagePeriod.objects.filter(organization_id=org_b.pk).exists()
    assert not Message.objects.filter(conversation__organization_id=org_b.pk).exists()
    assert User.objects.filter(pk=charlie.pk).exists()  # people outlive their org
    assert before == (
        org_money(org_a),
        list(Message.objects.filter(conversation__organization=org_a).values()),
        list(Reservation.objects.filter(org_period__organization=org_a).values()),
        list(Membership.objects.filter(organization=org_a).values()),
    )


def test_deleting_an_org_whose_answer_is_live_raises_nothing(
    charlie: User, o3_mini: Any
) -> None:
    live = chat(charlie, "Pending in org B", answer=False)
    org_b = live.conversation.organization

    org_b.delete()  # the admin's path

    assert not Message.objects.filter(pk=live.pk).exists()
    assert not Reservation.objects.filter(org_period__organization_id=org_b.pk).exists()


def test_an_admin_deleting_a_live_answer_cancels_and_settles_it_first(
    alice: User, org_a: Organization, o3_mini: Any
) -> None:
    live = chat(alice, "Delete me while I think", answer=False)
    assert org_row(org_a)[1] > 0

    Message.objects.get(pk=live.pk).delete()

    assert org_row(org_a) == (Decimal(0), Decimal(0))
    reservation = Reservation.objects.get(pk=Reservation.objects.get().pk)
    assert reservation.message_id is None and reservation.settled_at is not None
    assert reservation.charged_usd == 0


@pytest.mark.urls("tests.accounts.urls")
def test_the_django_admin_deletes_a_member_and_an_org_that_chatted(
    client: Any, alice: User, bob: User, charlie: User, org_a: Organization, o3_mini: Any
) -> None:
    chat(alice, "Alice in A")
    chat(bob, "Bob in A")
    theirs = chat(charlie, "Charlie in B")
    org_b = theirs.conversation.organization
    before = org_money(org_a)
    root = User.objects.create_superuser(email="root@example.com", password="x")
    client.force_login(root)

    # The confirmation pages list what goes; neither is blocked by a protected row.
    for url in (f"/admin/accounts/user/{bob.pk}/delete/",
                f"/admin/accounts/organization/{org_b.pk}/delete/"):
        page = client.get(url)
        assert page.status_code == 200 and b"protected" not in page.content.lower()
        assert client.post(url, {"post": "yes"}).status_code == 302

    assert not User.objects.filter(pk=bob.pk).exists()
    assert not Organization.objects.filter(pk=org_b.pk).exists()
    assert [row for row in org_money(org_a) if row[0] != bob.pk] == [
        row for row in before if row[0] != bob.pk]
    assert org_row(org_a)[0] == sum((spent for user, spent, _ in before if user is None),
                                    Decimal(0))
