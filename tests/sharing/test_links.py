"""The sharing domain module: create, update, revoke, open and fork snapshots."""

from __future__ import annotations

import hashlib
from datetime import timedelta

import pytest
from django.contrib.auth.models import AnonymousUser
from django.utils import timezone

from accounts.models import Membership, Organization, User
from chatsite.errors import NotFound
from conversations.models import Conversation, Message
from llm.tokens import message_tokens
from sharing import links
from sharing.links import LinkNotFound, ShareRefused
from sharing.models import SharedMessage, ShareLink
from tests.conftest import make_user
from tests.sharing.conftest import add_turn, make_conversation

pytestmark = pytest.mark.django_db

ORG = ShareLink.Visibility.ORG
PUBLIC = ShareLink.Visibility.PUBLIC


def share(user: User, conversation: Conversation, visibility: str = ORG,
          expires_at: object = None) -> links.IssuedLink:
    return links.create_link(user=user, conversation_id=conversation.pk,
                             visibility=visibility, expires_at=expires_at)  # type: ignore[arg-type]


def allow_public(organization: Organization) -> None:
    organization.share_policy = Organization.SharePolicy.PUBLIC
    organization.save(update_fields=["share_policy"])


# --- Tokens -----------------------------------------------------------------------------


def test_a_token_has_at_least_128_bits_and_only_its_sha256_is_stored(alice: User) -> None:
    issued = share(alice, make_conversation(alice))
    assert len(issued.token) >= 43  # token_urlsafe(32): 32 random bytes
    link = ShareLink.objects.get()
    assert link.token_hash == hashlib.sha256(issued.token.encode()).hexdigest()
    stored = [str(value) for value in ShareLink.objects.values_list().get()]
    assert issued.token not in " ".join(stored)


def test_two_links_never_share_a_token(alice: User) -> None:
    first = share(alice, make_conversation(alice))
    second = share(alice, make_conversation(alice))
    assert first.token != second.token


# --- Snapshots --------------------------------------------------------------------------


def test_the_snapshot_ends_at_the_latest_finished_answer_in_order(alice: User) -> None:
    conversation = make_conversation(alice, [("one?", "1"), ("two?", "2")])
    add_turn(conversation, "three?", "half an ans", status=Message.Status.STREAMING)
    issued = share(alice, conversation)
    snapshot = links.get_shared_snapshot(token=issued.token, viewer=alice)
    assert [(m.role, m.content) for m in snapshot.messages] == [
        ("user", "one?"), ("assistant", "1"), ("user", "two?"), ("assistant", "2"),
    ]
    assert snapshot.messages[1].model_name == "o3-mini"


def test_failed_and_stopped_answers_are_left_out(alice: User) -> None:
    conversation = make_conversation(alice, [("one?", "1")])
    add_turn(conversation, "two?", "partial", status=Message.Status.FAILED)
    add_turn(conversation, "three?", "3")
    issued = share(alice, conversation)
    contents = [m.content for m in links.get_shared_snapshot(token=issued.token, viewer=alice).messages]
    assert contents == ["one?", "1", "two?", "three?", "3"]


def test_developer_instructions_and_tool_internals_are_not_copied(alice: User, org_a: Organization) -> None:
    org_a.developer_message = "ORG-DEVELOPER-SECRET"
    org_a.save(update_fields=["developer_message"])
    conversation = make_conversation(alice, [], custom_instructions="CUSTOM-SECRET")
    add_turn(conversation, "weather?", "Sunny.", tool_calls=[{"name": "TOOL-SECRET"}],
             reasoning_summary="REASONING-SECRET", refusal="REFUSAL-SECRET")
    issued = share(alice, conversation)
    copied = " ".join(SharedMessage.objects.values_list("content", flat=True))
    assert copied == "weather? Sunny."
    snapshot = links.get_shared_snapshot(token=issued.token, viewer=alice)
    assert {m.role for m in snapshot.messages} == {"user", "assistant"}


def test_later_turns_and_edits_never_leak_into_an_existing_snapshot(alice: User) -> None:
    conversation = make_conversation(alice, [("one?", "1")], title="Before")
    issued = share(alice, conversation)
    add_turn(conversation, "two?", "2")
    conversation.messages.filter(content="1").update(content="EDITED LATER")
    conversation.title = "After"
    conversation.save(update_fields=["title"])
    snapshot = links.get_shared_snapshot(token=issued.token, viewer=alice)
    assert [m.content for m in snapshot.messages] == ["one?", "1"]
    assert snapshot.title == "Before"


def test_update_link_moves_the_snapshot_and_keeps_the_address(alice: User) -> None:
    conversation = make_conversation(alice, [("one?", "1")])
    issued = share(alice, conversation)
    add_turn(conversation, "two?", "2")
    link = links.update_link(user=alice, link_id=issued.link.pk, visibility=ORG, expires_at=None)
    snapshot = links.get_shared_snapshot(token=issued.token, viewer=alice)
    assert [m.content for m in snapshot.messages] == ["one?", "1", "two?", "2"]
    last = conversation.messages.order_by("-id").first()
    assert last is not None and link.snapshot_message_id == last.pk


def test_settings_change_without_moving_the_snapshot(alice: User, org_a: Organization) -> None:
    allow_public(org_a)
    conversation = make_conversation(alice, [("one?", "1")])
    issued = share(alice, conversation)
    add_turn(conversation, "two?", "2")
    expires = timezone.now() + timedelta(days=7)
    link = links.change_link_settings(user=alice, link_id=issued.link.pk, visibility=PUBLIC,
                                      expires_at=expires)
    assert (link.visibility, link.expires_at) == (PUBLIC, expires)
    snapshot = links.get_shared_snapshot(token=issued.token, viewer=None)
    assert [m.content for m in snapshot.messages] == ["one?", "1"]


def test_nothing_is_shared_before_a_first_finished_answer(alice: User) -> None:
    conversation = make_conversation(alice, [])
    add_turn(conversation, "one?", "", status=Message.Status.PENDING)
    with pytest.raises(ShareRefused, match="Nothing to share yet"):
        share(alice, conversation)
    assert not ShareLink.objects.exists()


def test_sharing_again_replaces_the_live_link(alice: User) -> None:
    conversation = make_conversation(alice)
    first = share(alice, conversation)
    second = share(alice, conversation)
    with pytest.raises(LinkNotFound):
        links.get_shared_snapshot(token=first.token, viewer=alice)
    assert links.get_shared_snapshot(token=second.token, viewer=alice).link.pk == second.link.pk
    assert ShareLink.objects.live().count() == 1


# --- Policy and visibility --------------------------------------------------------------


def test_public_links_need_an_org_that_allows_them(alice: User) -> None:
    with pytest.raises(ShareRefused, match="members only"):
        share(alice, make_conversation(alice), PUBLIC)


def test_nothing_can_be_shared_while_sharing_is_off(alice: User, org_a: Organization) -> None:
    org_a.share_policy = Organization.SharePolicy.OFF
    org_a.save(update_fields=["share_policy"])
    with pytest.raises(ShareRefused, match="turned off"):
        share(alice, make_conversation(alice))


def test_an_org_link_opens_for_members_only(alice: User, bob: User, charlie: User) -> None:
    issued = share(alice, make_conversation(alice))
    assert links.get_shared_snapshot(token=issued.token, viewer=bob).messages
    for viewer in (charlie, AnonymousUser(), None):
        with pytest.raises(LinkNotFound):
            links.get_shared_snapshot(token=issued.token, viewer=viewer)


def test_a_public_link_opens_for_anyone(alice: User, org_a: Organization, charlie: User) -> None:
    allow_public(org_a)
    issued = share(alice, make_conversation(alice), PUBLIC)
    for viewer in (charlie, AnonymousUser(), None):
        assert links.get_shared_snapshot(token=issued.token, viewer=viewer).messages


def test_policy_off_hides_links_until_sharing_is_back(alice: User, org_a: Organization) -> None:
    issued = share(alice, make_conversation(alice))
    links.set_share_policy(user=alice, organization_id=org_a.pk, policy="off")
    with pytest.raises(LinkNotFound):
        links.get_shared_snapshot(token=issued.token, viewer=alice)
    links.set_share_policy(user=alice, organization_id=org_a.pk, policy="org")
    assert links.get_shared_snapshot(token=issued.token, viewer=alice).messages


def test_a_public_link_is_members_only_once_the_org_stops_public_links(
    alice: User, bob: User, org_a: Organization
) -> None:
    allow_public(org_a)
    issued = share(alice, make_conversation(alice), PUBLIC)
    links.set_share_policy(user=alice, organization_id=org_a.pk, policy="org")
    assert links.get_shared_snapshot(token=issued.token, viewer=bob).messages
    with pytest.raises(LinkNotFound):
        links.get_shared_snapshot(token=issued.token, viewer=None)


def test_expired_and_revoked_links_open_nothing(alice: User) -> None:
    expired = share(alice, make_conversation(alice), expires_at=timezone.now() - timedelta(seconds=1))
    revoked = share(alice, make_conversation(alice))
    links.revoke_link(user=alice, link_id=revoked.link.pk)
    for issued in (expired, revoked):
        with pytest.raises(LinkNotFound):
            links.get_shared_snapshot(token=issued.token, viewer=alice)


def test_links_of_someone_who_left_the_org_stop_opening(alice: User, bob: User, org_a: Organization) -> None:
    conversation = make_conversation(bob, organization=org_a)
    issued = share(bob, conversation)
    Membership.objects.filter(user=bob, organization=org_a).delete()
    with pytest.raises(LinkNotFound):
        links.get_shared_snapshot(token=issued.token, viewer=alice)


def test_only_owners_and_admins_set_the_policy(bob: User, charlie: User, org_a: Organization) -> None:
    for user in (bob, charlie):
        with pytest.raises(NotFound):
            links.set_share_policy(user=user, organization_id=org_a.pk, policy="public")
    org_a.refresh_from_db()
    assert org_a.share_policy == Organization.SharePolicy.ORG


def test_views_are_counted(alice: User, bob: User) -> None:
    issued = share(alice, make_conversation(alice))
    links.get_shared_snapshot(token=issued.token, viewer=bob, count_view=True)
    links.get_shared_snapshot(token=issued.token, viewer=bob, count_view=True)
    links.get_shared_snapshot(token=issued.token, viewer=bob)  # a fork's read is not a view
    issued.link.refresh_from_db()
    assert issued.link.view_count == 2


# --- Who may change what ----------------------------------------------------------------


def test_charlie_can_neither_share_nor_change_nor_revoke_alices_links(alice: User, charlie: User) -> None:
    conversation = make_conversation(alice)
    issued = share(alice, conversation)
    with pytest.raises(NotFound):
        share(charlie, conversation)
    with pytest.raises(NotFound):
        links.update_link(user=charlie, link_id=issued.link.pk, visibility=ORG, expires_at=None)
    with pytest.raises(NotFound):
        links.change_link_settings(user=charlie, link_id=issued.link.pk, visibility=ORG, expires_at=None)
    with pytest.raises(NotFound):
        links.revoke_link(user=charlie, link_id=issued.link.pk)
    assert links.get_shared_snapshot(token=issued.token, viewer=alice)


def test_bob_in_the_same_org_cannot_share_change_or_revoke_alices_links(
    alice: User, bob: User
) -> None:
    conversation = make_conversation(alice)
    issued = share(alice, conversation)
    with pytest.raises(NotFound):
        share(bob, conversation)
    with pytest.raises(NotFound):
        links.update_link(user=bob, link_id=issued.link.pk, visibility=ORG, expires_at=None)
    with pytest.raises(NotFound):
        links.revoke_link(user=bob, link_id=issued.link.pk)


def test_an_org_admin_revokes_a_members_link(alice: User, bob: User, org_a: Organization) -> None:
    issued = share(bob, make_conversation(bob, organization=org_a))
    link = links.revoke_link(user=alice, link_id=issued.link.pk)
    assert link.revoked_at is not None and link.revoked_by == alice
    with pytest.raises(LinkNotFound):
        links.get_shared_snapshot(token=issued.token, viewer=bob)


def test_an_admin_can_revoke_but_not_edit_a_members_link(alice: User, bob: User, org_a: Organization) -> None:
    issued = share(bob, make_conversation(bob, organization=org_a))
    with pytest.raises(NotFound):
        links.update_link(user=alice, link_id=issued.link.pk, visibility=ORG, expires_at=None)


def test_a_revoked_link_stays_revoked(alice: User) -> None:
    issued = share(alice, make_conversation(alice))
    links.revoke_link(user=alice, link_id=issued.link.pk)
    with pytest.raises(ShareRefused, match="revoked"):
        links.update_link(user=alice, link_id=issued.link.pk, visibility=ORG, expires_at=None)
    with pytest.raises(LinkNotFound):
        links.get_shared_snapshot(token=issued.token, viewer=alice)


# --- Forks ------------------------------------------------------------------------------


def test_a_fork_is_a_new_conversation_of_the_viewer_in_their_org(
    alice: User, bob: User, charlie: User, org_a: Organization
) -> None:
    allow_public(org_a)
    conversation = make_conversation(alice, [("one?", "1"), ("two?", "2")], title="Sums",
                                      custom_instructions="CUSTOM-SECRET")
    issued = share(alice, conversation, PUBLIC)
    fork = links.fork_snapshot(token=issued.token, viewer=charlie, organization_id=None)
    charlies_org = charlie.memberships.get().organization
    assert (fork.user, fork.organization, fork.title) == (charlie, charlies_org, "Sums")
    assert fork.custom_instructions == ""
    assert fork.profile.name == "o3-mini"
    rows = list(fork.messages.order_by("created_at", "id").values_list("role", "content", "status"))
    assert rows == [("user", "one?", "done"), ("assistant", "1", "done"),
                    ("user", "two?", "done"), ("assistant", "2", "done")]
    # Counted once here, so the fork's later turns need not tokenize the copies again.
    counts = list(fork.messages.order_by("created_at", "id").values_list("content_tokens",
                                                                       flat=True))
    assert counts == [message_tokens(content) for _, content, _ in rows] == [5, 4, 5, 4]


def test_a_fork_never_writes_to_the_shared_conversation(alice: User, bob: User) -> None:
    conversation = make_conversation(alice, [("one?", "1")])
    before = list(conversation.messages.values_list("id", "content", "status"))
    issued = share(alice, conversation)
    fork = links.fork_snapshot(token=issued.token, viewer=bob, organization_id=None)
    assert fork.pk != conversation.pk and fork.user == bob
    assert list(conversation.messages.values_list("id", "content", "status")) == before
    assert Conversation.objects.filter(user=alice).count() == 1


def test_a_fork_of_a_public_link_goes_to_the_viewers_chosen_org(
    alice: User, bob: User, org_a: Organization
) -> None:
    allow_public(org_a)
    other = Organization.objects.create(name="Bob's side project")
    Membership.objects.create(user=bob, organization=other, role=Membership.Role.OWNER)
    issued = share(alice, make_conversation(alice), PUBLIC)
    fork = links.fork_snapshot(token=issued.token, viewer=bob, organization_id=other.pk)
    assert fork.organization == other


def test_nobody_forks_what_they_cannot_open(alice: User, charlie: User) -> None:
    issued = share(alice, make_conversation(alice))
    with pytest.raises(LinkNotFound):
        links.fork_snapshot(token=issued.token, viewer=charlie, organization_id=None)
    assert not Conversation.objects.filter(user=charlie).exists()


def test_a_viewer_without_an_org_is_told_why_they_cannot_fork(alice: User, org_a: Organization) -> None:
    allow_public(org_a)
    issued = share(alice, make_conversation(alice), PUBLIC)
    loner = User.objects.create_user(email="loner@example.com", password="x")
    with pytest.raises(ShareRefused, match="not in an organization"):
        links.fork_snapshot(token=issued.token, viewer=loner, organization_id=None)


def test_members_can_join_later_and_read(alice: User, org_a: Organization) -> None:
    issued = share(alice, make_conversation(alice))
    dana = make_user("dana@example.com", organization=org_a)
    assert links.get_shared_snapshot(token=issued.token, viewer=dana).messages
