"""Share links: an unguessable token for a frozen copy of a conversation.

A link stores only the SHA-256 of its token. Its snapshot is a copy of the shared
messages (``SharedMessage``), not a pointer into the live conversation, so nothing the
owner writes, regenerates or edits later reaches readers until they press "Update link".
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.db import models
from django.db.models import Exists, OuterRef, Q
from django.dispatch import receiver
from django.utils import timezone

from accounts.erasure import person_data_erasing
from accounts.models import Membership, Organization
from conversations.signals import conversation_erasing

if TYPE_CHECKING:
    from datetime import datetime

    from accounts.models import User


class ShareLinkQuerySet(models.QuerySet["ShareLink"]):
    def live(self) -> ShareLinkQuerySet:
        """Not revoked (possibly expired: the owner may still renew or revoke it)."""
        return self.filter(revoked_at__isnull=True)

    def openable(self) -> ShareLinkQuerySet:
        """Not revoked, not expired, and its creator still belongs to the link's org."""
        creator_is_member = Membership.objects.filter(
            user=OuterRef("created_by"), organization=OuterRef("organization")
        )
        return (
            self.live()
            .filter(Q(expires_at__isnull=True) | Q(expires_at__gt=timezone.now()))
            .filter(Exists(creator_is_member))
        )

    def manageable_by(self, user: User, organization: Organization) -> ShareLinkQuerySet:
        """Links in ``organization`` the user may see on /shared/ and revoke: their own,
        or every link of the org for its owners and admins."""
        links = self.filter(organization=organization)
        is_admin = Membership.objects.admins().filter(user=user, organization=organization)
        if is_admin.exists():
            return links
        return links.filter(created_by=user)


class ShareLink(models.Model):
    class Visibility(models.TextChoices):
        ORG = "org", "Members of the organization"
        PUBLIC = "public", "Anyone with the link"

    organization = models.ForeignKey(
        "accounts.Organization", on_delete=models.CASCADE, related_name="share_links"
    )
    conversation = models.ForeignKey(
        "conversations.Conversation", on_delete=models.CASCADE, related_name="share_links"
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="share_links"
    )
    # SHA-256 hex of the token; the token itself is shown once and never stored.
    token_hash = models.CharField(max_length=64, unique=True, editable=False)
    visibility = models.CharField(
        max_length=8, choices=Visibility.choices, default=Visibility.ORG
    )
    expires_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    revoked_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    # The snapshot: the conversation title and the newest finished answer it reaches.
    title = models.CharField(max_length=200, blank=True)
    snapshot_message_id = models.BigIntegerField()
    snapshot_at = models.DateTimeField()
    view_count = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(default=timezone.now)

    objects = ShareLinkQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            # One live link per conversation; "Replace link" revokes the old one first.
            models.UniqueConstraint(
                fields=["conversation"],
                condition=Q(revoked_at__isnull=True),
                name="one_live_share_link_per_conversation",
            ),
        ]
        indexes = [models.Index(fields=["organization", "-created_at"])]

    def __str__(self) -> str:
        return f"Share link {self.pk} ({self.get_visibility_display()})"

    @property
    def display_title(self) -> str:
        return self.title or "Shared conversation"

    @property
    def is_revoked(self) -> bool:
        return self.revoked_at is not None

    @property
    def is_expired(self) -> bool:
        return self.expires_at is not None and self.expires_at <= timezone.now()

    def effective_visibility(self, policy: str) -> str | None:
        """Who can open the link under the org's current policy: None when sharing is
        off, and "org" for a public link whose org no longer allows public links."""
        if policy == Organization.SharePolicy.OFF:
            return None
        if self.visibility == self.Visibility.PUBLIC and policy == Organization.SharePolicy.PUBLIC:
            return self.Visibility.PUBLIC
        return self.Visibility.ORG


class SharedMessage(models.Model):
    """One user question or finished answer, copied into a link's snapshot."""

    class Role(models.TextChoices):
        USER = "user", "User"
        ASSISTANT = "assistant", "Assistant"

    link = models.ForeignKey(ShareLink, on_delete=models.CASCADE, related_name="messages")
    position = models.PositiveIntegerField()
    role = models.CharField(max_length=10, choices=Role.choices)
    content = models.TextField(blank=True)
    model_name = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField()

    class Meta:
        ordering = ["link", "position"]
        constraints = [
            models.UniqueConstraint(fields=["link", "position"], name="one_shared_message_per_slot"),
        ]

    def __str__(self) -> str:
        return f"{self.role} message {self.position} of link {self.link_id}"


@receiver(conversation_erasing, dispatch_uid="sharing.erase_links_of_deleted_conversation")
def _erase_links(sender: Any, conversation_ids: list[int], now: datetime,
                 keep_share_links: bool = False, **kwargs: Any) -> dict[str, int]:
    """Deleted conversations' links are revoked, and their titles and copies erased; or,
    when the org's retention keeps them, left readable as they are."""
    links = ShareLink.objects.filter(conversation_id__in=conversation_ids)
    if keep_share_links:
        return {"share_links_kept": links.filter(revoked_at__isnull=True).count()}
    SharedMessage.objects.filter(link__in=links).delete()
    revoked = links.filter(revoked_at__isnull=True).update(revoked_at=now)
    links.update(title="")
    return {"share_links_deleted": revoked}


@receiver(person_data_erasing, dispatch_uid="sharing.delete_links_of_deleted_person")
def _delete_persons_links(sender: Any, user: User, **kwargs: Any) -> None:
    """A person being deleted (accounts.erasure): the links to their conversations go,
    with their copied messages."""
    ShareLink.objects.filter(conversation__user=user).delete()
