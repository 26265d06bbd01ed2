from __future__ import annotations

from decimal import Decimal

import pytest
from django.test import Client
from django.utils import timezone

from accounts.models import Invitation, Membership, Organization, User
from billing.models import BudgetRequest, Notification, Reservation, UsagePeriod
from billing.quotas import period_start
from tests.accounts.factories import conversation_for, make_answer

pytestmark = [pytest.mark.django_db, pytest.mark.urls("tests.accounts.urls")]


def test_every_org_and_budget_model_has_a_working_admin_list(
    client: Client, alice: User, bob: User, org_a: Organization
) -> None:
    staff = User.objects.create_superuser(email="root@example.com", password="x")
    row = UsagePeriod.objects.create(organization=org_a, period_start=period_start(org_a))
    member_row = UsagePeriod.objects.create(organization=org_a, user=bob,
                                            period_start=period_start(org_a))
    answer = make_answer(conversation_for(bob, org_a), billed=False)
    Reservation.objects.create(message=answer, org_period=row, member_period=member_row,
                               amount_usd=Decimal("0.1"))
    BudgetRequest.objects.create(membership=Membership.objects.get(user=bob), note="more")
    Notification.objects.create(user=alice, organization=org_a, text="hello")
    Invitation.objects.create(organization=org_a, email="dana@example.com", token_hash="2" * 64,
                              expires_at=timezone.now())
    client.force_login(staff)
    for model, shown in [("billing/usageperiod", "Acme"),
                         ("billing/reservation", f"reservation for message {answer.pk}"),
                         ("billing/budgetrequest", "bob@example.com in Acme"),
                         ("billing/notification", "hello"),
                         ("accounts/invitation", "dana@example.com")]:
        response = client.get(f"/admin/{model}/")
        assert response.status_code == 200, model
        assert shown in response.content.decode(), model
    assert client.get("/admin/accounts/invitation/add/").status_code == 403
