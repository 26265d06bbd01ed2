"""Receivers that write the audit log for acts no single view owns.

Sign-in, sign-out and failures come from Django's auth signals and the pause from
django-axes, so the admin login counts as much as ours. A password saved on any path (the
admin, ``manage.py changepassword``, the reset form) is recorded when its user row is
saved. Changes to model profiles, org settings, budgets and roles are diffed by
django-auditlog (registered here) and filed under their org by ``audit_model_change``.
Imported at module level by ``accounts.signals``, which ``accounts/models.py`` loads.
"""

from __future__ import annotations

from typing import Any

from auditlog.models import LogEntry
from auditlog.registry import auditlog
from auditlog.signals import post_log
from axes.signals import user_locked_out
from django.contrib.auth.signals import user_logged_in, user_logged_out, user_login_failed
from django.db.models import Q
from django.db.models.signals import m2m_changed, post_save
from django.dispatch import receiver
from django.http import HttpRequest

from accounts import audit
from accounts.audit_models import AuditAction, AuditOutcome
from accounts.lockout import username_from_request
from accounts.models import Membership, Organization, User
from llm.models import ModelProfile

BUDGET_FIELDS = {"monthly_budget_usd", "member_budget_usd"}
ORGANIZATION_FIELDS = ["name", "time_zone", "developer_message", "default_profile",
                       "monthly_budget_usd", "member_budget_usd", "share_policy",
                       "zero_data_retention", "retention_days", "retention_keep_shares"]

# django-auditlog diffs these on every save, whoever makes it; ``audit_model_change``
# turns each of its rows into audit entries. Organization fields a later feature adds are
# named here when they matter (a new column is not audited by surprise).
auditlog.register(Membership, include_fields=["role", "monthly_budget_usd"])
auditlog.register(
    Organization, include_fields=ORGANIZATION_FIELDS, mask_fields=["developer_message"],
    mask_callable="accounts.audit.length_only",
)
auditlog.register(
    ModelProfile, exclude_fields=["catalog_values", "listed_at"], mask_fields=["endpoint"],
    mask_callable="accounts.audit.redact_url_password",
)


def _known_user(email: str) -> User | None:
    return User.objects.filter(email=email).first() if email else None


@receiver(user_logged_in, dispatch_uid="accounts.audit_sign_in")
def audit_sign_in(sender: Any, request: HttpRequest | None, user: User, **kwargs: Any) -> None:
    # Single sign-on names its method (accounts.sso_views); a password sign-in names none.
    method = getattr(request, "sign_in_method", None)
    audit.record_for_person(AuditAction.SIGN_IN, user=user, request=request, actor=user,
                            **({"method": method} if method else {}))


@receiver(user_login_failed, dispatch_uid="accounts.audit_sign_in_failed")
def audit_sign_in_failed(sender: Any, credentials: dict[str, Any],
                         request: HttpRequest | None = None, **kwargs: Any) -> None:
    if (request is not None and getattr(request, "axes_locked_out", False)
            and getattr(request, "axes_failures_since_start", None) is None):
        return  # refused unchecked during a pause: audit_locked_out records it
    email = username_from_request(request, credentials)  # type: ignore[arg-type]
    audit.record_for_person(AuditAction.SIGN_IN_FAILED, user=_known_user(email),
                            request=request, actor_email=email, outcome=AuditOutcome.FAILURE)


@receiver(user_locked_out, dispatch_uid="accounts.audit_locked_out")
def audit_locked_out(sender: Any, request: HttpRequest, username: str | None = None,
                     **kwargs: Any) -> None:
    email = (username or "").strip().lower()
    failures = getattr(request, "axes_failures_since_start", None)
    details: dict[str, Any] = ({"attempt": "refused during the pause"} if failures is None
                               else {"attempt": "started the pause", "failures": failures})
    audit.record_for_person(AuditAction.LOCKED_OUT, user=_known_user(email), request=request,
                            actor_email=email, outcome=AuditOutcome.REFUSED, **details)


@receiver(user_logged_out, dispatch_uid="accounts.audit_sign_out")
def audit_sign_out(sender: Any, request: HttpRequest | None, user: User | None,
                   **kwargs: Any) -> None:
    if user is not None:
        audit.record_for_person(AuditAction.SIGN_OUT, user=user, request=request, actor=user)


@receiver(post_save, sender=User, dispatch_uid="accounts.audit_password_change")
def audit_password_change(sender: Any, instance: User, created: bool = False,
                          update_fields: Any = None, raw: bool = False, **kwargs: Any) -> None:
    # set_password keeps the new raw password in _password until the save completes: the
    # only sign that this save stores a new one, without reading the old hash first.
    if created or raw or getattr(instance, "_password", None) is None:
        return
    if update_fields is not None and "password" not in update_fields:
        return
    action = audit.current_password_action()
    # A reset is the person's own act (they proved the inbox); any other save is made by
    # whoever is signed in (an admin), or by the operator's shell.
    actor = instance if action == AuditAction.PASSWORD_RESET else None
    audit.record_for_person(action, user=instance, actor=actor)


def _organizations_using(profile: ModelProfile, diff: dict[str, Any]) -> list[int | None]:
    """Orgs whose people may pick ``profile`` (the rule of accounts.model_access): it is on
    their list, their list is empty (every active profile), or it is their default. A
    profile nobody can use before or after the change (inactive, or discovered and not
    yet priced) concerns no org."""
    def usable(active: Any, origin: Any) -> bool:
        return active in (True, "True") and origin != ModelProfile.Origin.DISCOVERED

    before = usable(diff.get("is_active", {"old": profile.is_active})["old"],
                    diff.get("origin", {"old": profile.origin})["old"])
    if profile.pk is None or not (before or usable(profile.is_active, profile.origin)):
        return []
    return list(Organization.objects.filter(
        Q(enabled_profiles=profile) | Q(enabled_profiles=None) | Q(default_profile=profile)
    ).values_list("pk", flat=True).distinct())


OPERATIONS = {LogEntry.Action.CREATE: "created", LogEntry.Action.UPDATE: "changed",
              LogEntry.Action.DELETE: "deleted"}


@receiver(post_log, dispatch_uid="accounts.audit_model_change")
def audit_model_change(sender: Any, instance: Any, action: int, changes: Any = None,
                       error: Exception | None = None, **kwargs: Any) -> None:
    if error is not None or not changes or action not in OPERATIONS:
        return
    diff = audit.changes_from_auditlog(changes)
    operation = OPERATIONS[action]
    if sender is Membership:
        _membership_changed(instance, action, diff)
    elif sender is Organization and action == LogEntry.Action.UPDATE:
        budgets = {field: diff[field] for field in diff if field in BUDGET_FIELDS}
        settings_ = {field: diff[field] for field in diff if field not in BUDGET_FIELDS}
        if budgets:
            audit.record(AuditAction.BUDGET_CHANGED, organization=instance, obj=instance,
                         changes=budgets)
        if settings_:
            audit.record(AuditAction.ORG_SETTINGS_CHANGED, organization=instance, obj=instance,
                         changes=settings_)
    elif sender is ModelProfile:
        # A profile is shared by every org that may use it; each of their admins sees
        # the change, and one entry with no org keeps it when none does.
        for organization_id in _organizations_using(instance, diff) or [None]:
            audit.record(AuditAction.MODEL_PROFILE_CHANGED, organization=organization_id,
                         obj=instance, profile=instance.name, operation=operation, changes=diff)


def _membership_changed(membership: Membership, action: int, diff: dict[str, Any]) -> None:
    member = membership.user.email
    common: dict[str, Any] = {"organization": membership.organization_id, "obj": membership,
                              "member": member}
    if action == LogEntry.Action.CREATE:
        audit.record(AuditAction.MEMBER_ADDED, role=membership.role, **common)
    elif action == LogEntry.Action.DELETE:
        audit.record(AuditAction.MEMBER_REMOVED, role=membership.role, **common)
    else:
        if "role" in diff:
            audit.record(AuditAction.ROLE_CHANGED, **common, **diff["role"])
        if "monthly_budget_usd" in diff:
            audit.record(AuditAction.BUDGET_CHANGED, **common,
                         changes={"monthly_budget_usd": diff["monthly_budget_usd"]})


@receiver(m2m_changed, sender=Organization.enabled_profiles.through,
          dispatch_uid="accounts.audit_enabled_profiles")
def audit_enabled_profiles(sender: Any, instance: Any, action: str, reverse: bool,
                           pk_set: set[int] | None = None, **kwargs: Any) -> None:
    """Which models an org may use is an org setting (django-auditlog diffs no m2m here)."""
    change = {"post_add": "added", "post_remove": "removed", "post_clear": "cleared"}.get(action)
    if change is None:
        return
    if reverse:  # profile.organizations.add(...): one entry per org
        for organization_id in sorted(pk_set or ()):
            audit.record(AuditAction.ORG_SETTINGS_CHANGED, organization=organization_id,
                         enabled_profiles={change: [instance.name]})
        return
    names = sorted(ModelProfile.objects.filter(pk__in=pk_set or ()).values_list("name", flat=True))
    audit.record(AuditAction.ORG_SETTINGS_CHANGED, organization=instance, obj=instance,
                 enabled_profiles={change: names} if change != "cleared" else {change: True})
