from __future__ import annotations

import os
from typing import Any

from celery import Celery
from celery.signals import celeryd_init, worker_shutdown, worker_shutting_down

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatsite.settings")

app = Celery("chatsite")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@celeryd_init.connect
def size_database_pool(*, options: dict[str, Any] | None = None, conf: Any = None,
                       **_: Any) -> None:
    """A worker's pool follows its --concurrency, the threads that claim answers
    (chatsite/dbpool.py), not the web default."""
    from chatsite.dbpool import resize_pool, worker_pool_size

    concurrency = (options or {}).get("concurrency") or getattr(conf, "worker_concurrency", None)
    resize_pool(worker_pool_size(int(concurrency or os.cpu_count() or 1)))


@worker_shutting_down.connect
def drain_on_warm_shutdown(*, how: str = "", **_: Any) -> None:
    """SIGTERM (a deploy): finish live answers for up to WORKER_DRAIN_SECONDS, claim no
    new ones. A cold shutdown (SIGQUIT) leaves them to the reaper."""
    if how != "Warm":
        return
    from django.conf import settings

    from answers.drain import begin_drain

    begin_drain(seconds=settings.WORKER_DRAIN_SECONDS)


@worker_shutdown.connect
def wait_for_live_answers(**_: Any) -> None:
    """The tasks returned once their answers were claimed: a draining worker's process
    stays until the event loop's answers end (or the drain's deadline hands them back
    and exits)."""
    from answers.drain import is_draining
    from answers.engine import engine

    if is_draining():
        engine.wait_idle()

