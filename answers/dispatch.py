"""Handing an answer to the workers, or refusing the turn when the queue is down.

A turn is saved in one transaction and queued after commit. Were the broker down, the
commit would leave a pending answer (and its budget reservation) that no worker will
ever see. So ``start_turn`` first checks that the broker answers (one PING) and refuses
with ``service_unavailable`` before writing anything; if the broker fails in the moment
between that check and the publish, ``queue_reply`` ends the saved answer ``failed`` at
$0 with its reservation released, and the sender gets the same error.
"""

from __future__ import annotations

import functools
import logging

import redis

from answers import lifecycle
from chatsite.celery import app
from chatsite.errors import Refused

logger = logging.getLogger(__name__)

GENERATE_REPLY = "conversations.tasks.generate_reply"
FORGET_RESPONSE = "conversations.tasks.forget_background_response"
# The broker must answer a PING within this; a send never waits longer on a dead one.
PING_TIMEOUT_SECONDS = 2.0

REFUSED_DETAIL = (
    "The service cannot take new questions right now (its task queue is unreachable). "
    "Nothing was saved or charged; send your message again in a moment."
)
NOT_QUEUED_DETAIL = (
    "Your question was saved but could not be handed to the model (the task queue went "
    "down), so nothing was charged. Send it again in a moment."
)


class ServiceUnavailable(Refused):
    def __init__(self, detail: str = REFUSED_DETAIL) -> None:
        super().__init__("service_unavailable", detail)


@functools.lru_cache(maxsize=4)
def _broker_client(url: str) -> redis.Redis:
    return redis.Redis.from_url(
        url, socket_connect_timeout=PING_TIMEOUT_SECONDS, socket_timeout=PING_TIMEOUT_SECONDS
    )


def refuse_unless_queue_reachable() -> None:
    """Raise ``ServiceUnavailable`` unless the broker answers. Call before writing."""
    url = str(app.conf.broker_url or "")
    if not url.startswith(("redis://", "rediss://")):
        return  # embedded mode's in-memory broker lives in this process
    try:
        _broker_client(url).ping()
    except (redis.RedisError, OSError) as error:
        logger.warning("broker unreachable, refusing a turn: %s", error)
        raise ServiceUnavailable() from error


def queue_reply(message_id: int) -> None:
    """Publish ``generate_reply`` (run it after commit). If the broker refuses, the
    answer that no worker will see ends ``failed`` at $0 and the sender is told."""
    try:
        app.send_task(GENERATE_REPLY, args=[message_id], ignore_result=True)
    except Exception as error:
        # Whatever the cause, no worker will ever claim this answer: end it now rather
        # than leave it pending (and its budget held) until queue_timeout.
        logger.exception("could not queue the answer %s", message_id)
        lifecycle.fail_pending(message_id, code="service_unavailable", detail=NOT_QUEUED_DETAIL)
        raise ServiceUnavailable(NOT_QUEUED_DETAIL) from error
