"""Handing an answer to the workers, or telling the sender the queue is down.

A turn is saved in one transaction and queued after commit. Were the broker down, the
commit would leave a pending answer (and its budget reservation) that no worker will
ever see: ``queue_reply`` then ends the saved answer ``failed`` at $0 with its
reservation released, and the sender gets ``service_unavailable``. No turn asks the
broker whether it is up first (a round trip per turn that the publish makes anyway);
when Redis as a whole is down the turn is refused before anything is written, since its
rate limit cannot be counted (``answers.replies``).
"""

from __future__ import annotations

import logging

from answers import lifecycle
from answers.lifecycle import GENERATE_REPLY
from chatsite import metrics
from chatsite.celery import app
from chatsite.errors import Refused

logger = logging.getLogger(__name__)

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


def queue_reply(message_id: int) -> None:
    """Publish ``generate_reply`` (run it after commit). If the broker refuses, the
    answer that no worker will see ends ``failed`` at $0 and the sender is told."""
    metrics.turn_started()
    try:
        # argsrepr: what Celery would otherwise work out with its safe repr on every send.
        app.send_task(GENERATE_REPLY, args=[message_id], argsrepr=f"[{message_id}]",
                      ignore_result=True)
    except Exception as error:
        # Whatever the cause, no worker will ever claim this answer: end it now rather
        # than leave it pending (and its budget held) until queue_timeout.
        logger.exception("could not queue the answer %s", message_id)
        lifecycle.fail_pending(message_id, code="service_unavailable", detail=NOT_QUEUED_DETAIL)
        raise ServiceUnavailable(NOT_QUEUED_DETAIL) from error
