"""Signal receivers that close sockets when an account or membership changes.

Hooked to signals rather than to our own views so every path counts: the Django admin,
``manage.py changepassword``, the password-reset form, a shell. Connected when Django
loads accounts' models (the end of ``accounts/models.py``). Bulk ``QuerySet.update()`` sends no signal; the consumer's
per-command session check (``revocation.ensure_session_current``) is the backstop there.
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth.signals import user_logged_out
from django.db.models.signals import post_delete, post_save, pre_delete, pre_save
from django.dispatch import receiver
from django.http import HttpRequest

from accounts import (
    audit_receivers,  # noqa: F401  (connects the audit log's receivers)
    groups,  # noqa: F401  (connects: a removed member leaves the org's groups)
)
from accounts.erasure import erase_person
from accounts.models import Membership, User
from accounts.revocation import ACCESS_CHANGED, AUTH_GONE, revoke_sockets

CREDENTIAL_FIELDS = {"is_active", "password"}


def _needs_before(instance: Any, raw: bool, update_fields: Any, fields: set[str]) -> bool:
    if raw or instance._state.adding or instance.pk is None:
        return False
    return update_fields is None or bool(fields & set(update_fields))


@receiver(user_logged_out, dispatch_uid="accounts.close_sockets_on_logout")
def close_sockets_on_logout(sender: Any, request: HttpRequest | None, user: User | None,
                            **kwargs: Any) -> None:
    # Sent before the session is flushed, so its key still names the sockets to close.
    session_key = getattr(getattr(request, "session", None), "session_key", None)
    if user is None or not session_key:
        return
    revoke_sockets(user_id=user.pk, session_key=session_key, code=AUTH_GONE,
                   reason="You signed out.")


@receiver(pre_save, sender=User, dispatch_uid="accounts.remember_credentials")
def remember_credentials(sender: Any, instance: User, raw: bool = False,
                         update_fields: Any = None, **kwargs: Any) -> None:
    # A login saves only last_login: no extra query on the hot path.
    if _needs_before(instance, raw, update_fields, CREDENTIAL_FIELDS):
        instance._credentials_before = (  # type: ignore[attr-defined]
            User.objects.filter(pk=instance.pk).values_list("is_active", "password").first()
        )


@receiver(post_save, sender=User, dispatch_uid="accounts.close_sockets_on_credentials")
def close_sockets_on_credentials(sender: Any, instance: User, created: bool = False,
                                 **kwargs: Any) -> None:
    before = instance.__dict__.pop("_credentials_before", None)
    if created or before is None:
        return
    was_active, old_password = before
    if was_active and not instance.is_active:
        revoke_sockets(user_id=instance.pk, code=AUTH_GONE,
                       reason="This account was deactivated.")
    elif instance.__dict__.get("password", old_password) != old_password:
        revoke_sockets(user_id=instance.pk, code=AUTH_GONE,
                       reason="The password of this account changed. Sign in again.")


@receiver(post_delete, sender=User, dispatch_uid="accounts.close_sockets_on_user_delete")
def close_sockets_on_user_delete(sender: Any, instance: User, **kwargs: Any) -> None:
    revoke_sockets(user_id=instance.pk, code=AUTH_GONE, reason="This account was deleted.")


@receiver(pre_save, sender=Membership, dispatch_uid="accounts.remember_role")
def remember_role(sender: Any, instance: Membership, raw: bool = False,
                  update_fields: Any = None, **kwargs: Any) -> None:
    if _needs_before(instance, raw, update_fields, {"role"}):
        instance._role_before = (  # type: ignore[attr-defined]
            Membership.objects.filter(pk=instance.pk).values_list("role", flat=True).first()
        )


@receiver(post_save, sender=Membership, dispatch_uid="accounts.close_sockets_on_role_change")
def close_sockets_on_role_change(sender: Any, instance: Membership, created: bool = False,
                                 **kwargs: Any) -> None:
    before = instance.__dict__.pop("_role_before", None)
    if created or before is None or before == instance.role:
        return
    revoke_sockets(user_id=instance.user_id, code=ACCESS_CHANGED,
                   reason=f"Your role in an organization is now {instance.get_role_display()}.")


@receiver(post_delete, sender=Membership, dispatch_uid="accounts.close_sockets_on_removal")
def close_sockets_on_removal(sender: Any, instance: Membership, **kwargs: Any) -> None:
    revoke_sockets(user_id=instance.user_id, code=ACCESS_CHANGED,
                   reason="You were removed from an organization.")


@receiver(pre_delete, sender=User, dispatch_uid="accounts.erase_person_before_delete")
def erase_person_before_delete(sender: Any, instance: User, **kwargs: Any) -> None:
    """Every path that deletes a person (admin, shell) erases their data first and keeps
    the org's numbers (accounts.erasure)."""
    erase_person(user=instance)
