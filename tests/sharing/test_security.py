"""Sharing policy holds across orgs: "Continue in my account" never carries a
members-only snapshot out of its org, and strangers learn nothing from trying."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client

from accounts.models import Membership, Organization, User
from conversations.models import Conversation
from sharing import links
from sharing.links import LinkNotFound
from sharing.models import ShareLink
from tests.sharing.conftest import client_for, make_conversation

pytestmark = pytest.mark.django_db

ORG = ShareLink.Visibility.ORG
PUBLIC = ShareLink.Visibility.PUBLIC


def share(user: User, visibility: str = ORG) -> links.IssuedLink:
    conversation = make_conversation(user, [("one?", "1")], title="Sums")
    return links.create_link(user=user, conversation_id=conversation.pk,
                             visibility=visibility, expires_at=None)


def set_policy(organization: Organization, policy: str) -> None:
    organization.share_policy = policy
    organization.save(update_fields=["share_policy"])


def join_side_project(user: User) -> Organization:
    side = Organization.objects.create(name="Side project")
    Membership.objects.create(user=user, organization=side, role=Membership.Role.OWNER)
    return side


def looking_at(user: User, organization: Organization) -> Client:
    """A signed-in client whose session points at ``organization``."""
    client = client_for(user)
    session = client.session
    session["organization_id"] = organization.pk
    session.save()
    return client


def continue_url(token: str) -> str:
    return f"/s/{token}/continue/"


def fingerprint(response: Any) -> tuple[int, bytes, dict[str, str], str]:
    return (response.status_code, response.content, dict(response.headers),
            response.cookies.output())


# --- Members-only links stay in their org -------------------------------------------------


def test_a_members_only_link_copies_into_its_own_org_while_bob_looks_at_another(
    alice: User, bob: User, org_a: Organization
) -> None:
    side = join_side_project(bob)
    issued = share(alice)
    response = looking_at(bob, side).post(continue_url(issued.token))
    fork = Conversation.objects.get(user=bob)
    assert response.status_code == 302 and response["Location"] == f"/c/{fork.pk}/"
    assert fork.organization == org_a


def test_a_members_only_link_ignores_a_posted_choice_of_another_org(
    alice: User, bob: User, org_a: Organization
) -> None:
    side = join_side_project(bob)
    issued = share(alice)
    looking_at(bob, side).post(continue_url(issued.token), {"organization": str(side.pk)})
    assert Conversation.objects.get(user=bob).organization == org_a


def test_the_domain_copies_a_members_only_link_only_into_its_org(
    alice: User, bob: User, org_a: Organization
) -> None:
    side = join_side_project(bob)
    issued = share(alice)
    fork = links.fork_snapshot(token=issued.token, viewer=bob, organization_id=side.pk)
    assert fork.organization == org_a
    assert not Conversation.objects.filter(organization=side).exists()


def test_the_continue_page_offers_only_the_links_org_for_a_members_only_link(
    alice: User, bob: User, org_a: Organization
) -> None:
    side = join_side_project(bob)
    issued = share(alice)
    html = looking_at(bob, side).get(continue_url(issued.token)).content.decode()
    assert "It goes into <strong>Acme</strong>" in html
    assert f'name="organization" value="{org_a.pk}"' in html
    assert "Side project" not in html


def test_a_public_link_turned_members_only_by_the_org_policy_stays_in_the_org(
    alice: User, bob: User, org_a: Organization
) -> None:
    side = join_side_project(bob)
    set_policy(org_a, "public")
    issued = share(alice, PUBLIC)
    set_policy(org_a, "org")
    looking_at(bob, side).post(continue_url(issued.token), {"organization": str(side.pk)})
    assert Conversation.objects.get(user=bob).organization == org_a


def test_bob_cannot_copy_a_members_only_link_after_leaving_its_org(
    alice: User, bob: User, org_a: Organization
) -> None:
    side = join_side_project(bob)
    issued = share(alice)
    Membership.objects.filter(user=bob, organization=org_a).delete()
    with pytest.raises(LinkNotFound):
        links.fork_snapshot(token=issued.token, viewer=bob, organization_id=side.pk)
    response = looking_at(bob, side).post(continue_url(issued.token))
    assert response.status_code == 404
    assert not Conversation.objects.filter(user=bob).exists()


# --- Public links go where the viewer is -----------------------------------------------------


def test_a_public_link_copies_into_the_viewers_current_org(
    alice: User, bob: User, org_a: Organization
) -> None:
    side = join_side_project(bob)
    set_policy(org_a, "public")
    issued = share(alice, PUBLIC)
    looking_at(bob, side).post(continue_url(issued.token))
    assert Conversation.objects.get(user=bob).organization == side


def test_charlie_copies_a_public_link_into_his_own_org_never_alices(
    alice: User, charlie: User, org_a: Organization
) -> None:
    set_policy(org_a, "public")
    issued = share(alice, PUBLIC)
    client_for(charlie).post(continue_url(issued.token), {"organization": str(org_a.pk)})
    fork = Conversation.objects.get(user=charlie)
    assert fork.organization == charlie.memberships.get().organization
    assert not Conversation.objects.filter(organization=org_a).exclude(user=alice).exists()


# --- Strangers learn nothing ------------------------------------------------------------------


def test_charlie_gets_the_same_404_as_for_a_link_that_never_existed(
    alice: User, charlie: User, org_a: Organization
) -> None:
    issued = share(alice)
    client = client_for(charlie)
    for choice in ({}, {"organization": str(org_a.pk)}):
        never = fingerprint(client.post(continue_url("x" * 43), choice))
        assert never[0] == 404
        assert fingerprint(client.post(continue_url(issued.token), choice)) == never
    assert fingerprint(client.get(continue_url(issued.token))) == fingerprint(
        client.get(continue_url("x" * 43))
    )
    assert not Conversation.objects.filter(user=charlie).exists()


def test_charlie_looking_at_alices_org_id_still_gets_the_404(
    alice: User, charlie: User, org_a: Organization
) -> None:
    issued = share(alice)
    response = looking_at(charlie, org_a).post(continue_url(issued.token))
    assert response.status_code == 404
    assert not Conversation.objects.filter(user=charlie).exists()
    with pytest.raises(LinkNotFound):
        links.fork_snapshot(token=issued.token, viewer=charlie, organization_id=org_a.pk)
