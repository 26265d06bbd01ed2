from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from accounts import members
from accounts.models import Invitation, Membership, Organization, User
from billing.models import BudgetRequest
from tests.accounts.factories import (
    add_members,
    as_text,
    conversation_for,
    make_answer,
    reseed_model_profiles,
)
from tests.conftest import make_user

pytestmark = [pytest.mark.django_db, pytest.mark.urls("tests.accounts.urls")]

ADMIN_PAGES = ["/org/", "/org/usage/", "/org/usage.csv"]


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


def _membership(user: User, organization: Organization | None = None) -> Membership:
    memberships = Membership.objects.filter(user=user)
    if organization is not None:
        memberships = memberships.filter(organization=organization)
    return memberships.get()


def test_the_members_page_lists_everyone_with_their_role(
    client: Client, alice: User, bob: User
) -> None:
    html = as_text(_login(client, alice).get("/org/"))
    assert "<h1>Members</h1>" in html
    assert "alice@example.com" in html and "bob@example.com" in html
    assert "Usage &amp; budgets" in html
    label = f'<label for="id_m{_membership(bob).pk}_monthly_budget_usd">'
    assert f"{label}Member monthly budget (USD)</label>" in html


def test_anonymous_visitors_are_sent_to_sign_in(client: Client) -> None:
    for path in [*ADMIN_PAGES, "/notifications/", "/org/budget-request/"]:
        response = client.get(path)
        assert response.status_code == 302
        assert response["Location"].startswith("/accounts/login/")


def test_bob_as_a_plain_member_gets_404_on_every_admin_page(
    client: Client, alice: User, bob: User, org_a: Organization
) -> None:
    _login(client, bob)
    target = _membership(alice).pk
    for path in [*ADMIN_PAGES, f"/org/?org={org_a.pk}", f"/org/usage/?org={org_a.pk}"]:
        assert client.get(path).status_code == 404, path
    posts = {
        "/org/budgets/": {"monthly_budget_usd": "1"},
        "/org/invitations/": {"email": "eve@example.com", "role": "member"},
        f"/org/members/{target}/role/": {"role": "member"},
        f"/org/members/{target}/budget/": {"monthly_budget_usd": "1"},
        f"/org/members/{target}/remove/": {},
    }
    for path, data in posts.items():
        assert client.post(path, data).status_code == 404, path
    org_a.refresh_from_db()
    assert org_a.monthly_budget_usd is None
    assert _membership(alice).role == "owner"
    assert _membership(alice).monthly_budget_usd is None


def test_charlie_gets_404_for_every_id_of_alices_org(
    client: Client, alice: User, bob: User, org_a: Organization, charlie: User
) -> None:
    bob_membership = _membership(bob)
    invitation = Invitation.objects.create(
        organization=org_a, email="dana@example.com", token_hash="0" * 64,
        expires_at="2999-01-01T00:00:00Z",
    )
    budget_request = BudgetRequest.objects.create(membership=bob_membership, note="please")
    _login(client, charlie)
    for path in [f"/org/?org={org_a.pk}", f"/org/usage/?org={org_a.pk}",
                 f"/org/usage.csv?org={org_a.pk}", f"/org/budget-request/?org={org_a.pk}"]:
        assert client.get(path).status_code == 404, path
    posts = {
        f"/org/members/{bob_membership.pk}/role/": {"role": "admin"},
        f"/org/members/{bob_membership.pk}/budget/": {"monthly_budget_usd": "99"},
        f"/org/members/{bob_membership.pk}/remove/": {},
        f"/org/invitations/{invitation.pk}/revoke/": {},
        f"/org/budget-requests/{budget_request.pk}/approve/": {"new_budget_usd": "99"},
        f"/org/budget-requests/{budget_request.pk}/decline/": {},
        f"/org/budgets/?org={org_a.pk}": {"monthly_budget_usd": "1"},
        f"/org/invitations/?org={org_a.pk}": {"email": "eve@example.com", "role": "admin"},
        "/org/budget-request/": {"organization": org_a.pk, "note": "more"},
    }
    for path, data in posts.items():
        assert client.post(path, data).status_code == 404, path
    bob_membership.refresh_from_db()
    assert (bob_membership.role, bob_membership.monthly_budget_usd) == ("member", None)
    invitation.refresh_from_db()
    assert invitation.revoked_at is None
    budget_request.refresh_from_db()
    assert budget_request.status == "pending"
    assert BudgetRequest.objects.count() == 1
    org_a.refresh_from_db()
    assert org_a.monthly_budget_usd is None


def test_charlie_sees_only_his_own_org_on_his_org_page(
    client: Client, alice: User, bob: User, charlie: User
) -> None:
    html = as_text(_login(client, charlie).get("/org/"))
    assert "charlie@example.com" in html
    assert "bob@example.com" not in html and "alice@example.com" not in html


def test_alice_makes_bob_an_admin_and_then_he_sees_the_org_pages(
    client: Client, alice: User, bob: User
) -> None:
    response = _login(client, alice).post(f"/org/members/{_membership(bob).pk}/role/",
                                          {"role": "admin"})
    assert response.status_code == 302
    assert _membership(bob).role == "admin"
    other = _login(Client(), bob)
    assert other.get("/org/").status_code == 200
    assert other.get("/org/usage/").status_code == 200


def test_it_refuses_to_demote_the_last_owner(client: Client, alice: User, bob: User) -> None:
    response = _login(client, alice).post(f"/org/members/{_membership(alice).pk}/role/",
                                          {"role": "member"})
    assert response.status_code == 400
    assert "only owner" in as_text(response)
    assert _membership(alice).role == "owner"


def test_it_refuses_to_remove_the_last_owner(client: Client, alice: User, bob: User) -> None:
    response = _login(client, alice).post(f"/org/members/{_membership(alice).pk}/remove/")
    assert response.status_code == 400
    assert "Make someone else an owner first" in as_text(response)
    assert Membership.objects.filter(user=alice).exists()


def test_with_a_second_owner_the_first_may_step_down(
    client: Client, alice: User, bob: User
) -> None:
    _login(client, alice)
    client.post(f"/org/members/{_membership(bob).pk}/role/", {"role": "owner"})
    response = client.post(f"/org/members/{_membership(alice).pk}/role/", {"role": "member"})
    assert response.status_code == 302
    assert (_membership(alice).role, _membership(bob).role) == ("member", "owner")


def test_an_admin_cannot_change_or_remove_an_owner_or_make_one(
    client: Client, alice: User, bob: User, org_a: Organization
) -> None:
    Membership.objects.filter(user=bob).update(role="admin")
    dana = make_user("dana@example.com", organization=org_a)
    _login(client, bob)
    alice_id, dana_id = _membership(alice).pk, _membership(dana).pk
    for path, data, text in [
        (f"/org/members/{alice_id}/role/", {"role": "member"}, "Only an owner can change or remove"),
        (f"/org/members/{alice_id}/remove/", {}, "Only an owner can change or remove"),
        (f"/org/members/{dana_id}/role/", {"role": "owner"}, "Only an owner can make someone an owner"),
    ]:
        response = client.post(path, data)
        assert response.status_code == 400
        assert text in as_text(response)
    assert (_membership(alice).role, _membership(dana).role) == ("owner", "member")


def test_it_refuses_an_unknown_role(client: Client, alice: User, bob: User) -> None:
    response = _login(client, alice).post(f"/org/members/{_membership(bob).pk}/role/",
                                          {"role": "superuser"})
    assert response.status_code == 400
    assert "Choose a role" in as_text(response)
    assert _membership(bob).role == "member"


def test_alice_removes_bob_and_he_loses_the_org(
    client: Client, alice: User, bob: User, org_a: Organization
) -> None:
    conversation_for(bob, org_a)
    bob_id = _membership(bob).pk
    response = _login(client, alice).post(f"/org/members/{bob_id}/remove/")
    assert response.status_code == 302
    assert not Membership.objects.filter(user=bob).exists()
    assert f'id="member-{bob_id}"' not in as_text(client.get("/org/"))


def test_alice_gives_bob_his_own_budget_and_empty_returns_to_the_default(
    client: Client, alice: User, bob: User
) -> None:
    path = f"/org/members/{_membership(bob).pk}/budget/"
    _login(client, alice)
    assert client.post(path, {"monthly_budget_usd": "12.50"}).status_code == 302
    assert _membership(bob).monthly_budget_usd == Decimal("12.50")
    assert client.post(path, {"monthly_budget_usd": ""}).status_code == 302
    assert _membership(bob).monthly_budget_usd is None


@pytest.mark.parametrize(("value", "text"), [
    ("-1", "A budget cannot be negative"),
    ("ten dollars", "Enter an amount in US dollars"),
    ("1.234", "at most two decimal places"),
    ("NaN", "Enter an amount in US dollars"),
    ("1e100", "Enter an amount in US dollars"),
    ("9" * 40, "too large"),
    ("٣", "Enter an amount in US dollars"),
    ("²", "Enter an amount in US dollars"),
])
def test_it_refuses_a_bad_member_budget_and_changes_nothing(
    client: Client, alice: User, bob: User, value: str, text: str
) -> None:
    Membership.objects.filter(user=bob).update(monthly_budget_usd=Decimal("5"))
    response = _login(client, alice).post(f"/org/members/{_membership(bob).pk}/budget/",
                                          {"monthly_budget_usd": value})
    assert response.status_code == 400
    assert text in as_text(response)
    assert _membership(bob).monthly_budget_usd == Decimal("5")


def test_admins_see_spend_but_never_what_members_wrote(
    client: Client, alice: User, bob: User, org_a: Organization
) -> None:
    make_answer(conversation_for(bob, org_a), cost="0.25", content="Bob's private draft")
    _login(client, alice)
    for path in ADMIN_PAGES:
        text = as_text(client.get(path))
        assert "Bob's private draft" not in text
        assert "Quarterly plan" not in text  # not even conversation titles
    assert "$0.2500" in as_text(client.get("/org/usage/"))


def test_the_members_page_takes_the_same_number_of_queries_for_3_and_30_members(
    client: Client, alice: User, org_a: Organization
) -> None:
    _login(client, alice)
    Invitation.objects.create(organization=org_a, email="x@example.com", token_hash="1" * 64,
                              expires_at="2999-01-01T00:00:00Z", invited_by=alice)
    add_members(org_a, 2, prefix="few")
    client.get("/org/")  # warm the session
    with CaptureQueriesContext(connection) as few:
        assert client.get("/org/").status_code == 200
    add_members(org_a, 27, prefix="many")
    with CaptureQueriesContext(connection) as many:
        html = as_text(client.get("/org/"))
    assert "many26@example.com" in html
    assert len(many) == len(few), [q["sql"][:120] for q in many]


# Two real connections need committed data, hence a transactional test (its closing flush
# also removes migration-seeded rows; fixtures that need them re-seed, see tests/conversations).
@pytest.mark.django_db(transaction=True)
def test_two_owners_demoting_each_other_at_once_leave_one_owner(
    org_a: Organization, alice: User, bob: User, monkeypatch: pytest.MonkeyPatch
) -> None:
    Membership.objects.filter(user=bob).update(role="owner")
    alice_m, bob_m = _membership(alice), _membership(bob)
    start, checked = threading.Barrier(2), threading.Barrier(2)
    check = members._refuse_losing_the_last_owner

    def check_then_wait_for_the_other(target: Membership) -> None:
        check(target)
        # Without the org lock both threads get here and both demote. With it, the other
        # thread is still waiting for the lock, so this wait times out and we go on alone.
        with contextlib.suppress(threading.BrokenBarrierError):
            checked.wait(timeout=1)

    monkeypatch.setattr(members, "_refuse_losing_the_last_owner", check_then_wait_for_the_other)
    outcomes: list[str] = []

    def demote(by: Membership, target: Membership) -> None:
        start.wait()
        try:
            members.change_role(by=by, target=target, role="member")
            outcomes.append("demoted")
        except members.MemberChangeRefused:
            outcomes.append("refused")
        finally:
            connection.close()

    threads = [threading.Thread(target=demote, args=(alice_m, bob_m)),
               threading.Thread(target=demote, args=(bob_m, alice_m))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=20)
    assert sorted(outcomes) == ["demoted", "refused"]
    assert Membership.objects.filter(organization=org_a, role="owner").count() == 1
