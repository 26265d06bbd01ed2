"""Background work of the accounts layer."""

from __future__ import annotations

from celery import shared_task

from accounts import audit


@shared_task(name="accounts.tasks.prune_audit_log", ignore_result=True)
def prune_audit_log() -> None:
    """Daily: delete audit entries older than AUDIT_RETENTION_DAYS (accounts.audit.prune)."""
    audit.prune()
