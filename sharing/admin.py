from __future__ import annotations

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils import timezone

from sharing.models import ShareLink


@admin.register(ShareLink)
class ShareLinkAdmin(admin.ModelAdmin):
    # Metadata only: like conversations, admins do not read what people wrote here, and
    # the token itself is never stored (only its hash, which is hidden too).
    list_display = ["id", "organization", "created_by", "visibility", "created_at",
                    "expires_at", "revoked_at", "view_count"]
    list_filter = ["visibility", "organization"]
    search_fields = ["created_by__email", "organization__name"]
    raw_id_fields = ["organization", "conversation", "created_by", "revoked_by"]
    fields = ["organization", "conversation", "created_by", "visibility", "created_at",
              "snapshot_at", "expires_at", "revoked_at", "revoked_by", "view_count"]
    readonly_fields = ["organization", "conversation", "created_by", "created_at",
                       "snapshot_at", "revoked_at", "revoked_by", "view_count"]
    actions = ["revoke"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # links are created from a conversation, where the token is shown

    @admin.action(description="Revoke selected links")
    def revoke(self, request: HttpRequest, queryset: QuerySet[ShareLink]) -> None:
        # Race: a link revoked meanwhile keeps its first revoked_at/revoked_by.
        count = queryset.filter(revoked_at__isnull=True).update(
            revoked_at=timezone.now(), revoked_by=request.user
        )
        self.message_user(request, f"Revoked {count} link(s).")
