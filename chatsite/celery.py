from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from celery import Celery
from celery.signals import celeryd_init

from chatsite.dbpool import resize_pool, worker_pool_size

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatsite.settings")

app = Celery("chatsite")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


def side_queues(routes: Mapping[str, Mapping[str, Any]] | None = None) -> list[str]:
    """The queues ``routes`` (this app's, CELERY_TASK_ROUTES, by default) send side calls
    (titles) to: the side pool consumes them, the threads that claim answers never do."""
    if routes is None:
        routes = app.conf.task_routes or {}
    return sorted({str(route["queue"]) for route in routes.values()})


@celeryd_init.connect
def size_database_pool(*, options: dict[str, Any] | None = None, conf: Any = None,
                       **_: Any) -> None:
    """A worker's pool follows its --concurrency, the threads that claim answers
    (chatsite/dbpool.py), not the web default. (A worker's drain on SIGTERM is the
    answers app's: answers/worker.py.)"""
    concurrency = (options or {}).get("concurrency") or getattr(conf, "worker_concurrency", None)
    resize_pool(worker_pool_size(int(concurrency or os.cpu_count() or 1)))
