"""Embedded mode: a Celery worker and the reaper inside the web process.

Used by ``make run`` with no settings (in-memory broker and channel layer only work
within one process) and by the test suite, which runs a real worker against Redis.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from celery.worker import WorkController

from chatsite.celery import app

logger = logging.getLogger(__name__)


def start_worker(*, concurrency: int = 50) -> WorkController:
    """A real Celery worker (threads pool) running in a daemon thread."""
    worker = WorkController(
        app=app,
        pool="threads",
        concurrency=concurrency,
        without_heartbeat=True,
        without_mingle=True,
        without_gossip=True,
        hostname=f"embedded-{threading.get_ident()}@localhost",
        loglevel="WARNING",
    )
    threading.Thread(target=worker.start, name="celery-worker", daemon=True).start()
    return worker


def start_reaper(*, every: float = 30.0) -> threading.Thread:
    from answers.replies import reap_stale_replies

    def loop() -> None:
        while True:
            time.sleep(every)
            try:
                reap_stale_replies()
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
