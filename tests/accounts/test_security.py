"""Accounts as an attacker meets them: alice owns org A, bob is a member there, charlie
owns org B. Every case is a refusal that changes nothing."""

from __future__ import annotations

import re
from typing import Any

import pytest
from django.core import mail
from django.test import Client
from django.utils import timezone

from accounts.models import AllowedEmailDomain, Invitation, Membership, Organization, User

pytestmark = [pytest.mark.django_db, pytest.mark.urls("tests.accounts.urls")]

PASSWORD = "a long enough pass phrase 12"


def _client(user: User | None = None, **kwargs: Any) -> Client:
    client = Client(**kwargs)
    if user is not None:
        client.force_login(user)
    return client


def _invitation_path(admin: User, email: str) -> str:
    _client(admin).post("/org/invitations/", {"email": email, "role": "member"})
    match = re.search(r"http://testserver(/invite/[^/\s]+/)", str(mail.outbox[-1].body))
    assert match
    return match[1]


def test_the_invitation_page_keeps_its_token_out_of_other_sites_but_posts_same_origin(
    alice: User,
) -> None:
    path = _invitation_path(alice, "dana@example.com")
    browser = Client(enforce_csrf_checks=True)
    page = browser.get(path)
    assert page["Referrer-Policy"] == "same-origin"
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.content.decode())
    assert token
    data = {"csrfmiddlewaretoken": token[1], "password": PASSWORD}
    # What a browser sends under no-referrer: refused, as CSRF protection must.
    assert browser.post(path, data, HTTP_ORIGIN="null").status_code == 403
    assert not User.objects.filter(email="dana@example.com").exists()
    # What a browser sends under same-origin: accepted.
    accepted = browser.post(path, data, HTTP_ORIGIN="http://testserver")
    assert accepted.status_code == 302
    assert Membership.objects.filter(user__email="dana@example.com").count() == 1


def test_a_cross_site_post_to_the_invitation_is_refused(alice: User) -> None:
    path = _invitation_path(alice, "dana@example.com")
    browser = Client(enforce_csrf_checks=True)
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"',
                      browser.get(path).content.decode())
    assert token
    refused = browser.post(path, {"csrfmiddlewaretoken": token[1], "password": PASSWORD},
                           HTTP_ORIGIN="https://evil.example")
    assert refused.status_code == 403
    assert not User.objects.filter(email="dana@example.com").exists()


def test_charlie_cannot_accept_an_invitation_meant_for_someone_else(
    alice: User, charlie: User, org_a: Organization
) -> None:
    path = _invitation_path(alice, "dana@example.com")
    response = _client(charlie).post(path)
    assert response.status_code == 403
    assert not Membership.objects.filter(user=charlie, organization=org_a).exists()
    assert Invitation.objects.pending().count() == 1


def test_an_invitation_never_adds_anyone_to_another_org(
    alice: User, charlie: User, org_a: Organization
) -> None:
    path = _invitation_path(alice, "dana@example.com")
    other_org = Membership.objects.get(user=charlie).organization
    signed_up = Client()
    signed_up.post(path + f"?org={other_org.pk}", {"password": PASSWORD,
                                                    "organization": str(other_org.pk)})
    dana = User.objects.get(email="dana@example.com")
    assert list(Membership.objects.filter(user=dana).values_list("organization", flat=True)) == [
        org_a.pk]


def test_bob_as_a_member_cannot_invite_resend_or_withdraw(alice: User, bob: User) -> None:
    _invitation_path(alice, "dana@example.com")
    invitation = Invitation.objects.get()
    sent = len(mail.outbox)
    as_bob = _client(bob)
    assert as_bob.post("/org/invitations/", {"email": "eve@example.com",
                                             "role": "admin"}).status_code == 404
    assert as_bob.post(f"/org/invitations/{invitation.pk}/resend/").status_code == 404
    assert as_bob.post(f"/org/invitations/{invitation.pk}/revoke/").status_code == 404
    assert len(mail.outbox) == sent
    assert list(Invitation.objects.pending()) == [invitation]


def test_nobody_can_be_invited_straight_in_as_an_owner(alice: User) -> None:
    response = _client(alice).post("/org/invitations/", {"email": "eve@example.com",
                                                         "role": "owner"})
    assert response.status_code == 400
    assert not Invitation.objects.exists()


def test_charlie_cannot_claim_alices_domain_to_capture_her_colleagues(
    alice: User, charlie: User, org_a: Organization
) -> None:
    # charlie@example.com may list example.com only while no other org has it, even with
    # both addresses verified.
    User.objects.filter(pk__in=[alice.pk, charlie.pk]).update(email_verified_at=timezone.now())
    assert _client(alice).post("/org/allowed-domains/", {"domains": "example.com"}).status_code == 302
    assert _client(charlie).post("/org/allowed-domains/", {"domains": "example.com"}).status_code == 400
    Client().post("/accounts/signup/", {"email": "erin@example.com"})
    path = re.search(r"https?://[^/\s]+(/accounts/signup/finish/[^\s]+/)", str(mail.outbox[-1].body))
    assert path
    assert Client().post(path[1], {"password": PASSWORD}).status_code == 302
    assert Membership.objects.get(user__email="erin@example.com").organization == org_a
    assert AllowedEmailDomain.objects.get().organization == org_a


def test_a_stranger_cannot_become_the_first_owner_once_the_install_has_one(alice: User) -> None:
    Client().post("/accounts/signup/", {"email": "eve@evil.example", "password": PASSWORD,
                                        "organization": "Eve Inc"})
    assert not User.objects.filter(email="eve@evil.example").exists()
    assert Organization.objects.count() == 1


def test_open_signup_orgs_are_budgeted_so_strangers_cannot_spend_without_limit(
    alice: User, settings: Any
) -> None:
    settings.SIGNUP = "open"
    Client().post("/accounts/signup/", {"email": "eve@evil.example", "organization": "Eve Inc"})
    link = re.search(r"http://testserver(/accounts/signup/finish/[^\s]+/)", str(mail.outbox[-1].body))
    assert link
    Client().post(link[1], {"password": PASSWORD})
    org = Organization.objects.get(name="Eve Inc")
    assert org.monthly_budget_usd == settings.NEW_ORG_BUDGET_USD
