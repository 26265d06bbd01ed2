"""The audit log's row: one security-relevant act, written once and never changed.

Imported by ``accounts.models`` (Django finds an app's models there). Writing, reading and
pruning go through ``accounts.audit``.
"""

from __future__ import annotations

from typing import Any, NoReturn

from django.conf import settings
from django.core.serializers.json import DjangoJSONEncoder
from django.db import models
from django.utils import timezone


class AuditLogImmutable(Exception):
    """Someone tried to change or delete an audit entry; only retention removes them."""


class AuditAction(models.TextChoices):
    SIGN_IN = "auth.sign_in", "Signed in"
    SIGN_IN_FAILED = "auth.sign_in_failed", "Sign-in failed"
    LOCKED_OUT = "auth.locked_out", "Sign-in paused"
    SIGN_OUT = "auth.sign_out", "Signed out"
    PASSWORD_CHANGED = "auth.password_changed", "Password changed"
    PASSWORD_RESET = "auth.password_reset", "Password reset"
    SSO_LINKED = "auth.sso_linked", "Single sign-on linked"
    ACCOUNT_DELETED = "account.deleted", "Account deleted"
    MEMBER_ADDED = "member.added", "Member added"
    MEMBER_REMOVED = "member.removed", "Member removed"
    ROLE_CHANGED = "member.role_changed", "Role changed"
    GROUP_CHANGED = "group.changed", "Group changed"
    INVITATION_SENT = "invitation.sent", "Invitation sent"
    INVITATION_ACCEPTED = "invitation.accepted", "Invitation accepted"
    INVITATION_REVOKED = "invitation.revoked", "Invitation revoked"
    BUDGET_CHANGED = "budget.changed", "Budget changed"
    ORG_SETTINGS_CHANGED = "org.settings_changed", "Org settings changed"
    DOMAIN_ADDED = "domain.added", "Allowed domain added"
    DOMAIN_REMOVED = "domain.removed", "Allowed domain removed"
    MODEL_PROFILE_CHANGED = "model_profile.changed", "Model profile changed"
    SHARE_CREATED = "share.created", "Share link created"
    SHARE_OPENED = "share.opened", "Share link opened"
    SHARE_REVOKED = "share.revoked", "Share link revoked"
    SHARE_FORKED = "share.forked", "Shared conversation continued"
    DATA_EXPORTED = "data.exported", "Data exported"
    DATA_IMPORTED = "data.imported", "Data imported"
    CONVERSATION_DELETED = "conversation.deleted", "Conversation deleted"
    RETENTION_RUN = "retention.run", "Retention run"


class AuditOutcome(models.TextChoices):
    SUCCESS = "success", "Success"
    FAILURE = "failure", "Failure"
    REFUSED = "refused", "Refused"


class AuditEntryQuerySet(models.QuerySet["AuditEntry"]):
    def update(self, **kwargs: Any) -> NoReturn:
        raise AuditLogImmutable("Audit entries cannot be changed.")

    def delete(self) -> NoReturn:  # type: ignore[override]
        raise AuditLogImmutable("Audit entries cannot be deleted; retention removes old ones.")

    def for_organization(self, organization_id: int) -> AuditEntryQuerySet:
        return self.filter(organization_id=organization_id)


class AuditEntry(models.Model):
    """Who did what to which object, when, from which client, and how it ended.

    Append-only: ``save`` refuses updates, ``delete`` raises, and on PostgreSQL a trigger
    (migration 0008) refuses UPDATE and DELETE except a deleted person's link going NULL
    and retention's deletes (``accounts.audit.prune``).
    """

    at = models.DateTimeField(default=timezone.now, db_index=True)
    # The org whose admins see the entry; NULL for acts tied to no org (a failed sign-in
    # with an unknown address). No constraint: a deleted org's entries stay as written.
    organization = models.ForeignKey(
        "accounts.Organization", null=True, blank=True, on_delete=models.DO_NOTHING,
        db_constraint=False, related_name="+",
    )
    # No constraint either: deleting a person writes entries about them (their
    # memberships end) after Django has already set the older entries' actor to NULL.
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
        db_constraint=False, related_name="+",
    )
    # Copied at the time: the entry still names the person after the account is gone.
    actor_email = models.CharField(max_length=254, blank=True)
    action = models.CharField(max_length=40, choices=AuditAction.choices)
    object_type = models.CharField(max_length=64, blank=True)
    object_id = models.CharField(max_length=64, blank=True)
    client_ip = models.GenericIPAddressField(null=True, blank=True)
    outcome = models.CharField(max_length=8, choices=AuditOutcome.choices,
                               default=AuditOutcome.SUCCESS)
    # Old and new values and counts; never passwords, tokens or message text.
    details = models.JSONField(default=dict, blank=True, encoder=DjangoJSONEncoder)

    objects = AuditEntryQuerySet.as_manager()

    class Meta:
        ordering = ["-at", "-id"]
        verbose_name = "audit entry"
        verbose_name_plural = "audit log"
        indexes = [
            models.Index(fields=["organization", "-at"], name="audit_org_at"),
            models.Index(fields=["organization", "action", "-at"], name="audit_org_action_at"),
        ]

    def __str__(self) -> str:
        return f"{self.at:%Y-%m-%d %H:%M:%S} {self.action} by {self.actor_email or 'system'}"

    def save(self, *args: Any, **kwargs: Any) -> None:
        if not self._state.adding:
            raise AuditLogImmutable("Audit entries cannot be changed.")
        kwargs["force_insert"] = True
        super().save(*args, **kwargs)

    def delete(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise AuditLogImmutable("Audit entries cannot be deleted; retention removes old ones.")
