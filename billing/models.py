from __future__ import annotations

from decimal import Decimal

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone

ZERO = Decimal(0)


class UsagePeriod(models.Model):
    """Money spent and reserved in one calendar month (in the org's time zone).

    ``user`` empty is the org's own row; otherwise the row of one member in that org.
    """

    organization = models.ForeignKey(
        "accounts.Organization", on_delete=models.CASCADE, related_name="usage_periods"
    )
    # CASCADE on purpose: a member's row only enforces that member's budget; the money
    # stays on the org's row (and on the settled reservations) after the member is deleted.
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.CASCADE,
        related_name="usage_periods",
    )
    period_start = models.DateField()
    spent_usd = models.DecimalField(max_digits=14, decimal_places=6, default=ZERO)
    reserved_usd = models.DecimalField(max_digits=14, decimal_places=6, default=ZERO)
    alerted_80 = models.BooleanField(default=False)
    alerted_100 = models.BooleanField(default=False)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["organization", "period_start"], condition=Q(user__isnull=True),
                name="one_org_period",
            ),
            models.UniqueConstraint(
                fields=["organization", "user", "period_start"], condition=Q(user__isnull=False),
                name="one_member_period",
            ),
            models.CheckConstraint(condition=Q(reserved_usd__gte=0), name="reserved_not_negative"),
        ]

    def __str__(self) -> str:
        who = self.user or "whole org"
        return f"{self.organization} / {who} / {self.period_start:%Y-%m}"


class Reservation(models.Model):
    """A turn's (or a title's) worst-case cost held against both budgets until it
    settles; once settled, the billing record of what was charged.

    One per assistant message: settlement is keyed by the message, so a redelivered
    task, a retry or the reaper can never charge twice. A title has no message; its
    row carries its own usage and is settled by its id.

    It is also the usage ledger: the row records what the usage report and the cost
    estimates read (model, effort, the day, token counts, cost, how the answer ended), so
    billing never reads the conversations it bills. The answer's facts are copied when it
    reserves (``quotas.reserve``) and its usage when it settles (``quotas.settle``).

    Deletion (docs/decisions.md#0024): deleting the message or the member keeps this row and
    its numbers (SET_NULL: no personal data is left on it); deleting the org deletes it
    with the org's budget rows.
    """

    class Kind(models.TextChoices):
        ANSWER = "answer", "Answer"
        TITLE = "title", "Title"

    kind = models.CharField(max_length=8, choices=Kind.choices, default=Kind.ANSWER)
    message = models.OneToOneField(
        "conversations.Message", null=True, blank=True, on_delete=models.SET_NULL,
        related_name="reservation",
    )
    org_period = models.ForeignKey(UsagePeriod, on_delete=models.CASCADE, related_name="+")
    member_period = models.ForeignKey(
        UsagePeriod, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    # Whose turn (or title) it was: the usage report's member. SET_NULL: a deleted
    # member's lines stay, as "(deleted member)".
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
        related_name="+",
    )
    # The model that answered (a title's model: titles are their own usage line) and,
    # for an answer, the profile and reasoning effort it ran with (the cost estimates'
    # samples). SET_NULL: a profile is never deleted while answers use it (PROTECT).
    model_name = models.CharField(max_length=200, blank=True)
    profile = models.ForeignKey(
        "llm.ModelProfile", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    reasoning_effort = models.CharField(max_length=16, blank=True, default="", db_default="")
    prompt_tokens = models.PositiveIntegerField(default=0)
    cached_tokens = models.PositiveIntegerField(default=0)
    completion_tokens = models.PositiveIntegerField(default=0)
    reasoning_tokens = models.PositiveIntegerField(default=0)
    # Prompt tokens written to the prompt cache: their own price line on today's models.
    cache_write_tokens = models.PositiveIntegerField(default=0, db_default=0)
    amount_usd = models.DecimalField(max_digits=14, decimal_places=6)
    charged_usd = models.DecimalField(max_digits=14, decimal_places=6, null=True, blank=True)
    # An answer's cost as billed to it (the usage report's "message cost"): what it was
    # settled with, before the charge is capped at the reservation.
    cost_usd = models.DecimalField(max_digits=14, decimal_places=6, null=True, blank=True)
    # How the answer ended (its final status: "done", "failed", ...); empty until settled.
    outcome = models.CharField(max_length=12, blank=True, default="", db_default="")
    estimated = models.BooleanField(default=False)
    prompt_tokens_estimate = models.PositiveIntegerField(default=0)
    # An answer's row takes its message's creation time (the report's day and period).
    created_at = models.DateTimeField(default=timezone.now)
    settled_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [
            models.Index(fields=["created_at"], name="unsettled_reservations",
                         condition=Q(settled_at__isnull=True)),
        ]

    def __str__(self) -> str:
        return f"reservation for message {self.message_id}"


class BudgetRequest(models.Model):
    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        APPROVED = "approved", "Approved"
        DECLINED = "declined", "Declined"

    membership = models.ForeignKey(
        "accounts.Membership", on_delete=models.CASCADE, related_name="budget_requests"
    )
    note = models.TextField(max_length=2000, blank=True)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    created_at = models.DateTimeField(auto_now_add=True)
    decided_at = models.DateTimeField(null=True, blank=True)
    decided_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    new_budget_usd = models.DecimalField(max_digits=12, decimal_places=2, null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"budget request {self.pk} ({self.status})"


class Notification(models.Model):
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="notifications"
    )
    organization = models.ForeignKey(
        "accounts.Organization", on_delete=models.CASCADE, related_name="notifications"
    )
    text = models.CharField(max_length=500)
    link = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    read_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return self.text[:60]


# --- Where billing plugs itself in ---------------------------------------------------------
# Django imports every app's models in every process (web, worker, management commands)
# before any request or task runs, and apps.py may not import models: so here, after the
# models above exist, billing answers the Members page's "This month" column (accounts).
from accounts import members  # noqa: E402
from billing import usage  # noqa: E402
from billing.group_budget_models import GroupHold, GroupUsagePeriod  # noqa: E402, F401

members.register_spend_source(usage.members_month)
