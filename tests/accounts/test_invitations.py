from __future__ import annotations

import datetime as dt
import hashlib
import re

import pytest
from django.core import mail
from django.test import Client
from django.utils import timezone

from accounts import invitations
from accounts.models import Invitation, Membership, Organization, User

pytestmark = [pytest.mark.django_db, pytest.mark.urls("tests.accounts.urls")]


def _invite(client: Client, email: str, role: str = "member", org: Organization | None = None) -> str:
    """Send an invitation through the page and return the link's path from the email."""
    url = "/org/invitations/" + (f"?org={org.pk}" if org else "")
    response = client.post(url, {"email": email, "role": role})
    assert response.status_code == 302, response.content.decode()[:2000]
    match = re.search(r"http://testserver(/invite/[^/\s]+/)", str(mail.outbox[-1].body))
    assert match
    return match[1]


def _membership(user: User) -> Membership:
    return Membership.objects.get(user=user)


@pytest.fixture
def as_alice(client: Client, alice: User) -> Client:
    client.force_login(alice)
    return client


def test_an_owner_invites_by_email_and_only_the_token_hash_is_stored(
    as_alice: Client, org_a: Organization
) -> None:
    path = _invite(as_alice, "dana@example.com")
    token = path.split("/")[2]
    invitation = Invitation.objects.get()
    assert mail.outbox[-1].to == ["dana@example.com"]
    assert invitation.organization == org_a
    assert invitation.token_hash == hashlib.sha256(token.encode()).hexdigest()
    assert token not in str(Invitation.objects.values().get())
    assert len(token) >= 43  # token_urlsafe(32): 256 bits
    assert dt.timedelta(days=6, hours=23) < invitation.expires_at - timezone.now() <= dt.timedelta(days=7)


def test_a_new_person_signs_up_through_the_link_and_joins_that_org_instead_of_a_new_one(
    as_alice: Client, org_a: Organization
) -> None:
    path = _invite(as_alice, "dana@example.com", role="admin")
    visitor = Client()
    page = visitor.get(path)
    html = page.content.decode()
    assert page.status_code == 200
    assert re.search(r'<label for="id_email">Email</label>', html)
    assert re.search(r'<input[^>]*name="email"[^>]*value="dana@example.com"[^>]*disabled', html)
    assert '<label for="id_password">Password</label>' in html
    assert "/accounts/login/?next=" in html

    response = visitor.post(path, {"email": "mallory@example.com", "password": "a long pass phrase 42"})
    assert response.status_code == 302
    dana = User.objects.get(email="dana@example.com")  # the posted address is ignored
    assert not User.objects.filter(email="mallory@example.com").exists()
    assert [(m.organization, m.role) for m in dana.memberships.all()] == [(org_a, "admin")]
    assert Organization.objects.count() == 1
    assert visitor.session["organization_id"] == org_a.pk
    assert Invitation.objects.get().accepted_by == dana


def test_it_refuses_a_weak_password_on_sign_up_and_changes_nothing(
    as_alice: Client, org_a: Organization
) -> None:
    path = _invite(as_alice, "dana@example.com")
    response = Client().post(path, {"password": "123"})
    assert response.status_code == 400
    assert "too short" in response.content.decode()
    assert not User.objects.filter(email="dana@example.com").exists()
    assert Invitation.objects.get().accepted_at is None


def test_a_signed_in_person_accepting_gains_a_second_organization(
    as_alice: Client, org_a: Organization, charlie: User
) -> None:
    path = _invite(as_alice, "charlie@example.com")
    visitor = Client()
    visitor.force_login(charlie)
    assert "Accept invitation" in visitor.get(path).content.decode()
    response = visitor.post(path)
    assert response.status_code == 302
    assert sorted(m.organization.name for m in charlie.memberships.all()) == ["Acme", "Other Corp"]
    assert visitor.session["organization_id"] == org_a.pk


def test_a_signed_out_person_with_an_account_is_sent_to_sign_in(
    as_alice: Client, charlie: User
) -> None:
    path = _invite(as_alice, "charlie@example.com")
    html = Client().get(path).content.decode()
    assert "Sign in to accept" in html
    assert 'name="password"' not in html
    response = Client().post(path, {"password": "a long pass phrase 42"})
    assert response.status_code == 400
    assert "already exists" in response.content.decode()
    assert charlie.memberships.count() == 1


def test_it_refuses_an_expired_invitation_and_changes_nothing(
    as_alice: Client, charlie: User
) -> None:
    path = _invite(as_alice, "charlie@example.com")
    Invitation.objects.update(expires_at=timezone.now() - dt.timedelta(seconds=1))
    visitor = Client()
    visitor.force_login(charlie)
    response = visitor.post(path)
    assert response.status_code == 410
    assert "expired" in response.content.decode()
    assert charlie.memberships.count() == 1
    assert Invitation.objects.get().accepted_at is None


def test_it_refuses_a_reused_invitation(as_alice: Client, charlie: User) -> None:
    path = _invite(as_alice, "dana@example.com")
    assert Client().post(path, {"password": "a long pass phrase 42"}).status_code == 302
    second = Client().post(path, {"password": "another pass phrase 42"})
    assert second.status_code == 410
    assert "already been used" in second.content.decode()
    assert User.objects.filter(email="dana@example.com").count() == 1


def test_the_losing_side_of_a_double_accept_changes_nothing(
    as_alice: Client, charlie: User, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _invite(as_alice, "charlie@example.com")
    token = path.split("/")[2]
    stale = invitations.find_invitation(token)  # what the second tab read
    invitations.accept_invitation(token=token, user=charlie)
    Membership.objects.filter(user=charlie, organization=stale.organization).delete()
    monkeypatch.setattr(invitations, "find_invitation", lambda _token: stale)
    with pytest.raises(invitations.InvitationInvalid, match="already been used"):
        invitations.accept_invitation(token=token, user=charlie)
    assert not Membership.objects.filter(user=charlie, organization=stale.organization).exists()


def test_it_refuses_a_garbage_token_with_a_clear_page(charlie: User) -> None:
    for token in ["nope", "x" * 43, "a" * 500]:
        response = Client().get(f"/invite/{token}/")
        assert response.status_code == 404
        assert "not valid" in response.content.decode()
    # A NUL can never be a token (nor stored anywhere): refused before any lookup.
    assert Client().get("/invite/%00/").status_code == 400
    visitor = Client()
    visitor.force_login(charlie)
    assert visitor.post("/invite/garbage/").status_code == 404
    assert charlie.memberships.count() == 1


def test_it_refuses_a_signed_in_person_with_another_address(
    as_alice: Client, charlie: User
) -> None:
    path = _invite(as_alice, "dana@example.com")
    visitor = Client()
    visitor.force_login(charlie)
    page = visitor.get(path).content.decode()
    assert "signed in as charlie@example.com" in page
    response = visitor.post(path)
    assert response.status_code == 403
    assert charlie.memberships.count() == 1
    assert Invitation.objects.get().accepted_at is None


def test_an_invitation_only_ever_joins_its_own_org(
    client: Client, alice: User, org_a: Organization, charlie: User
) -> None:
    client.force_login(charlie)
    other_org = charlie.memberships.get().organization
    path = _invite(client, "dana@example.com")
    response = Client().post(path, {"password": "a long pass phrase 42", "organization": org_a.pk})
    assert response.status_code == 302
    dana = User.objects.get(email="dana@example.com")
    assert [m.organization for m in dana.memberships.all()] == [other_org]


def test_it_refuses_to_invite_into_another_org_named_in_the_url(
    client: Client, org_a: Organization, charlie: User
) -> None:
    client.force_login(charlie)
    response = client.post(f"/org/invitations/?org={org_a.pk}", {"email": "eve@example.com"})
    assert response.status_code == 404
    assert not Invitation.objects.exists()
    assert not mail.outbox


def test_bob_as_a_plain_member_cannot_invite(client: Client, bob: User) -> None:
    client.force_login(bob)
    response = client.post("/org/invitations/", {"email": "eve@example.com", "role": "member"})
    assert response.status_code == 404
    assert not Invitation.objects.exists()


def test_it_refuses_bad_invitation_input_with_a_clear_error(as_alice: Client, bob: User) -> None:
    cases = [
        ({"email": "not an address", "role": "member"}, "Enter a valid email address."),
        ({"email": "eve@example.com", "role": "owner"}, "Invite people as a member or an admin."),
        ({"email": "bob@example.com", "role": "member"}, "already a member"),
    ]
    for data, text in cases:
        response = as_alice.post("/org/invitations/", data)
        assert response.status_code == 400
        assert text in response.content.decode()
    assert not Invitation.objects.exists()
    assert not mail.outbox


def test_reinviting_an_address_withdraws_the_earlier_link(as_alice: Client) -> None:
    first = _invite(as_alice, "dana@example.com")
    second = _invite(as_alice, "dana@example.com")
    assert Client().get(first).status_code == 410
    assert Client().get(second).status_code == 200


def test_alice_withdraws_an_invitation_and_the_link_stops_working(as_alice: Client) -> None:
    path = _invite(as_alice, "dana@example.com")
    invitation = Invitation.objects.get()
    assert "dana@example.com" in as_alice.get("/org/").content.decode()
    response = as_alice.post(f"/org/invitations/{invitation.pk}/revoke/")
    assert response.status_code == 302
    refused = Client().post(path, {"password": "a long pass phrase 42"})
    assert refused.status_code == 410
    assert "withdrawn" in refused.content.decode()
    assert not User.objects.filter(email="dana@example.com").exists()


def test_charlie_cannot_withdraw_alices_invitation(as_alice: Client, charlie: User) -> None:
    path = _invite(as_alice, "dana@example.com")
    invitation = Invitation.objects.get()
    other = Client()
    other.force_login(charlie)
    assert other.post(f"/org/invitations/{invitation.pk}/revoke/").status_code == 404
    assert other.post("/org/invitations/not-a-number/revoke/").status_code == 404
    assert Client().get(path).status_code == 200


def test_when_the_email_cannot_be_sent_the_admin_gets_the_link_to_send_themselves(
    as_alice: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    import chatsite.mail

    def broken(*args: object, **kwargs: object) -> None:
        raise ConnectionRefusedError("smtp down")

    monkeypatch.setattr(chatsite.mail, "send_mail", broken)
    response = as_alice.post("/org/invitations/", {"email": "dana@example.com", "role": "member"},
                             follow=True)
    page = response.content.decode()
    assert response.status_code == 200
    assert "could not be sent" in page
    link = re.search(r'id="invitation-link" value="http://testserver(/invite/[^/"]+/)"', page)
    assert link
    assert Invitation.objects.pending().count() == 1
    assert Client().get(link[1]).status_code == 200


def test_the_invitation_link_is_shown_once_and_resend_voids_the_old_one(
    as_alice: Client, org_a: Organization
) -> None:
    page = as_alice.post("/org/invitations/", {"email": "dana@example.com", "role": "member"},
                         follow=True).content.decode()
    first = re.search(r'id="invitation-link" value="http://testserver(/invite/[^/"]+/)"', page)
    assert first and first[1] in mail.outbox[-1].body
    assert "invitation-link" not in as_alice.get("/org/").content.decode()  # once
    invitation = Invitation.objects.get()
    page = as_alice.post(f"/org/invitations/{invitation.pk}/resend/", follow=True).content.decode()
    second = re.search(r'id="invitation-link" value="http://testserver(/invite/[^/"]+/)"', page)
    assert second and second[1] != first[1]
    assert Client().get(first[1]).status_code == 410
    assert Client().get(second[1]).status_code == 200
    assert Invitation.objects.pending().get().role == "member"


def test_charlie_cannot_resend_alices_invitation(as_alice: Client, charlie: User) -> None:
    _invite(as_alice, "dana@example.com")
    invitation = Invitation.objects.get()
    other = Client()
    other.force_login(charlie)
    sent = len(mail.outbox)
    assert other.post(f"/org/invitations/{invitation.pk}/resend/").status_code == 404
    assert len(mail.outbox) == sent
    assert Invitation.objects.pending().count() == 1


def test_invitations_per_admin_are_limited_per_hour(
    as_alice: Client, settings: object, org_a: Organization
) -> None:
    settings.INVITATIONS_PER_HOUR = 3  # type: ignore[attr-defined]
    for n in range(3):
        _invite(as_alice, f"person{n}@example.com")
    response = as_alice.post("/org/invitations/", {"email": "one-more@example.com", "role": "member"})
    assert response.status_code == 429
    assert "Too many invitations" in response.content.decode()
    assert not Invitation.objects.filter(email="one-more@example.com").exists()


def test_reinviting_one_address_is_throttled(as_alice: Client, org_a: Organization) -> None:
    for _ in range(invitations.REINVITES_PER_HOUR):
        _invite(as_alice, "dana@example.com")
    response = as_alice.post("/org/invitations/", {"email": "dana@example.com", "role": "member"})
    assert response.status_code == 429
    assert Invitation.objects.filter(email="dana@example.com").count() == invitations.REINVITES_PER_HOUR


def test_a_newline_in_the_org_name_never_reaches_an_email_header(
    as_alice: Client, org_a: Organization
) -> None:
    org_a.name = "Acme\r\nBcc: victim@example.com"
    org_a.save(update_fields=["name"])
    response = as_alice.post("/org/invitations/", {"email": "dana@example.com", "role": "member"})
    assert response.status_code == 302
    message = mail.outbox[-1]
    assert "\n" not in message.subject and "\r" not in message.subject
    assert message.to == ["dana@example.com"] and not message.bcc
    assert Invitation.objects.pending().count() == 1
