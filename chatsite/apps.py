from __future__ import annotations

from celery.signals import task_postrun, task_prerun, worker_init
from django.apps import AppConfig

from chatsite import (
    checks,  # noqa: F401  (registers the settings checks)
    logs,
    metrics,
    pgqueries,
)


class ChatsiteConfig(AppConfig):
    name = "chatsite"
    verbose_name = "Site settings"

    def ready(self) -> None:
        pgqueries.cache_long_statements()
        # Celery loads Django (and so this) before it announces a worker's start.
        worker_init.connect(metrics.serve_worker_metrics, dispatch_uid="chatsite.worker_metrics")
        # Each task's log lines carry its id and name, and nothing of the one before.
        task_prerun.connect(logs.task_started, dispatch_uid="chatsite.logs.task_started")
        task_postrun.connect(logs.task_ended, dispatch_uid="chatsite.logs.task_ended")
