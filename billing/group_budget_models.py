"""What a group's members spend together in a month, and which group months a turn's
reservation holds (``billing.quotas``: reserve before, settle after, as for the org's and
the member's months).

Loaded from ``billing/models.py``, where Django looks for the app's models.
"""

from __future__ import annotations

from decimal import Decimal

from django.db import models
from django.db.models import Q

ZERO = Decimal(0)


class GroupUsagePeriod(models.Model):
    """Money spent and reserved by a group's members in one calendar month (the org's time
    zone). Only groups with a budget have rows."""

    # No index of its own: one_group_period's (group, period_start) serves its lookups.
    group = models.ForeignKey("accounts.Group", on_delete=models.CASCADE,
                              related_name="usage_periods", db_index=False)
    period_start = models.DateField()
    spent_usd = models.DecimalField(max_digits=14, decimal_places=6, default=ZERO)
    reserved_usd = models.DecimalField(max_digits=14, decimal_places=6, default=ZERO)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["group", "period_start"], name="one_group_period"),
            models.CheckConstraint(condition=Q(reserved_usd__gte=0),
                                   name="group_reserved_not_negative"),
        ]

    def __str__(self) -> str:
        return f"{self.group_id} / {self.period_start:%Y-%m}"


class GroupHold(models.Model):
    """A reservation holds its amount on this group month too: settlement and extension
    move the same months, even if the person left the group meanwhile."""

    # No index of its own: one_hold_per_group_period's (reservation, period) serves it.
    reservation = models.ForeignKey("billing.Reservation", on_delete=models.CASCADE,
                                    related_name="group_holds", db_index=False)
    period = models.ForeignKey(GroupUsagePeriod, on_delete=models.CASCADE, related_name="+")

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["reservation", "period"], name="one_hold_per_group_period"),
        ]

    def __str__(self) -> str:
        return f"{self.reservation_id} on {self.period_id}"
