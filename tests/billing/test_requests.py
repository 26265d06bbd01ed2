from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
from django.core import mail
from django.db import connection
from django.test import Client

from accounts.models import Membership, Organization, User
from billing import requests
from billing.models import BudgetRequest, Notification
from tests.accounts.factories import as_text, reseed_model_profiles
from tests.conftest import make_user

pytestmark = [pytest.mark.django_db, pytest.mark.urls("tests.accounts.urls")]

JSON: dict[str, Any] = {"HTTP_ACCEPT": "application/json"}


@pytest.fixture(scope="module", autouse=True)
def _seed_data_survives_the_transactional_test(
    django_db_setup: None, django_db_blocker: Any
) -> Iterator[None]:
    yield
    with django_db_blocker.unblock():
        reseed_model_profiles()


def _login(client: Client, user: User) -> Client:
    client.force_login(user)
    return client


def _bob(bob: User) -> Membership:
    return Membership.objects.select_related("organization", "user").get(user=bob)


@pytest.fixture
def pending(bob: User, org_a: Organization) -> BudgetRequest:
    Membership.objects.filter(user=bob).update(monthly_budget_usd=Decimal("5"))
    return requests.request_more_budget(membership=_bob(bob), note="Migrating the test suite")


def test_bob_asks_for_more_and_the_admins_get_a_notification_and_an_email(
    client: Client, alice: User, bob: User, org_a: Organization
) -> None:
    carol = make_user("carol@example.com", organization=org_a, role=Membership.Role.ADMIN)
    response = _login(client, bob).post("/org/budget-request/", {"note": "Big refactor"}, **JSON)
    assert response.status_code == 200
    assert response.json()["ok"] is True
    budget_request = BudgetRequest.objects.get()
    assert (budget_request.membership.user, budget_request.note, budget_request.status) == (
        bob, "Big refactor", "pending")
    notified = Notification.objects.filter(organization=org_a)
    assert sorted(n.user.email for n in notified) == [alice.email, carol.email]
    assert all("bob@example.com" in n.text and "Big refactor" in n.text for n in notified)
    assert sorted(mail.outbox[-1].to) == [alice.email, carol.email]


def test_without_json_the_request_redirects_back_to_the_page_it_came_from(
    client: Client, alice: User, bob: User
) -> None:
    _login(client, bob)
    response = client.post("/org/budget-request/", {"note": ""},
                           HTTP_REFERER="http://testserver/c/12/")
    assert (response.status_code, response["Location"]) == (302, "http://testserver/c/12/")
    assert BudgetRequest.objects.count() == 1


def test_it_never_redirects_back_to_another_site(client: Client, alice: User, bob: User) -> None:
    response = _login(client, bob).post("/org/budget-request/", {},
                                        HTTP_REFERER="https://evil.example/phish")
    assert response["Location"] == "/"


def test_it_refuses_a_second_pending_request_with_a_clear_message(
    client: Client, alice: User, bob: User, pending: BudgetRequest
) -> None:
    _login(client, bob)
    response = client.post("/org/budget-request/", {"note": "again"}, **JSON)
    assert response.status_code == 409
    assert response.json()["ok"] is False
    assert "already asked for more budget" in response.json()["error"]
    page = client.post("/org/budget-request/", {"note": "again"})
    assert page.status_code == 409
    assert "already asked for more budget" in as_text(page)
    assert BudgetRequest.objects.count() == 1


def test_a_member_may_ask_again_once_the_first_request_is_answered(
    bob: User, alice: User, pending: BudgetRequest
) -> None:
    requests.decline_budget_request(by=Membership.objects.get(user=alice), budget_request=pending)
    requests.request_more_budget(membership=_bob(bob), note="")
    assert BudgetRequest.objects.filter(status="pending").count() == 1


def test_it_refuses_a_note_longer_than_2000_characters(client: Client, alice: User, bob: User) -> None:
    response = _login(client, bob).post("/org/budget-request/", {"note": "x" * 2001}, **JSON)
    assert response.status_code == 400
    assert "2000" in response.json()["error"]
    assert not BudgetRequest.objects.exists()


def test_the_request_page_offers_a_form_for_people_without_javascript(
    client: Client, alice: User, bob: User
) -> None:
    html = as_text(_login(client, bob).get("/org/budget-request/"))
    assert "<h1>Request more budget</h1>" in html
    assert ">Request more</button>" in html


def test_the_usage_page_lists_pending_requests_with_current_plus_the_same_again(
    client: Client, alice: User, pending: BudgetRequest
) -> None:
    html = as_text(_login(client, alice).get("/org/usage/"))
    assert "Migrating the test suite" in html
    field = re.search(rf'<input[^>]*id="id_r{pending.pk}_new_budget_usd"[^>]*>', html)
    assert field and 'value="10.00"' in field[0]
    assert ">Approve<" in html and ">Decline<" in html


def test_the_suggestion_for_a_zero_budget_is_a_fallback_amount(bob: User) -> None:
    Membership.objects.filter(user=bob).update(monthly_budget_usd=Decimal("0"))
    assert requests.suggested_budget(_bob(bob)) == requests.FALLBACK_SUGGESTION


def test_alice_approves_and_bob_gets_the_new_budget_and_a_notification(
    client: Client, alice: User, bob: User, pending: BudgetRequest
) -> None:
    response = _login(client, alice).post(f"/org/budget-requests/{pending.pk}/approve/",
                                          {"new_budget_usd": "10"})
    assert response.status_code == 302
    pending.refresh_from_db()
    assert (pending.status, pending.decided_by, pending.new_budget_usd) == (
        "approved", alice, Decimal("10"))
    assert _bob(bob).monthly_budget_usd == Decimal("10")
    note = Notification.objects.get(user=bob)
    assert "approved" in note.text and "$10.00" in note.text
    assert mail.outbox[-1].to == [bob.email]


def test_alice_declines_and_bob_keeps_his_budget_and_is_told(
    client: Client, alice: User, bob: User, pending: BudgetRequest
) -> None:
    response = _login(client, alice).post(f"/org/budget-requests/{pending.pk}/decline/")
    assert response.status_code == 302
    pending.refresh_from_db()
    assert pending.status == "declined"
    assert _bob(bob).monthly_budget_usd == Decimal("5")
    assert "declined" in Notification.objects.get(user=bob).text


def test_an_answered_request_cannot_be_answered_again(
    client: Client, alice: User, bob: User, pending: BudgetRequest
) -> None:
    _login(client, alice)
    client.post(f"/org/budget-requests/{pending.pk}/decline/")
    response = client.post(f"/org/budget-requests/{pending.pk}/approve/", {"new_budget_usd": "50"})
    assert response.status_code == 409
    assert "already answered" in as_text(response)
    assert _bob(bob).monthly_budget_usd == Decimal("5")
    pending.refresh_from_db()
    assert pending.status == "declined"


def test_the_losing_admin_of_a_simultaneous_answer_changes_nothing(
    alice: User, bob: User, org_a: Organization, pending: BudgetRequest
) -> None:
    stale = BudgetRequest.objects.select_related("membership__organization", "membership__user").get()
    requests.approve_budget_request(by=Membership.objects.get(user=alice), budget_request=pending,
                                    new_budget_usd=Decimal("8"))
    with pytest.raises(requests.BudgetRequestRefused):
        requests.decline_budget_request(by=Membership.objects.get(user=alice), budget_request=stale)
    assert _bob(bob).monthly_budget_usd == Decimal("8")
    assert BudgetRequest.objects.get().status == "approved"


@pytest.mark.parametrize(("value", "text"), [
    ("-3", "cannot be negative"), ("", "Enter the new monthly budget"), ("abc", "Enter an amount"),
])
def test_it_refuses_a_bad_approval_amount_and_changes_nothing(
    client: Client, alice: User, bob: User, pending: BudgetRequest, value: str, text: str
) -> None:
    response = _login(client, alice).post(f"/org/budget-requests/{pending.pk}/approve/",
                                          {"new_budget_usd": value})
    assert response.status_code == 400
    assert text in as_text(response)
    pending.refresh_from_db()
    assert pending.status == "pending"
    assert _bob(bob).monthly_budget_usd == Decimal("5")


def test_bob_cannot_answer_his_own_request(client: Client, bob: User, pending: BudgetRequest) -> None:
    _login(client, bob)
    assert client.post(f"/org/budget-requests/{pending.pk}/approve/",
                       {"new_budget_usd": "1000"}).status_code == 404
    assert client.post(f"/org/budget-requests/{pending.pk}/decline/").status_code == 404
    pending.refresh_from_db()
    assert pending.status == "pending"


def test_an_admin_of_another_org_cannot_answer(
    client: Client, charlie: User, bob: User, pending: BudgetRequest
) -> None:
    _login(client, charlie)
    for path in [f"/org/budget-requests/{pending.pk}/approve/",
                 f"/org/budget-requests/{pending.pk}/decline/",
                 "/org/budget-requests/999999/approve/"]:
        assert client.post(path, {"new_budget_usd": "1000"}).status_code == 404
    pending.refresh_from_db()
    assert pending.status == "pending"
    assert _bob(bob).monthly_budget_usd == Decimal("5")


def test_charlie_cannot_file_a_request_in_alices_org(
    client: Client, charlie: User, org_a: Organization, alice: User
) -> None:
    response = _login(client, charlie).post("/org/budget-request/",
                                            {"organization": org_a.pk, "note": "x"}, **JSON)
    assert response.status_code == 404
    assert response.json()["ok"] is False
    assert not BudgetRequest.objects.exists()
    assert not Notification.objects.filter(user=alice).exists()


@pytest.mark.django_db(transaction=True)
def test_a_double_clicked_request_files_only_one(alice: User, bob: User) -> None:
    membership = _bob(bob)
    start = threading.Barrier(4)
    outcomes: list[str] = []

    def ask() -> None:
        start.wait()
        try:
            requests.request_more_budget(membership=membership, note="hurry")
            outcomes.append("filed")
        except requests.BudgetRequestRefused:
            outcomes.append("refused")
        finally:
            connection.close()

    threads = [threading.Thread(target=ask) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=20)
    assert sorted(outcomes) == ["filed", "refused", "refused", "refused"]
    assert BudgetRequest.objects.filter(status="pending").count() == 1
