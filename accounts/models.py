from __future__ import annotations

from typing import Any

from django.contrib.auth.models import AbstractUser, BaseUserManager
from django.db import models
from django.db.models import Q

from accounts.audit_models import AuditEntry  # noqa: F401  (Django finds the model here)
from accounts.group_models import Group, GroupMembership, RaisedRole  # noqa: F401  (as above)
from accounts.sso_models import ExternalIdentity, IdentityProvider  # noqa: F401  (as above)

# Retention is a whole number of days from 1 to this (ten years).
MAX_RETENTION_DAYS = 3650


class UserManager(BaseUserManager["User"]):
    use_in_migrations = True

    def _create_user(self, email: str, password: str | None, **extra: Any) -> User:
        if not email:
            raise ValueError("An email address is required")
        user = self.model(email=self.normalize_email(email).lower(), **extra)
        user.set_password(password)
        user.save(using=self._db)
        return user

    def create_user(self, email: str, password: str | None = None, **extra: Any) -> User:
        extra.setdefault("is_staff", False)
        extra.setdefault("is_superuser", False)
        return self._create_user(email, password, **extra)

    def create_superuser(self, email: str, password: str | None = None, **extra: Any) -> User:
        extra.setdefault("is_staff", True)
        extra.setdefault("is_superuser", True)
        return self._create_user(email, password, **extra)


class User(AbstractUser):
    """A person; signs in with an email address instead of a username."""

    username = None  # type: ignore[assignment]
    email = models.EmailField("email address", unique=True)
    # When a link mailed to ``email`` was opened: only a mailbox proves an address (a link
    # an admin was shown does not). Claiming an allowed email domain needs it.
    email_verified_at = models.DateTimeField(null=True, blank=True)

    USERNAME_FIELD = "email"
    REQUIRED_FIELDS: list[str] = []  # type: ignore[misc]  # django-stubs types it as a ClassVar

    objects = UserManager()  # type: ignore[misc,assignment]

    def __str__(self) -> str:
        return self.email


class Organization(models.Model):
    class SharePolicy(models.TextChoices):
        OFF = "off", "Sharing off"
        ORG = "org", "Org members only"
        PUBLIC = "public", "Public links allowed"

    name = models.CharField(max_length=120)
    created_at = models.DateTimeField(auto_now_add=True)
    time_zone = models.CharField(max_length=64, default="UTC")
    developer_message = models.TextField(
        blank=True,
        help_text="Org-wide instructions sent to the model with every turn.",
    )
    default_profile = models.ForeignKey(
        "llm.ModelProfile",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    enabled_profiles = models.ManyToManyField(
        "llm.ModelProfile", blank=True, related_name="organizations"
    )
    monthly_budget_usd = models.DecimalField(
        "Org monthly budget (USD)", max_digits=12, decimal_places=2, null=True, blank=True
    )
    member_budget_usd = models.DecimalField(
        "Member monthly budget (USD)", max_digits=12, decimal_places=2, null=True, blank=True
    )
    share_policy = models.CharField(
        max_length=8, choices=SharePolicy.choices, default=SharePolicy.ORG
    )
    # Zero Data Retention: the provider may keep nothing, so no answer runs as a stored
    # background response (store=false), at the cost of resuming after a worker restart.
    zero_data_retention = models.BooleanField(
        default=False, db_default=False,
        help_text="The org's provider agreement keeps no data: answers are never stored at "
        "the provider, so long answers cannot resume after a worker restart.",
    )
    # Retention (conversations.retention): a daily job deletes the org's conversations
    # untouched for this many days, as their owners' delete does; None keeps them.
    retention_days = models.PositiveIntegerField(
        "Delete conversations untouched for (days)", null=True, blank=True,
        help_text="Empty keeps conversations until their owners delete them.",
    )
    # What happens to the share links of the conversations retention deletes: kept, their
    # snapshots stay readable; otherwise revoked and erased with their conversations.
    retention_keep_shares = models.BooleanField(default=True, db_default=True)

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=Q(retention_days__isnull=True)
                | Q(retention_days__gte=1, retention_days__lte=MAX_RETENTION_DAYS),
                name="retention_days_in_range",
            ),
        ]

    def __str__(self) -> str:
        return self.name


class MembershipQuerySet(models.QuerySet["Membership"]):
    def admins(self) -> MembershipQuerySet:
        return self.filter(role__in=[Membership.Role.OWNER, Membership.Role.ADMIN])


class Membership(models.Model):
    class Role(models.TextChoices):
        OWNER = "owner", "Owner"
        ADMIN = "admin", "Admin"
        MEMBER = "member", "Member"

    user = models.ForeignKey(User, on_delete=models.CASCADE, related_name="memberships")
    organization = models.ForeignKey(
        Organization, on_delete=models.CASCADE, related_name="memberships"
    )
    role = models.CharField(max_length=8, choices=Role.choices, default=Role.MEMBER)
    monthly_budget_usd = models.DecimalField(
        "Member monthly budget (USD)",
        max_digits=12,
        decimal_places=2,
        null=True,
        blank=True,
        help_text="Overrides the org's member budget for this person; empty uses the default.",
    )
    joined_at = models.DateTimeField(auto_now_add=True)

    objects = MembershipQuerySet.as_manager()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["user", "organization"], name="one_membership_per_org"),
            models.CheckConstraint(
                condition=Q(monthly_budget_usd__isnull=True) | Q(monthly_budget_usd__gte=0),
                name="member_budget_not_negative",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.user} in {self.organization} ({self.role})"

    @property
    def is_admin(self) -> bool:
        return self.role in (self.Role.OWNER, self.Role.ADMIN)


class InvitationQuerySet(models.QuerySet["Invitation"]):
    def pending(self) -> InvitationQuerySet:
        from django.utils import timezone

        return self.filter(accepted_at=None, revoked_at=None, expires_at__gt=timezone.now())


class Invitation(models.Model):
    """A single-use link that lets one email address join one organization.

    Only the SHA-256 of the token is stored: a database leak does not leak usable links.
    """

    organization = models.ForeignKey(
        Organization, on_delete=models.CASCADE, related_name="invitations"
    )
    email = models.EmailField()
    role = models.CharField(max_length=8, choices=Membership.Role.choices, default=Membership.Role.MEMBER)
    token_hash = models.CharField(max_length=64, unique=True, editable=False)
    invited_by = models.ForeignKey(
        User, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField()
    accepted_at = models.DateTimeField(null=True, blank=True)
    accepted_by = models.ForeignKey(
        User, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    revoked_at = models.DateTimeField(null=True, blank=True)

    objects = InvitationQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["organization", "email"], name="invitation_org_email")]

    def __str__(self) -> str:
        return f"{self.email} to {self.organization}"

    @property
    def state(self) -> str:
        from django.utils import timezone

        if self.accepted_at:
            return "accepted"
        if self.revoked_at:
            return "revoked"
        if self.expires_at <= timezone.now():
            return "expired"
        return "pending"


class AllowedEmailDomain(models.Model):
    """People whose verified address is at ``domain`` may join ``organization`` as members
    without an invitation. A domain belongs to at most one organization."""

    organization = models.ForeignKey(
        Organization, on_delete=models.CASCADE, related_name="allowed_domains"
    )
    domain = models.CharField(max_length=253, unique=True)
    added_by = models.ForeignKey(
        User, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    added_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["domain"]

    def __str__(self) -> str:
        return f"{self.domain} → {self.organization}"


# --- Where accounts plugs itself in ---------------------------------------------------------
# Django imports every app's models in every process (web, worker, management commands,
# tests) before any request or task runs, and apps.py may not import models: so here, once
# the models above exist, the receivers are connected that close a person's websockets when
# their sign-in or access changes, erase a deleted person's data, and write the audit log.
from accounts import signals  # noqa: E402, F401
