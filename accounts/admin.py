from typing import Any

from django.contrib import admin
from django.contrib.auth.admin import UserAdmin as BaseUserAdmin

from accounts.models import AuditEntry, IdentityProvider, Membership, Organization, User


@admin.register(User)
class UserAdmin(BaseUserAdmin):
    ordering = ["email"]
    list_display = ["email", "is_active", "is_staff", "date_joined", "last_login"]
    search_fields = ["email"]
    fieldsets = (
        (None, {"fields": ("email", "password")}),
        ("Permissions", {"fields": ("is_active", "is_staff", "is_superuser", "groups")}),
        ("Dates", {"fields": ("last_login", "date_joined", "email_verified_at")}),
    )
    add_fieldsets = ((None, {"classes": ("wide",), "fields": ("email", "password1", "password2")}),)
    # Only a link mailed to the address verifies it (accounts.verification).
    readonly_fields = ["email_verified_at"]

    def save_model(self, request: Any, obj: User, form: Any, change: bool) -> None:
        if change and "email" in form.changed_data:
            obj.email_verified_at = None  # the new address has not been proven
        super().save_model(request, obj, form, change)


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 0
    raw_id_fields = ["user"]


@admin.register(Organization)
class OrganizationAdmin(admin.ModelAdmin):
    list_display = ["name", "monthly_budget_usd", "member_budget_usd", "share_policy", "default_profile", "created_at"]
    list_filter = ["share_policy"]
    search_fields = ["name"]
    filter_horizontal = ["enabled_profiles"]
    inlines = [MembershipInline]


@admin.register(Membership)
class MembershipAdmin(admin.ModelAdmin):
    list_display = ["user", "organization", "role", "monthly_budget_usd", "joined_at"]
    list_filter = ["role"]
    search_fields = ["user__email", "organization__name"]
    raw_id_fields = ["user", "organization"]


@admin.register(AuditEntry)
class AuditEntryAdmin(admin.ModelAdmin):
    """The audit log of every org, read only: nobody adds, edits or deletes an entry here
    (accounts.audit; retention removes old ones)."""

    list_display = ["at", "organization_id", "actor_email", "action", "object_type",
                    "object_id", "outcome", "client_ip"]
    list_filter = ["action", "outcome"]
    search_fields = ["actor_email", "object_id"]
    # The ids, not the rows: an entry outlives the org or person it names.
    fields = ("at", "organization_id", "actor_id", "actor_email", "action", "object_type",
              "object_id", "client_ip", "outcome", "details")
    readonly_fields = fields

    def has_add_permission(self, request: Any) -> bool:
        return False

    def has_change_permission(self, request: Any, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: Any, obj: Any = None) -> bool:
        return False


@admin.register(IdentityProvider)
class IdentityProviderAdmin(admin.ModelAdmin):
    """The operator connects an org to its OpenID Connect provider here (docs/sso.md); the
    client secret stays in the environment, named by ``client_secret_env``."""

    list_display = ["display_name", "organization", "discovery_url", "enabled", "sso_only"]
    list_filter = ["enabled", "sso_only"]
    search_fields = ["display_name", "organization__name"]
    raw_id_fields = ["organization"]
