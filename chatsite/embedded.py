"""Embedded mode: a Celery worker, its side pool and the reaper inside the web process.

Used by ``make run`` with no settings (in-memory broker and channel layer only work
within one process) and by the test suite, which runs a real worker against Redis.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable
from typing import cast

from celery import Celery
from celery.worker import WorkController
from django.conf import settings
from kombu.asynchronous import get_event_loop, set_event_loop

from chatsite.celery import app, side_queues

logger = logging.getLogger(__name__)

REAPER_SCHEDULE_ENTRY = "reap-stale-replies"


def start_worker(*, concurrency: int = 50) -> WorkController:
    """A real Celery worker (threads pool) running in a daemon thread: it claims answers
    from the default queue. Side calls (titles) are the side pool's (``start_side_worker``)."""
    return _start(app, queues=[str(app.conf.task_default_queue)], concurrency=concurrency,
                  name="celery-worker", node="embedded")


def start_side_worker(*, concurrency: int | None = None) -> WorkController:
    """The side pool: a second Celery worker in this process, with SIDE_CALL_CONCURRENCY
    threads (by default) of its own, that consumes only the side queues (titles). A title
    that takes seconds holds one of these threads, never one that claims answers.

    It runs on an app of its own (the same configuration): which queues a worker consumes
    is kept on its app (``app.amqp.queues``), so sharing the answers' app would make one
    worker's choice the other's too (now, or when it reconnects to the broker)."""
    return _start(_side_app(), queues=side_queues(),
                  concurrency=concurrency or settings.SIDE_CALL_CONCURRENCY,
                  name="celery-side-worker", node="embedded-side")


@functools.cache
def _side_app() -> Celery:
    side = Celery("chatsite-side", set_as_current=False)
    side.config_from_object("django.conf:settings", namespace="CELERY")
    side.autodiscover_tasks()
    return side


def _start(worker_app: Celery, *, queues: list[str], concurrency: int, name: str,
           node: str) -> WorkController:
    # A worker on an asynchronous broker (Redis) runs kombu's event loop, which it takes
    # from a module global when built, creating it if there is none, and closes when it
    # stops: each worker of this process builds its own, or stopping one would close the
    # loop under the other.
    shared = get_event_loop()
    set_event_loop(None)
    try:
        worker = WorkController(
            app=worker_app,
            pool="threads",
            concurrency=concurrency,
            queues=queues,
            without_heartbeat=True,
            without_mingle=True,
            without_gossip=True,
            hostname=f"{node}-{threading.get_ident()}@localhost",
            loglevel="WARNING",
        )
    finally:
        set_event_loop(shared)
    threading.Thread(target=worker.start, name=name, daemon=True).start()
    return worker


def start_reaper(*, every: float | None = None) -> threading.Thread:
    """Beat's reaper (``CELERY_BEAT_SCHEDULE["reap-stale-replies"]``) in a daemon thread,
    every ``every`` seconds (the schedule's by default): embedded mode runs no beat.

    The task is found by its name, as beat finds it, and run in this thread rather than
    queued: stale answers are reaped even while every worker thread is busy."""
    entry = settings.CELERY_BEAT_SCHEDULE[REAPER_SCHEDULE_ENTRY]
    reap = app.tasks[entry["task"]]
    interval = cast(float, entry["schedule"]) if every is None else every

    def loop() -> None:
        while True:
            time.sleep(interval)
            try:
                reap()
            except Exception:
                logger.exception("reaper failed")

    thread = threading.Thread(target=loop, name="reaper", daemon=True)
    thread.start()
    return thread


def start_periodic(job: Callable[[], object], *, every: float, name: str) -> threading.Thread:
    """Run ``job`` now and then every ``every`` seconds in a daemon thread: the beat
    schedule's daily jobs for embedded mode, which runs no beat."""

    def loop() -> None:
        while True:
            try:
                job()
            except Exception:
                logger.exception("%s failed", name)
            time.sleep(every)

    thread = threading.Thread(target=loop, name=name, daemon=True)
    thread.start()
    return thread
