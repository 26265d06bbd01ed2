"""Retention settings on the Members page: owners and admins of the org set how many days
untouched conversations are kept and whether their share links go with them; the form
refuses what is not a whole number of days from 1 to 3,650; a member, or anyone from
another org, gets a 404 and changes nothing."""

from __future__ import annotations

import re

import pytest
from django.db import IntegrityError, transaction
from django.test import Client

from accounts import members
from accounts.audit_models import AuditAction, AuditEntry
from accounts.models import MAX_RETENTION_DAYS, Membership, Organization, User
from chatsite.errors import NotFound
from tests.conftest import make_user

pytestmark = [pytest.mark.django_db, pytest.mark.urls("tests.accounts.urls")]


def signed_in(user: User) -> Client:
    client = Client(raise_request_exception=False)
    client.force_login(user)
    return client


def retention_of(organization: Organization) -> tuple[int | None, bool]:
    organization.refresh_from_db()
    return organization.retention_days, organization.retention_keep_shares


def test_retention_is_off_by_default_and_keeps_share_links(org_a: Organization) -> None:
    assert retention_of(org_a) == (None, True)


def test_the_members_page_has_a_retention_section_with_labelled_fields(
    alice: User, org_a: Organization
) -> None:
    page = signed_in(alice).get("/org/").content.decode()

    section = re.search(r'<section[^>]*aria-labelledby="([^"]+)"[^>]*>\s*<h2 id="\1">Retention</h2>'
                        r'(.*?)</section>', page, re.S)
    assert section is not None
    body = section[2]
    assert "Off: conversations are kept until their owners delete them." in body
    days = re.search(r'<label for="([^"]+)">Delete conversations untouched for \(days\)</label>', body)
    assert days is not None
    field = re.search(rf'<input type="number"[^>]*id="{days[1]}"[^>]*>', body)
    assert field is not None and 'min="1"' in field[0] and f'max="{MAX_RETENTION_DAYS}"' in field[0]
    shares = re.search(r'<label for="([^"]+)">Also delete their share links</label>', body)
    assert shares is not None
    assert re.search(rf'<input type="checkbox"[^>]*id="{shares[1]}"', body)


def test_alice_turns_retention_on_and_the_change_is_audited(
    alice: User, org_a: Organization
) -> None:
    client = signed_in(alice)

    response = client.post("/org/retention/", {"retention_days": "30", "delete_shares": "on"})

    assert response.status_code == 302
    assert retention_of(org_a) == (30, False)
    page = client.get(response["Location"]).content.decode()
    assert "Retention is on: every day, conversations untouched for 30 days are deleted" in page
    assert "their share links are deleted with them" in page
    entry = AuditEntry.objects.get(action=AuditAction.ORG_SETTINGS_CHANGED, organization_id=org_a.pk)
    assert entry.actor_id == alice.pk
    assert set(entry.details["changes"]) == {"retention_days", "retention_keep_shares"}


def test_an_admin_keeps_share_links_and_then_turns_retention_off(
    alice: User, org_a: Organization
) -> None:
    admin = make_user("ada@example.com", organization=org_a, role=Membership.Role.ADMIN)
    client = signed_in(admin)

    assert client.post(f"/org/retention/?org={org_a.pk}", {"retention_days": " 90 "}).status_code == 302
    assert retention_of(org_a) == (90, True)
    assert client.post("/org/retention/", {"retention_days": ""}).status_code == 302
    assert retention_of(org_a) == (None, True)


@pytest.mark.parametrize(("typed", "error"), [
    ("0", "Keep conversations at least 1 day, or leave it empty to keep them."),
    ("-5", "Keep conversations at least 1 day, or leave it empty to keep them."),
    ("3651", "Retention is at most 3,650 days (ten years); leave it empty to keep conversations."),
    ("99999999999999999999999", "Retention is at most 3,650 days"),
    ("thirty", "Enter a whole number of days, like 90, or leave it empty."),
    ("2.5", "Enter a whole number of days, like 90, or leave it empty."),
    ("1e3", "Enter a whole number of days, like 90, or leave it empty."),
    ("٣٠", "Enter a whole number of days, like 90, or leave it empty."),
])
def test_the_form_refuses_what_is_not_a_number_of_days_from_1_to_3650(
    alice: User, org_a: Organization, typed: str, error: str
) -> None:
    response = signed_in(alice).post("/org/retention/", {"retention_days": typed})

    assert response.status_code == 400
    assert error in response.content.decode()
    assert retention_of(org_a) == (None, True)


def test_the_edges_1_and_3650_are_accepted(alice: User, org_a: Organization) -> None:
    client = signed_in(alice)
    for days in (1, MAX_RETENTION_DAYS):
        assert client.post("/org/retention/", {"retention_days": str(days)}).status_code == 302
        assert retention_of(org_a) == (days, True)


def test_bob_a_member_gets_a_404_and_changes_nothing(bob: User, org_a: Organization) -> None:
    client = signed_in(bob)

    assert client.post("/org/retention/", {"retention_days": "1"}).status_code == 404
    assert client.post(f"/org/retention/?org={org_a.pk}", {"retention_days": "1"}).status_code == 404
    assert "Retention</h2>" not in client.get("/org/").content.decode()
    assert retention_of(org_a) == (None, True)


def test_charlie_cannot_set_alices_org_retention(
    alice: User, charlie: User, org_a: Organization
) -> None:
    client = signed_in(charlie)

    named = client.post(f"/org/retention/?org={org_a.pk}", {"retention_days": "1"})
    own = client.post("/org/retention/", {"retention_days": "7"})

    assert named.status_code == 404
    assert own.status_code == 302  # his own org's, which he owns
    assert retention_of(org_a) == (None, True)
    assert Organization.objects.get(memberships__user=charlie).retention_days == 7


def test_the_domain_function_refuses_members_and_out_of_range_days(
    alice: User, bob: User, org_a: Organization
) -> None:
    with pytest.raises(NotFound):
        members.set_retention(by=bob.memberships.get(), days=5, keep_shares=True)
    with pytest.raises(members.MemberChangeRefused):
        members.set_retention(by=alice.memberships.get(), days=0, keep_shares=True)
    assert retention_of(org_a) == (None, True)


def test_the_database_refuses_days_out_of_range(org_a: Organization) -> None:
    with pytest.raises(IntegrityError), transaction.atomic():
        Organization.objects.filter(pk=org_a.pk).update(retention_days=MAX_RETENTION_DAYS + 1)
    with pytest.raises(IntegrityError), transaction.atomic():
        Organization.objects.filter(pk=org_a.pk).update(retention_days=0)
