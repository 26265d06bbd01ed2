"""Who may create an account: SIGNUP=invite (default) and open, allowed email domains."""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Any

import pytest
from django.core import mail
from django.test import Client

from accounts import onboarding
from accounts.models import AllowedEmailDomain, Invitation, Membership, Organization, User

pytestmark = [pytest.mark.django_db, pytest.mark.urls("tests.accounts.urls")]

PASSWORD = "a long sign-up pass phrase 7"


def _request(client: Client, email: str, organization: str = "") -> Any:
    return client.post("/accounts/signup/", {"email": email, "organization": organization})


def _link(path_prefix: str) -> str:
    match = re.search(rf"http://testserver({path_prefix}[^\s]+/)", mail.outbox[-1].body)
    assert match, mail.outbox[-1].body
    return match[1]


def test_the_first_account_of_a_fresh_install_signs_up_directly_and_owns_an_unbudgeted_org(
    client: Client,
) -> None:
    response = client.post("/accounts/signup/", {
        "email": "Owner@Example.com", "password": PASSWORD, "organization": "Acme"})
    assert response.status_code == 302
    user = User.objects.get()
    assert user.email == "owner@example.com"
    membership = Membership.objects.get(user=user)
    assert membership.role == Membership.Role.OWNER
    assert membership.organization.monthly_budget_usd is None
    assert not mail.outbox


def test_after_the_first_account_signup_is_closed_and_the_page_says_so(
    client: Client, alice: User
) -> None:
    page = client.get("/accounts/signup/").content.decode()
    assert "ask your admin for an invitation" in page
    assert 'name="password"' not in page
    # Posting the first-account form anyway creates nothing.
    response = client.post("/accounts/signup/", {
        "email": "mallory@evil.example", "password": PASSWORD, "organization": "Mine"})
    assert response.status_code == 200
    assert "Check your email" in response.content.decode()
    assert not User.objects.filter(email="mallory@evil.example").exists()
    assert Organization.objects.count() == 1
    assert not mail.outbox


def test_a_failed_signup_never_reveals_whether_an_account_exists(
    client: Client, alice: User
) -> None:
    known = _request(client, "alice@example.com")
    unknown = _request(Client(), "nobody@example.org")
    strip = lambda r: re.sub(r"\S+@\S+", "", r.content.decode())  # noqa: E731
    assert known.status_code == unknown.status_code == 200
    assert strip(known) == strip(unknown)
    # Only the account's owner learns about it, by email.
    assert [m.to for m in mail.outbox] == [["alice@example.com"]]
    assert "already has an account" in mail.outbox[0].body


def test_open_signup_emails_a_link_and_the_new_org_starts_with_the_new_org_budget(
    client: Client, alice: User, settings: Any
) -> None:
    settings.SIGNUP = "open"
    settings.NEW_ORG_BUDGET_USD = Decimal("5")
    assert _request(client, "dana@example.org", "Dana Co").status_code == 200
    assert not User.objects.filter(email="dana@example.org").exists()
    link = _link("/accounts/signup/finish/")
    assert client.get(link).status_code == 200
    response = client.post(link, {"password": PASSWORD})
    assert response.status_code == 302
    membership = Membership.objects.select_related("organization").get(user__email="dana@example.org")
    assert membership.role == Membership.Role.OWNER
    assert membership.organization.name == "Dana Co"
    assert membership.organization.monthly_budget_usd == Decimal("5.00")
    # The link works once.
    assert Client().post(link, {"password": PASSWORD}).status_code == 410


def test_a_tampered_or_closed_signup_link_creates_nothing(
    client: Client, alice: User, settings: Any
) -> None:
    settings.SIGNUP = "open"
    _request(client, "dana@example.org")
    link = _link("/accounts/signup/finish/")
    assert client.post(link[:-3] + "xx/", {"password": PASSWORD}).status_code == 410
    settings.SIGNUP = "invite"
    assert client.post(link, {"password": PASSWORD}).status_code == 410
    assert not User.objects.filter(email="dana@example.org").exists()


def test_a_weak_password_on_the_signup_link_is_a_form_error_and_the_link_stays_usable(
    client: Client, alice: User, settings: Any
) -> None:
    settings.SIGNUP = "open"
    _request(client, "dana@example.org")
    link = _link("/accounts/signup/finish/")
    response = client.post(link, {"password": "password"})
    assert response.status_code == 400
    assert "too common" in response.content.decode()
    assert client.post(link, {"password": PASSWORD}).status_code == 302


def test_people_at_an_allowed_domain_join_that_org_as_members_after_verifying(
    client: Client, alice: User, org_a: Organization
) -> None:
    as_alice = Client()
    as_alice.force_login(alice)
    response = as_alice.post("/org/allowed-domains/", {"domains": "Example.com"})
    assert response.status_code == 302
    assert list(AllowedEmailDomain.objects.values_list("domain", flat=True)) == ["example.com"]

    assert _request(client, "erin@example.com").status_code == 200
    assert not User.objects.filter(email="erin@example.com").exists()
    link = _link("/invite/")
    response = client.post(link, {"password": PASSWORD})
    assert response.status_code == 302
    membership = Membership.objects.get(user__email="erin@example.com")
    assert membership.organization == org_a
    assert membership.role == Membership.Role.MEMBER
    assert Organization.objects.count() == 1


def test_an_admin_can_only_allow_their_own_domain_and_never_a_public_one(
    alice: User, charlie: User, org_a: Organization
) -> None:
    as_alice = Client()
    as_alice.force_login(alice)
    for domains, error in [("other.org", "your own email domain"),
                           ("gmail.com", "public email provider"),
                           ("not a domain!", "not a domain name")]:
        response = as_alice.post("/org/allowed-domains/", {"domains": domains})
        assert response.status_code == 400
        assert error in response.content.decode()
    assert not AllowedEmailDomain.objects.exists()


def test_a_domain_belongs_to_one_org(alice: User, org_a: Organization, charlie: User) -> None:
    as_alice = Client()
    as_alice.force_login(alice)
    assert as_alice.post("/org/allowed-domains/", {"domains": "example.com"}).status_code == 302
    as_charlie = Client()
    as_charlie.force_login(charlie)  # charlie@example.com owns Other Corp
    response = as_charlie.post("/org/allowed-domains/", {"domains": "example.com"})
    assert response.status_code == 400
    assert "already allowed by another organization" in response.content.decode()
    assert AllowedEmailDomain.objects.get().organization == org_a


def test_bob_as_a_member_cannot_set_allowed_domains(bob: User) -> None:
    as_bob = Client()
    as_bob.force_login(bob)
    assert as_bob.post("/org/allowed-domains/", {"domains": "example.com"}).status_code == 404
    assert not AllowedEmailDomain.objects.exists()


def test_signups_per_client_are_limited(client: Client, alice: User, settings: Any) -> None:
    settings.SIGNUPS_PER_HOUR = 2
    for n in range(2):
        assert _request(client, f"p{n}@example.org").status_code == 200
    response = _request(client, "p3@example.org")
    assert response.status_code == 429
    assert "Too many sign-ups" in response.content.decode()


def test_one_inbox_gets_only_a_few_signup_mails_an_hour(client: Client, alice: User) -> None:
    for _ in range(onboarding.SIGNUP_MAILS_PER_ADDRESS_PER_HOUR + 3):
        _request(Client(), "alice@example.com")
    assert len(mail.outbox) == onboarding.SIGNUP_MAILS_PER_ADDRESS_PER_HOUR


def test_a_newline_in_an_org_name_becomes_a_space(client: Client) -> None:
    client.post("/accounts/signup/", {
        "email": "owner@example.com", "password": PASSWORD,
        "organization": "Acme\r\nBcc: victim@example.com"})
    assert Organization.objects.get().name == "Acme Bcc: victim@example.com"


def test_a_domain_invitation_is_an_ordinary_pending_invitation(
    client: Client, alice: User, org_a: Organization
) -> None:
    AllowedEmailDomain.objects.create(organization=org_a, domain="example.com")
    _request(client, "erin@example.com")
    invitation = Invitation.objects.pending().get()
    assert invitation.email == "erin@example.com" and invitation.invited_by is None
