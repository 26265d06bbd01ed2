"""Acts owned by other modules reach the audit log, one entry each, at the place they
happen: invitations, allowed domains, budget requests, share links, exports and imports,
conversation deletion.

alice owns org A, bob is a member of org A, charlie owns org B (tests/conftest.py).
"""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Any

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django.utils import timezone

from accounts.audit_models import AuditAction, AuditEntry
from accounts.models import Membership, Organization, User
from billing import requests
from conversations import tasks as conversation_tasks
from conversations.models import DataJob
from sharing import links
from sharing.models import ShareLink
from tests.sharing.conftest import make_conversation

pytestmark = [pytest.mark.django_db]


def _client(user: User, ip: str = "192.0.2.50") -> Client:
    client = Client(REMOTE_ADDR=ip)
    client.force_login(user)
    return client


def _only(action: str) -> AuditEntry:
    [entry] = AuditEntry.objects.filter(action=action)
    return entry


def _membership(user: User) -> Membership:
    return Membership.objects.select_related("organization").get(user=user)


def test_an_invitation_sent_accepted_and_another_revoked(alice: User, org_a: Organization,
                                                         mailoutbox: list[Any]) -> None:
    as_alice = _client(alice)
    as_alice.post(f"/org/invitations/?org={org_a.pk}", {"email": "dora@example.com",
                                                       "role": "member"})
    sent = _only(AuditAction.INVITATION_SENT)
    assert (sent.actor_id, sent.organization_id, sent.client_ip) == (alice.pk, org_a.pk,
                                                                     "192.0.2.50")
    assert sent.details == {"email": "dora@example.com", "role": "member", "emailed": True}
    link = re.search(r"/invite/[^/\s]+/", mailoutbox[-1].body)
    assert link is not None
    # Only the token's hash is stored; the log never holds the link either.
    assert link[0].split("/")[2] not in str(list(AuditEntry.objects.values()))

    Client(REMOTE_ADDR="198.51.100.77").post(link[0], {"password": "dora's long passphrase 1"})
    accepted = _only(AuditAction.INVITATION_ACCEPTED)
    dora = User.objects.get(email="dora@example.com")
    assert (accepted.actor_id, accepted.organization_id, accepted.client_ip) == (
        dora.pk, org_a.pk, "198.51.100.77")
    assert accepted.object_id == sent.object_id

    as_alice.post(f"/org/invitations/?org={org_a.pk}", {"email": "eve@example.com",
                                                       "role": "admin"})
    invitation_id = AuditEntry.objects.filter(action=AuditAction.INVITATION_SENT).latest("id").object_id
    as_alice.post(f"/org/invitations/{invitation_id}/revoke/")
    as_alice.post(f"/org/invitations/{invitation_id}/revoke/")  # already revoked: no entry
    revoked = _only(AuditAction.INVITATION_REVOKED)
    assert revoked.details == {"email": "eve@example.com"} and revoked.actor_id == alice.pk


def test_allowed_domains_added_and_removed(alice: User, org_a: Organization) -> None:
    User.objects.filter(pk=alice.pk).update(email_verified_at=timezone.now())
    as_alice = _client(alice)
    as_alice.post(f"/org/allowed-domains/?org={org_a.pk}", {"domains": "example.com"})
    added = _only(AuditAction.DOMAIN_ADDED)
    assert (added.details, added.actor_id, added.organization_id) == (
        {"domain": "example.com"}, alice.pk, org_a.pk)
    as_alice.post(f"/org/allowed-domains/?org={org_a.pk}", {"domains": ""})
    assert _only(AuditAction.DOMAIN_REMOVED).details == {"domain": "example.com"}


def test_an_approved_budget_request_is_a_budget_change(alice: User, bob: User) -> None:
    request = requests.request_more_budget(membership=_membership(bob), note="more please")
    requests.approve_budget_request(by=_membership(alice), budget_request=request,
                                    new_budget_usd=Decimal("25.00"))
    entry = _only(AuditAction.BUDGET_CHANGED)
    assert entry.actor_id == alice.pk and entry.object_id == str(_membership(bob).pk)
    assert entry.details == {"member": "bob@example.com", "budget_request": request.pk,
                             "changes": {"monthly_budget_usd": {"old": None, "new": "25.00"}}}


def test_a_share_link_created_opened_forked_and_revoked(
    alice: User, bob: User, org_a: Organization
) -> None:
    conversation = make_conversation(alice, title="Private plans")
    issued = links.create_link(user=alice, conversation_id=conversation.pk, visibility="org",
                               expires_at=None)
    created = _only(AuditAction.SHARE_CREATED)
    assert (created.actor_id, created.organization_id, created.object_id) == (
        alice.pk, org_a.pk, str(issued.link.pk))
    assert created.details == {"conversation": conversation.pk, "visibility": "org",
                               "expires_at": None}

    as_bob = _client(bob, ip="192.0.2.61")
    assert as_bob.get(f"/s/{issued.token}/").status_code == 200
    opened = _only(AuditAction.SHARE_OPENED)
    assert (opened.actor_id, opened.client_ip, opened.organization_id) == (
        bob.pk, "192.0.2.61", org_a.pk)

    links.fork_snapshot(token=issued.token, viewer=bob, organization_id=None)
    forked = _only(AuditAction.SHARE_FORKED)
    assert forked.actor_id == bob.pk and forked.details["into_organization"] == org_a.pk

    links.revoke_link(user=alice, link_id=issued.link.pk)
    links.revoke_link(user=alice, link_id=issued.link.pk)  # a second revoke changes nothing
    revoked = _only(AuditAction.SHARE_REVOKED)
    assert revoked.actor_id == alice.pk and revoked.object_id == str(issued.link.pk)
    assert ShareLink.objects.get(pk=issued.link.pk).revoked_at is not None
    everything = str(list(AuditEntry.objects.values()))
    assert issued.token not in everything and "Private plans" not in everything


def test_exports_and_imports_are_recorded(alice: User, org_a: Organization) -> None:
    conversation = make_conversation(alice)
    as_alice = _client(alice)
    assert as_alice.get(f"/c/{conversation.pk}/export.md").status_code == 200
    one = _only(AuditAction.DATA_EXPORTED)
    assert one.details == {"what": "one conversation", "format": "md"}
    assert (one.organization_id, one.object_id, one.actor_id) == (org_a.pk, str(conversation.pk),
                                                                  alice.pk)

    as_alice.post("/account/export/")
    for job_id in DataJob.objects.filter(kind="export", status="queued").values_list("pk", flat=True):
        conversation_tasks.build_data_export(job_id)
    job = DataJob.objects.get(kind="export")
    response = as_alice.get(f"/account/exports/{job.pk}.zip")
    assert response.status_code == 200
    everything = AuditEntry.objects.filter(action=AuditAction.DATA_EXPORTED,
                                           object_type="conversations.datajob").get()
    assert everything.details["what"] == "all my data" and everything.details["size"] > 0

    upload = SimpleUploadedFile("conversations.json", b"[]", content_type="application/json")
    as_alice.post("/account/import/", {"file": upload})
    imported = _only(AuditAction.DATA_IMPORTED)
    assert (imported.organization_id, imported.actor_id, imported.details) == (
        org_a.pk, alice.pk, {"size": 2})


def test_deleting_a_conversation_is_recorded_without_its_title(alice: User,
                                                               org_a: Organization) -> None:
    conversation = make_conversation(alice, title="Layoff list")
    assert _client(alice).post(f"/c/{conversation.pk}/delete/").status_code in (200, 302)
    entry = _only(AuditAction.CONVERSATION_DELETED)
    assert (entry.organization_id, entry.actor_id, entry.object_id) == (
        org_a.pk, alice.pk, str(conversation.pk))
    assert "Layoff" not in str(list(AuditEntry.objects.values()))


def test_charlie_deleting_his_conversation_lands_in_his_org_only(charlie: User,
                                                                  alice: User) -> None:
    conversation = make_conversation(charlie)
    _client(charlie).post(f"/c/{conversation.pk}/delete/")
    assert _only(AuditAction.CONVERSATION_DELETED).organization_id == _membership(
        charlie).organization_id
