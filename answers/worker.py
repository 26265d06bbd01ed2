"""A worker's stop, as Celery announces it: the drain on SIGTERM (``answers.drain``).

The receivers are connected when Django loads the answers app, in every process; only
a worker's stop sends these signals.
"""

from __future__ import annotations

from typing import Any

from celery.signals import worker_shutdown, worker_shutting_down
from django.conf import settings

from answers.drain import begin_drain, is_draining
from answers.engine import engine


@worker_shutting_down.connect
def drain_on_warm_shutdown(*, how: str = "", **_: Any) -> None:
    """SIGTERM (a deploy): finish live answers for up to WORKER_DRAIN_SECONDS, claim no
    new ones. A cold shutdown (SIGQUIT) leaves them to the reaper."""
    if how != "Warm":
        return
    begin_drain(seconds=settings.WORKER_DRAIN_SECONDS)


@worker_shutdown.connect
def wait_for_live_answers(**_: Any) -> None:
    """The tasks returned once their answers were claimed: a draining worker's process
    stays until the event loop's answers end (or the drain's deadline hands them back
    and exits)."""
    if is_draining():
        engine.wait_idle()
