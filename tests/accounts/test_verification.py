"""Verified addresses: only a link mailed to the address verifies it; an invitation link an
admin was shown never does, and nobody verifies or claims for someone else."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from django.core import mail, signing
from django.test import Client

from accounts import verification
from accounts.models import AllowedEmailDomain, Membership, Organization, User

pytestmark = [pytest.mark.django_db, pytest.mark.urls("tests.accounts.urls")]

PASSWORD = "a long verification pass phrase 3"
VERIFY_LINK = re.compile(r"https?://[^/\s]+(/accounts/verify-email/([^/\s]+)/)")


def _client(user: User | None = None) -> Client:
    client = Client()
    if user is not None:
        client.force_login(user)
    return client


def _send_link(client: Client) -> tuple[Any, str, str]:
    """Ask for a verification link on the Account page; the response, the mailed path and token."""
    response = client.post("/accounts/verify-email/", follow=True)
    match = VERIFY_LINK.search(str(mail.outbox[-1].body))
    assert match, mail.outbox[-1].body
    return response, match[1], match[2]


def test_accepting_an_invitation_link_the_admin_was_shown_leaves_the_address_unverified(
    alice: User, org_a: Organization
) -> None:
    as_alice = _client(alice)
    as_alice.post("/org/invitations/", {"email": "it-admin@bigcorp.test", "role": "admin"})
    shown = as_alice.session["new_invitation"]["link"]
    path = "/" + shown.split("/", 3)[3]
    # The admin opens the link herself, in a fresh browser, and signs up as the invitee.
    assert Client().post(path, {"password": PASSWORD}).status_code == 302
    it_admin = User.objects.get(email="it-admin@bigcorp.test")
    assert Membership.objects.get(user=it_admin).role == Membership.Role.ADMIN
    assert it_admin.email_verified_at is None
    # ... and cannot claim the company's domain with it.
    response = _client(it_admin).post("/org/allowed-domains/", {"domains": "bigcorp.test"})
    assert response.status_code == 400
    assert "Verify your address it-admin@bigcorp.test first" in response.content.decode()
    assert not AllowedEmailDomain.objects.exists()


def test_the_mailed_link_verifies_the_address_once_and_never_appears_on_a_page(
    alice: User, org_a: Organization
) -> None:
    as_alice = _client(alice)
    assert "Send verification link" in as_alice.get("/account/").content.decode()
    response, path, token = _send_link(as_alice)
    assert mail.outbox[-1].to == ["alice@example.com"]
    page = response.content.decode()
    assert "We emailed a verification link to alice@example.com" in page
    assert token not in page and "/accounts/verify-email/" + token not in page

    # Opening the link shows a button; a GET (a mail scanner) verifies nothing.
    opened = Client().get(path)
    assert opened.status_code == 200 and opened["Referrer-Policy"] == "same-origin"
    alice.refresh_from_db()
    assert alice.email_verified_at is None
    assert Client().post(path).status_code == 200
    alice.refresh_from_db()
    assert alice.email_verified_at is not None
    assert "Verified on" in as_alice.get("/account/").content.decode()

    again = Client().post(path)
    assert again.status_code == 410
    assert "already used" in again.content.decode()


def test_verified_by_the_mailed_link_the_admin_claims_the_domain(
    alice: User, org_a: Organization
) -> None:
    as_alice = _client(alice)
    assert as_alice.post("/org/allowed-domains/", {"domains": "example.com"}).status_code == 400
    _, path, _ = _send_link(as_alice)
    Client().post(path)
    assert as_alice.post("/org/allowed-domains/", {"domains": "example.com"}).status_code == 302
    assert AllowedEmailDomain.objects.get().organization == org_a


def test_an_expired_or_tampered_link_verifies_nothing(
    alice: User, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, path, token = _send_link(_client(alice))
    assert Client().post(path[:-4] + "xyz/").status_code == 410
    monkeypatch.setattr(verification, "VERIFY_LINK_MAX_AGE", -1)
    response = Client().post(path)
    assert response.status_code == 410
    assert "expired" in response.content.decode()
    alice.refresh_from_db()
    assert alice.email_verified_at is None


def test_a_link_for_an_address_the_account_no_longer_has_verifies_nothing(alice: User) -> None:
    _, path, _ = _send_link(_client(alice))
    User.objects.filter(pk=alice.pk).update(email="alice@example.org")
    assert Client().post(path).status_code == 410
    alice.refresh_from_db()
    assert alice.email_verified_at is None


def test_charlie_cannot_verify_alices_address_or_claim_for_her_org(
    alice: User, org_a: Organization, charlie: User
) -> None:
    as_charlie = _client(charlie)
    _, path, token = _send_link(as_charlie)
    assert mail.outbox[-1].to == ["charlie@example.com"]
    # His signature on alice's account and address is refused, and so is a token signed
    # for another purpose.
    alices = json.dumps({"u": alice.pk, "e": alice.email}, separators=(",", ":")).encode()
    tampered = signing.b64_encode(alices).decode() + token[token.index(":"):]
    assert Client().post(f"/accounts/verify-email/{tampered}/").status_code == 410
    forged = signing.dumps({"u": alice.pk, "e": alice.email}, salt="teamchat.signup")
    assert Client().post(f"/accounts/verify-email/{forged}/").status_code == 410
    # Opened in alice's browser, charlie's link verifies charlie, never alice.
    as_alice = _client(alice)
    assert as_alice.post(path).status_code == 200
    alice.refresh_from_db()
    charlie.refresh_from_db()
    assert alice.email_verified_at is None and charlie.email_verified_at is not None
    # Verified, charlie still cannot set allowed domains for alice's org.
    response = as_charlie.post(f"/org/allowed-domains/?org={org_a.pk}", {"domains": "example.com"})
    assert response.status_code == 404
    assert not AllowedEmailDomain.objects.filter(organization=org_a).exists()


def test_verification_mails_are_limited_per_account(alice: User) -> None:
    as_alice = _client(alice)
    for _ in range(verification.VERIFICATION_MAILS_PER_HOUR + 2):
        response = as_alice.post("/accounts/verify-email/", follow=True)
    assert len(mail.outbox) == verification.VERIFICATION_MAILS_PER_HOUR
    assert "Several verification links were sent" in response.content.decode()


def test_signed_out_nobody_can_ask_for_a_verification_mail(alice: User) -> None:
    response = Client().post("/accounts/verify-email/")
    assert response.status_code == 302 and "/accounts/login/" in response["Location"]
    assert not mail.outbox


def test_a_verified_address_is_not_sent_another_link(alice: User) -> None:
    _, path, _ = _send_link(_client(alice))
    Client().post(path)
    response = _client(alice).post("/accounts/verify-email/", follow=True)
    assert "already verified" in response.content.decode()
    assert len(mail.outbox) == 1
