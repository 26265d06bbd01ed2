"""A worker's graceful stop (a deploy, ``docker compose stop``, SIGTERM).

Celery's warm shutdown stops consuming and waits for the running tasks, and still runs
tasks it had already received; a task ends once its answer is claimed, and the process
then waits for its event loop's answers (``answers.worker.wait_for_live_answers``).
``begin_drain`` adds what a minute-long answer needs: no new claims once the stop began (``generate_reply`` hands
such a task back to the queue for another worker), and a deadline: answers still live
``WORKER_DRAIN_SECONDS`` later are handed to another worker when they run in background
mode (it resumes them), and otherwise ended ``interrupted`` with their partial text right
away (instead of waiting for the reaper to find a lapsed lease); then the process exits.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable

from django.db import close_old_connections, connection
from django.utils import timezone

from answers import lifecycle, reaper
from answers.live import monitor
from conversations.models import Message

logger = logging.getLogger(__name__)

_draining = threading.Event()
_called_off = threading.Event()


def is_draining() -> bool:
    return _draining.is_set()


def begin_drain(
    *, seconds: float, exit_process: Callable[[int], object] = os._exit
) -> threading.Thread:
    """Stop claiming answers; hand back those still live after ``seconds`` and exit.

    Returns the watchdog thread (a daemon: when every answer ends sooner, Celery's own
    shutdown finishes and the process exits without it).
    """
    _draining.set()
    _called_off.clear()

    def watchdog() -> None:
        if _called_off.wait(seconds):
            return
        # Still running at the deadline (else Celery's shutdown would have ended the
        # process): the stop is bounded, whatever holds it up.
        try:
            handed_back = hand_back_live_answers()
            logger.warning(
                "drain: %d answers still live after %ss handed back or interrupted",
                handed_back, seconds,
            )
        except Exception:
            logger.exception("drain: could not end the live answers; the reaper will")
        finally:
            close_old_connections()
            connection.close()
        exit_process(0)

    thread = threading.Thread(target=watchdog, name="worker-drain", daemon=True)
    thread.start()
    logger.warning("drain: no new answers; waiting up to %ss for %s live ones", seconds,
                   _live_count())
    return thread


def stop_draining() -> None:
    """Claim again and call off the deadline (a worker that stays up, and tests)."""
    _called_off.set()
    _draining.clear()


def _live_count() -> int:
    return len(monitor.snapshot())


def hand_back_live_answers() -> int:
    """Give up every answer this process is streaming: a background answer goes back to
    the queue for another worker to resume from its last checkpoint (its response keeps
    running at the provider); any other ends ``interrupted``, keeping its partial text
    (saved checkpoints plus the replay buffer), with its budget settled.

    Returns how many this process handed back or ended.
    """
    replies = monitor.snapshot()
    ids = [reply.message_id for reply in replies]
    for message_id in ids:
        # Off the monitor first, so it cannot renew a lease we are about to give up.
        monitor.unregister(message_id)
    # Race: an answer may finish on the event loop right now; the status filter leaves
    # a finished one alone, and interrupt()'s locked conditional update ends each once.
    Message.objects.filter(pk__in=ids, status=Message.Status.STREAMING).update(
        lease_expires_at=timezone.now()
    )
    # The lapsed lease lets one successor reclaim it (lifecycle.reclaim); its claim then
    # fences out whatever this process still writes before it exits.
    resumable = reaper.resumable(ids)
    for message_id in resumable:
        reaper.hand_back(message_id)
    now = timezone.now()
    ended = sum(lifecycle.interrupt(message_id, now=now) for message_id in ids
                if message_id not in resumable)
    for reply in replies:
        if reply.message_id not in resumable:
            # Nobody will see (or pay for) more tokens of it: close its upstream stream.
            # Its coroutine finds the answer already ended and lets it be. A handed-back
            # answer's stream is left alone: closing it would cancel the response upstream.
            reply.cancel()
    return ended + len(resumable)
