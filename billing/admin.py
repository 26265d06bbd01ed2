from __future__ import annotations

from django.contrib import admin
from django.http import HttpRequest

from accounts.models import Invitation
from billing.models import BudgetRequest, Notification, Reservation, UsagePeriod


@admin.register(UsagePeriod)
class UsagePeriodAdmin(admin.ModelAdmin):
    list_display = ["organization", "user", "period_start", "spent_usd", "reserved_usd",
                    "alerted_80", "alerted_100"]
    list_filter = ["period_start", "alerted_80", "alerted_100", "organization"]
    search_fields = ["organization__name", "user__email"]
    raw_id_fields = ["organization", "user"]
    date_hierarchy = "period_start"
    # Spend moves only through reserve()/settle(); editing it by hand would desynchronise
    # the ledger from the reservations.
    readonly_fields = ["spent_usd", "reserved_usd"]


@admin.register(Reservation)
class ReservationAdmin(admin.ModelAdmin):
    list_display = ["message", "amount_usd", "charged_usd", "estimated", "created_at", "settled_at"]
    list_filter = ["estimated", ("settled_at", admin.EmptyFieldListFilter), "created_at"]
    raw_id_fields = ["message", "org_period", "member_period", "user", "profile"]
    # The ledger moves only through reserve()/settle() (the usage report reads it).
    readonly_fields = ["amount_usd", "charged_usd", "cost_usd", "outcome", "settled_at",
                       "created_at"]
    date_hierarchy = "created_at"


@admin.register(BudgetRequest)
class BudgetRequestAdmin(admin.ModelAdmin):
    list_display = ["membership", "status", "created_at", "decided_by", "decided_at",
                    "new_budget_usd"]
    list_filter = ["status", "created_at"]
    search_fields = ["membership__user__email", "membership__organization__name", "note"]
    raw_id_fields = ["membership", "decided_by"]


@admin.register(Notification)
class NotificationAdmin(admin.ModelAdmin):
    list_display = ["user", "organization", "text", "created_at", "read_at"]
    list_filter = [("read_at", admin.EmptyFieldListFilter), "created_at"]
    search_fields = ["user__email", "text"]
    raw_id_fields = ["user", "organization"]


# Registered here because accounts/admin.py belongs to another workstream; it can move
# there unchanged (the admin lists it under "Accounts" either way).
@admin.register(Invitation)
class InvitationAdmin(admin.ModelAdmin):
    list_display = ["email", "organization", "role", "invited_by", "created_at", "expires_at",
                    "accepted_at", "revoked_at"]
    list_filter = ["role", ("accepted_at", admin.EmptyFieldListFilter),
                   ("revoked_at", admin.EmptyFieldListFilter), "expires_at"]
    search_fields = ["email", "organization__name"]
    raw_id_fields = ["organization", "invited_by", "accepted_by"]
    readonly_fields = ["token_hash", "created_at", "accepted_at", "accepted_by"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        # The raw token exists only in the email invite() sends; an invitation made
        # here would have no usable link. Invite from the org's Members page.
        return False
