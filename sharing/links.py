"""Share links: create, update, revoke, open and fork conversation snapshots.

A token is ``secrets.token_urlsafe(32)`` (256 bits) shown once to its creator; only its
SHA-256 is stored, so a database dump cannot open any link. A snapshot is a *copy* of
the shared messages: later turns, regenerated answers and edits to the live
conversation never reach readers until the owner presses "Update link".

Every way a link can fail to open (unknown token, revoked, expired, sharing off, a
viewer outside the org, a creator who left the org) raises the same ``LinkNotFound``,
which the views turn into one identical 404 response.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from accounts import audit
from accounts.audit_models import AuditAction
from accounts.model_access import default_profile
from accounts.models import Membership, Organization
from chatsite.errors import NotFound
from conversations.access import get_conversation_for_user
from conversations.models import Conversation, Message
from conversations.tree import branch, link_in_order
from llm.tokens import message_tokens
from sharing.models import SharedMessage, ShareLink

if TYPE_CHECKING:
    from django.contrib.auth.models import AnonymousUser

    from accounts.models import User

TOKEN_BYTES = 32
MAX_TOKEN_CHARS = 128

Visibility = ShareLink.Visibility
SharePolicy = Organization.SharePolicy


class ShareRefused(Exception):
    """A share action the caller may attempt but that cannot happen now; ``detail``
    says why and what to do instead."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class LinkNotFound(Exception):
    """The token opens nothing for this viewer. Deliberately carries no reason."""


@dataclass(frozen=True)
class IssuedLink:
    """A new link and its token; the token exists only here and in the creator's page."""

    link: ShareLink
    token: str


@dataclass(frozen=True)
class Snapshot:
    link: ShareLink
    messages: list[SharedMessage]

    @property
    def title(self) -> str:
        return self.link.display_title

    @property
    def is_public(self) -> bool:
        """Open to anyone under the org's current policy, not just its members."""
        policy = self.link.organization.share_policy
        return self.link.effective_visibility(policy) == Visibility.PUBLIC


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


# --- Permission-checked fetches -------------------------------------------------------


def get_link_for_owner(user: User, link_id: int) -> ShareLink:
    """A link the user created, on a conversation they still own in an org they are in."""
    try:
        link = ShareLink.objects.select_related("organization", "conversation").get(
            pk=link_id,
            created_by=user,
            conversation__user=user,
            organization__memberships__user=user,
        )
    except (ShareLink.DoesNotExist, ValueError, TypeError) as exc:
        raise NotFound("share link") from exc
    return link


def get_link_for_manager(user: User, link_id: int) -> ShareLink:
    """A link the user may revoke: their own, or any link of an org they administer."""
    member_orgs = Membership.objects.filter(user=user).values("organization_id")
    admin_orgs = Membership.objects.admins().filter(user=user).values("organization_id")
    try:
        return ShareLink.objects.select_related("organization").get(
            Q(created_by=user, organization_id__in=member_orgs)
            | Q(organization_id__in=admin_orgs),
            pk=link_id,
        )
    except (ShareLink.DoesNotExist, ValueError, TypeError) as exc:
        raise NotFound("share link") from exc


def live_link_for_conversation(conversation: Conversation) -> ShareLink | None:
    return ShareLink.objects.live().filter(conversation=conversation).first()


# --- Owner actions --------------------------------------------------------------------


def _check_policy(organization: Organization, visibility: str) -> None:
    if visibility not in Visibility.values:
        raise ShareRefused("Choose who can open the link.")
    if organization.share_policy == SharePolicy.OFF:
        raise ShareRefused(
            f"Sharing is turned off in {organization.name}. "
            "Ask an owner or admin to allow it on the Shared links page."
        )
    if visibility == Visibility.PUBLIC and organization.share_policy != SharePolicy.PUBLIC:
        raise ShareRefused(
            f"{organization.name} allows links for its members only. Choose "
            f"“Members of {organization.name}”, or ask an admin to allow public links."
        )


def latest_finished_answer(conversation: Conversation) -> Message | None:
    """The newest finished answer on the branch on screen (other versions are not shared)."""
    finished = [
        m for m in branch(conversation)
        if m.role == Message.Role.ASSISTANT and m.status == Message.Status.DONE
    ]
    return finished[-1] if finished else None


def _copy_snapshot(link: ShareLink, conversation: Conversation, upto_id: int) -> None:
    """Copy the questions and finished answers of the branch on screen up to ``upto_id``:
    content only, never developer messages, custom instructions, tool calls, reasoning,
    failed answers or other versions."""
    on_branch = branch(conversation)
    upto = next((i for i, m in enumerate(on_branch) if m.pk == upto_id), -1)
    rows = [
        (m.role, m.content, m.model_name, m.created_at)
        for m in on_branch[: upto + 1]
        if m.content
        and (
            m.role == Message.Role.USER
            or (m.role == Message.Role.ASSISTANT and m.status == Message.Status.DONE)
        )
    ]
    SharedMessage.objects.bulk_create(
        SharedMessage(
            link=link,
            position=position,
            role=role,
            content=content,
            model_name=model_name if role == Message.Role.ASSISTANT else "",
            created_at=created_at,
        )
        for position, (role, content, model_name, created_at) in enumerate(rows)
    )


def _nothing_to_share() -> ShareRefused:
    return ShareRefused(
        "Nothing to share yet: a link shows the conversation up to its latest finished "
        "answer. Wait for the answer to finish, then share."
    )


def create_link(
    *,
    user: User,
    conversation_id: int,
    visibility: str,
    expires_at: datetime | None,
) -> IssuedLink:
    """Share the conversation up to its latest finished answer. A live link of the same
    conversation is revoked and replaced (its old address stops working)."""
    conversation = get_conversation_for_user(user, conversation_id)
    _check_policy(conversation.organization, visibility)
    token = secrets.token_urlsafe(TOKEN_BYTES)
    with transaction.atomic():
        # Race: two "Create link" clicks (or tabs) at once. The conversation row lock
        # makes the second one replace the first link instead of tripping the
        # one-live-link constraint, and pins the answer we snapshot.
        Conversation.objects.select_for_update().filter(pk=conversation.pk).first()
        answer = latest_finished_answer(conversation)
        if answer is None:
            raise _nothing_to_share()
        now = timezone.now()
        ShareLink.objects.live().filter(conversation=conversation).update(
            revoked_at=now, revoked_by=user
        )
        link = ShareLink.objects.create(
            organization=conversation.organization,
            conversation=conversation,
            created_by=user,
            token_hash=hash_token(token),
            visibility=visibility,
            expires_at=expires_at,
            title=conversation.title,
            snapshot_message_id=answer.pk,
            snapshot_at=now,
            created_at=now,
        )
        _copy_snapshot(link, conversation, answer.pk)
        audit.record(AuditAction.SHARE_CREATED, organization=link.organization_id, actor=user,
                     obj=link, conversation=conversation.pk, visibility=visibility,
                     expires_at=expires_at)
    return IssuedLink(link=link, token=token)


def _change(
    *,
    user: User,
    link_id: int,
    visibility: str,
    expires_at: datetime | None,
    move_snapshot: bool,
) -> ShareLink:
    link = get_link_for_owner(user, link_id)
    _check_policy(link.organization, visibility)
    with transaction.atomic():
        # Race: an update against a revoke (from an admin, or another tab). The row
        # lock serialises them and the check below keeps a revoked link revoked.
        locked = ShareLink.objects.select_for_update().filter(pk=link.pk).first()
        if locked is None or locked.revoked_at is not None:
            raise ShareRefused("This link was revoked and cannot change. Create a new link.")
        link.visibility = visibility
        link.expires_at = expires_at
        fields = ["visibility", "expires_at"]
        if move_snapshot:
            if link.conversation.deleted_at is not None:
                # Kept by the org's retention: the conversation's text is gone, the
                # snapshot is all there is.
                raise ShareRefused("The conversation behind this link was deleted, so the "
                                   "link keeps the snapshot it has. Revoke it to stop sharing.")
            answer = latest_finished_answer(link.conversation)
            if answer is None:
                raise _nothing_to_share()
            link.messages.all().delete()
            _copy_snapshot(link, link.conversation, answer.pk)
            link.snapshot_message_id = answer.pk
            link.snapshot_at = timezone.now()
            link.title = link.conversation.title
            fields += ["snapshot_message_id", "snapshot_at", "title"]
        link.save(update_fields=fields)
    return link


def change_link_settings(
    *, user: User, link_id: int, visibility: str, expires_at: datetime | None
) -> ShareLink:
    """Change who can open the link and when it expires; the snapshot stays as it is."""
    return _change(
        user=user, link_id=link_id, visibility=visibility, expires_at=expires_at,
        move_snapshot=False,
    )


def update_link(
    *, user: User, link_id: int, visibility: str, expires_at: datetime | None
) -> ShareLink:
    """Move the snapshot to the newest finished answer (same address), applying the
    visibility and expiry chosen alongside."""
    return _change(
        user=user, link_id=link_id, visibility=visibility, expires_at=expires_at,
        move_snapshot=True,
    )


def revoke_link(*, user: User, link_id: int) -> ShareLink:
    """Revoke for good: the creator, or an owner/admin of the link's org."""
    link = get_link_for_manager(user, link_id)
    now = timezone.now()
    # Race: two revokes at once (creator and admin); the condition makes the first win
    # and the second a no-op, so revoked_at/revoked_by record who really revoked it.
    if ShareLink.objects.filter(pk=link.pk, revoked_at__isnull=True).update(
        revoked_at=now, revoked_by=user
    ):
        audit.record(AuditAction.SHARE_REVOKED, organization=link.organization_id, actor=user,
                     obj=link, conversation=link.conversation_id)
    link.refresh_from_db(fields=["revoked_at", "revoked_by"])
    return link


def set_share_policy(*, user: User, organization_id: int, policy: str) -> Organization:
    """Owners and admins choose: sharing off, org members only, or public allowed."""
    membership = (
        Membership.objects.admins()
        .select_related("organization")
        .filter(user=user, organization_id=organization_id)
        .first()
    )
    if membership is None:
        raise NotFound("organization")
    if policy not in SharePolicy.values:
        raise ShareRefused("Choose a sharing policy from the list.")
    organization = membership.organization
    organization.share_policy = policy
    organization.save(update_fields=["share_policy"])
    return organization


# --- Readers --------------------------------------------------------------------------


def get_shared_snapshot(
    *, token: str, viewer: User | AnonymousUser | None, count_view: bool = False
) -> Snapshot:
    """The snapshot behind a token, if this viewer may read it; else ``LinkNotFound``.

    Org-only links (and public links in an org that no longer allows public links)
    need a signed-in member of the link's org.
    """
    if not token or len(token) > MAX_TOKEN_CHARS:
        raise LinkNotFound
    link = (
        ShareLink.objects.openable()
        .select_related("organization")
        .filter(token_hash=hash_token(token))
        .first()
    )
    if link is None:
        raise LinkNotFound
    visibility = link.effective_visibility(link.organization.share_policy)
    if visibility is None:
        raise LinkNotFound
    if visibility == Visibility.ORG and not _is_member(viewer, link.organization_id):
        raise LinkNotFound
    if count_view:
        # Race: concurrent readers; F() makes every view count.
        ShareLink.objects.filter(pk=link.pk).update(view_count=F("view_count") + 1)
        audit.record(AuditAction.SHARE_OPENED, organization=link.organization_id, obj=link,
                     visibility=visibility)
    return Snapshot(link=link, messages=list(link.messages.all()))


def _is_member(viewer: User | AnonymousUser | None, organization_id: int) -> bool:
    if viewer is None or not viewer.is_authenticated:
        return False
    return Membership.objects.filter(user=viewer, organization_id=organization_id).exists()


def fork_destinations(*, snapshot: Snapshot, viewer: User) -> list[Membership]:
    """The viewer's orgs a snapshot may be copied into, in the order they joined them.

    A members-only link (or a public link whose org now allows members-only links)
    copies only into the link's own org: its content never leaves that org through a
    viewer who also belongs to another. A public link copies into any of the
    viewer's orgs.
    """
    memberships = Membership.objects.select_related("organization").filter(user=viewer)
    if not snapshot.is_public:
        memberships = memberships.filter(organization_id=snapshot.link.organization_id)
    return list(memberships.order_by("joined_at", "id"))


def fork_snapshot(*, token: str, viewer: User, organization_id: int | None) -> Conversation:
    """Copy a snapshot into a new conversation of the viewer's, answered by the
    destination org's default model. The shared conversation is only read.

    The destination is ``organization_id`` (the viewer's choice, or their current org)
    when ``fork_destinations`` allows it, else the first allowed org: a members-only
    link always copies into its own org, whatever org the viewer is looking at.
    """
    snapshot = get_shared_snapshot(token=token, viewer=viewer)
    destinations = fork_destinations(snapshot=snapshot, viewer=viewer)
    if not destinations:
        if not snapshot.is_public:
            # Left the link's org between the read above and now: the same 404 as
            # any other link this viewer cannot open.
            raise LinkNotFound
        raise ShareRefused(
            "You are not in an organization yet, so there is nowhere to continue this "
            "conversation. Ask an admin for an invitation."
        )
    membership = next(
        (m for m in destinations if m.organization_id == organization_id), destinations[0]
    )
    organization = membership.organization
    profile = default_profile(organization, user=viewer)
    if profile is None:
        raise ShareRefused(
            f"No model is enabled in {organization.name}, so this conversation cannot "
            "continue there. Ask an admin to enable a model profile."
        )
    now = timezone.now()
    with transaction.atomic():
        conversation = Conversation.objects.create(
            organization=organization,
            user=viewer,
            profile=profile,
            title=snapshot.link.title[:200],
            created_at=now,
            updated_at=now,
        )
        # Same created_at for every copy: the chat orders by (created_at, id), and
        # bulk_create assigns ids in list order.
        copies = Message.objects.bulk_create(
            Message(
                conversation=conversation,
                role=shared.role,
                content=shared.content,
                # Counted once here, not by every later turn's estimate and context cut.
                content_tokens=message_tokens(shared.content),
                status=Message.Status.DONE,
                model_name=shared.model_name,
                created_at=now,
            )
            for shared in snapshot.messages
        )
        link_in_order(conversation, copies)
        audit.record(AuditAction.SHARE_FORKED, organization=snapshot.link.organization_id,
                     actor=viewer, obj=snapshot.link, into_organization=organization.pk,
                     conversation=conversation.pk)
    return conversation
