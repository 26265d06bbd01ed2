"""Groups: sets of an org's people that carry a role floor, the models they may use and a
budget. Members are added by an admin, or follow a claim of the org's identity provider,
re-read at every sign-in (``accounts.groups``).

Loaded from ``accounts/models.py``, where Django looks for the app's models.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q


class Group(models.Model):
    class RoleFloor(models.TextChoices):
        MEMBER = "member", "Member"
        ADMIN = "admin", "Admin"

    organization = models.ForeignKey(
        "accounts.Organization", on_delete=models.CASCADE, related_name="groups"
    )
    name = models.CharField(max_length=120)
    # Set: membership follows the identity provider's groups claim (this value in it);
    # empty: admins add and remove members here.
    claim_value = models.CharField(
        "Provider group", max_length=255, blank=True,
        help_text="The value of the groups claim that puts a person in this group; "
        "empty to add members by hand.",
    )
    role_floor = models.CharField(
        max_length=8, choices=RoleFloor.choices, default=RoleFloor.MEMBER,
        help_text="Members of this group are at least this in the org.",
    )
    # A model listed by any group of the org is open to those groups' members only; a
    # model no group lists stays open to everyone in the org (accounts.model_access).
    profiles = models.ManyToManyField(
        "llm.ModelProfile", blank=True, related_name="+", verbose_name="models"
    )
    monthly_budget_usd = models.DecimalField(
        "Group monthly budget (USD)", max_digits=12, decimal_places=2, null=True, blank=True,
        help_text="What the group's members may spend together per month; empty: no limit.",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name", "pk"]
        constraints = [
            models.UniqueConstraint(fields=["organization", "name"], name="group_name_unique_in_org"),
            models.UniqueConstraint(fields=["organization", "claim_value"],
                                    condition=~Q(claim_value=""),
                                    name="group_claim_unique_in_org"),
            models.CheckConstraint(
                condition=Q(monthly_budget_usd__isnull=True) | Q(monthly_budget_usd__gte=0),
                name="group_budget_not_negative",
            ),
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def from_provider(self) -> bool:
        return bool(self.claim_value)


class GroupMembership(models.Model):
    group = models.ForeignKey(Group, on_delete=models.CASCADE, related_name="memberships")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="group_memberships"
    )
    added_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["group", "user"], name="one_group_membership"),
        ]

    def __str__(self) -> str:
        return f"{self.user_id} in {self.group_id}"


class RaisedRole(models.Model):
    """A membership a group's role floor raised, and the role it had before: losing the
    group gives that role back (``accounts.groups.apply_role_floors``)."""

    membership = models.OneToOneField(
        "accounts.Membership", on_delete=models.CASCADE, related_name="raised_role"
    )
    base_role = models.CharField(max_length=8)

    def __str__(self) -> str:
        return f"{self.membership_id} raised from {self.base_role}"
