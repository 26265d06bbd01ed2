""""Delete my account" from the account page: proof of ownership first, the person's
conversations erased, the org's usage numbers kept, never an org left without an owner."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.test import Client

from accounts.audit import AuditAction, AuditEntry
from accounts.models import Membership, Organization, User
from billing.models import UsagePeriod
from billing.quotas import period_start
from conversations.models import Conversation, Message
from llm.models import ModelProfile

pytestmark = pytest.mark.django_db

PASSWORD = "correct horse battery staple"
URL = "/accounts/delete/"


def signed_in(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client


def conversation_of(user: User, text: str) -> Conversation:
    membership = user.memberships.get()
    profile = ModelProfile.objects.order_by("pk").first()
    assert profile is not None
    conversation = Conversation.objects.create(user=user, organization=membership.organization,
                                               profile=profile, title=f"About {text}")
    Message.objects.create(conversation=conversation, role=Message.Role.USER, content=text)
    return conversation


def org_row(organization: Organization) -> UsagePeriod:
    row, _ = UsagePeriod.objects.get_or_create(
        organization=organization, user=None, period_start=period_start(organization))
    return row


def test_a_member_deletes_their_account_and_the_org_keeps_its_numbers(
    alice: User, bob: User, org_a: Organization
) -> None:
    row = org_row(org_a)
    UsagePeriod.objects.filter(pk=row.pk).update(spent_usd=Decimal("0.123456"))
    bobs = conversation_of(bob, "bob's secret plan")
    alices = conversation_of(alice, "alice's notes")

    page = signed_in(bob).get(URL)
    assert page.status_code == 200
    assert b"Your password" in page.content

    response = signed_in(bob).post(URL, {"confirm": PASSWORD})

    assert response.status_code == 302 and response["Location"] == "/accounts/login/"
    assert not User.objects.filter(email="bob@example.com").exists()
    assert not Message.objects.filter(content__contains="secret plan").exists()
    bobs.refresh_from_db()
    assert bobs.user_id is None and bobs.title == ""
    assert Message.objects.filter(conversation=alices, content="alice's notes").exists()
    assert UsagePeriod.objects.get(pk=row.pk).spent_usd == Decimal("0.123456")
    entry = AuditEntry.objects.get(action=AuditAction.ACCOUNT_DELETED)
    assert (entry.organization_id, entry.actor_email) == (org_a.pk, "bob@example.com")


def test_a_wrong_password_deletes_nothing(bob: User) -> None:
    conversation_of(bob, "kept")
    response = signed_in(bob).post(URL, {"confirm": "not my password"})
    assert response.status_code == 400
    assert b"That is not your password. Nothing was deleted." in response.content
    assert User.objects.filter(pk=bob.pk).exists()
    assert Message.objects.filter(content="kept").exists()
    assert not AuditEntry.objects.filter(action=AuditAction.ACCOUNT_DELETED).exists()


def test_the_only_owner_of_an_org_with_members_is_refused(alice: User, bob: User) -> None:
    page = signed_in(alice).get(URL)
    assert b"You are the only owner of Acme" in page.content
    response = signed_in(alice).post(URL, {"confirm": PASSWORD})
    assert response.status_code == 400
    assert User.objects.filter(pk=alice.pk).exists()

    Membership.objects.filter(user=bob).update(role=Membership.Role.OWNER)
    assert signed_in(alice).post(URL, {"confirm": PASSWORD}).status_code == 302
    assert not User.objects.filter(pk=alice.pk).exists()


def test_the_only_person_in_an_org_may_delete_their_account(charlie: User) -> None:
    assert signed_in(charlie).post(URL, {"confirm": PASSWORD}).status_code == 302
    assert not User.objects.filter(pk=charlie.pk).exists()


def test_an_account_without_a_password_confirms_with_its_address(charlie: User) -> None:
    charlie.set_unusable_password()
    charlie.save()
    client = signed_in(charlie)
    assert b"Type your email address (charlie@example.com)" in client.get(URL).content
    assert client.post(URL, {"confirm": "someone@example.com"}).status_code == 400
    assert User.objects.filter(pk=charlie.pk).exists()
    assert client.post(URL, {"confirm": " Charlie@Example.com "}).status_code == 302
    assert not User.objects.filter(pk=charlie.pk).exists()


def test_signed_out_visitors_are_sent_to_sign_in(bob: User) -> None:
    response = Client().post(URL, {"confirm": PASSWORD})
    assert response.status_code == 302 and response["Location"].startswith("/accounts/login/")
    assert User.objects.filter(pk=bob.pk).exists()
