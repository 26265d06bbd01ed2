"""Budgets and usage as an attacker meets them: alice owns org A (bob is a member), charlie
owns org B. Nobody reads another org's spending or changes its budgets."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.test import Client

from accounts.models import Membership, Organization, User
from billing.models import BudgetRequest

pytestmark = [pytest.mark.django_db, pytest.mark.urls("tests.accounts.urls")]


def _as(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def request_from_bob(bob: User) -> BudgetRequest:
    return BudgetRequest.objects.create(membership=Membership.objects.get(user=bob), note="more")


def test_charlie_cannot_read_alices_usage_by_naming_her_org(
    alice: User, charlie: User, org_a: Organization
) -> None:
    as_charlie = _as(charlie)
    for path in ("/org/usage/", "/org/usage.csv", "/org/"):
        assert as_charlie.get(path, {"org": org_a.pk}).status_code == 404


def test_bob_as_a_member_cannot_read_the_orgs_usage_or_set_budgets(
    bob: User, org_a: Organization
) -> None:
    as_bob = _as(bob)
    assert as_bob.get("/org/usage.csv", {"org": org_a.pk}).status_code == 404
    assert as_bob.post("/org/budgets/", {"monthly_budget_usd": "1000000"}).status_code == 404
    org_a.refresh_from_db()
    assert org_a.monthly_budget_usd is None


def test_charlie_cannot_set_alices_budgets_or_bobs(
    alice: User, bob: User, charlie: User, org_a: Organization
) -> None:
    as_charlie = _as(charlie)
    bob_membership = Membership.objects.get(user=bob)
    assert as_charlie.post(f"/org/members/{bob_membership.pk}/budget/",
                           {"monthly_budget_usd": "0"}).status_code == 404
    as_charlie.post(f"/org/budgets/?org={org_a.pk}", {"monthly_budget_usd": "0"})
    org_a.refresh_from_db()
    bob_membership.refresh_from_db()
    assert org_a.monthly_budget_usd is None and bob_membership.monthly_budget_usd is None


def test_charlie_cannot_approve_or_decline_bobs_request(
    charlie: User, request_from_bob: BudgetRequest
) -> None:
    as_charlie = _as(charlie)
    assert as_charlie.post(f"/org/budget-requests/{request_from_bob.pk}/approve/",
                           {"new_budget_usd": "999"}).status_code == 404
    assert as_charlie.post(f"/org/budget-requests/{request_from_bob.pk}/decline/").status_code == 404
    request_from_bob.refresh_from_db()
    assert request_from_bob.status == BudgetRequest.Status.PENDING
    assert Membership.objects.get(user=request_from_bob.membership.user).monthly_budget_usd is None


def test_bob_cannot_approve_his_own_request(bob: User, request_from_bob: BudgetRequest) -> None:
    assert _as(bob).post(f"/org/budget-requests/{request_from_bob.pk}/approve/",
                         {"new_budget_usd": "999"}).status_code == 404
    assert Membership.objects.get(user=bob).monthly_budget_usd is None


def test_budgets_refuse_odd_digits_and_huge_amounts(alice: User, org_a: Organization) -> None:
    as_alice = _as(alice)
    for amount in ("²", "٣", "1e9", "9" * 40, "-1", "NaN"):
        response = as_alice.post("/org/budgets/", {"monthly_budget_usd": amount})
        assert response.status_code == 400, amount
    org_a.refresh_from_db()
    assert org_a.monthly_budget_usd is None
    assert as_alice.post("/org/budgets/", {"monthly_budget_usd": "12.50"}).status_code == 302
    org_a.refresh_from_db()
    assert org_a.monthly_budget_usd == Decimal("12.50")
