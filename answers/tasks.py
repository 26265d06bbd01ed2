"""Thin Celery wrappers for answers: ids in, one domain call, nothing returned.

Task names are the wire contract between the web and worker processes of two releases
during a rolling deploy, so they keep the names they were first published under.
"""

from __future__ import annotations

from typing import Any

from celery import shared_task
from celery.exceptions import Reject
from django.dispatch import receiver

from answers import drain, lifecycle, reaper, titles
from answers.engine import Draining, engine
from chatsite.logs import bind_ids
from conversations.models import Message

# Domain modules never import this module (so no import cycle runs through it): they
# announce what happened (lifecycle.answer_finished) and the edge here queues the work.


@shared_task(name="conversations.tasks.generate_reply", ignore_result=True, acks_late=True)
def generate_reply(message_id: int) -> None:
    """Claim the answer and hand it to this process's event loop (answers.engine);
    the task ends, and is acknowledged, once the answer is claimed."""
    bind_ids(answer_id=message_id)  # the answer's coroutine inherits it: its lines carry it
    try:
        engine.hand_over(message_id, draining=drain.is_draining)
    except Draining:
        # This worker is stopping (it had already received the task): back to the
        # queue, unclaimed, for another worker or this one after its restart.
        raise Reject("worker is draining", requeue=True) from None


@shared_task(name="conversations.tasks.forget_background_response", ignore_result=True,
             acks_late=True)
def forget_background_response(profile_id: int, response_id: str) -> None:
    """A deleted answer's background response: cancelled, then deleted, at the provider."""
    lifecycle.forget_response(profile_id=profile_id, response_id=response_id)


@shared_task(name="conversations.tasks.generate_title", ignore_result=True)
def generate_title(conversation_id: int) -> None:
    titles.generate_title(conversation_id)


@receiver(lifecycle.answer_finished, dispatch_uid="answers.tasks.schedule_title")
def schedule_title(sender: Any, *, message_id: int, status: str, conversation_id: int,
                   titled: bool | None = None, **kwargs: Any) -> None:
    # ``titled``: whether the conversation had its title when the answer was claimed, so
    # no query is needed either way (the title task checks again before it asks the
    # model: a title may have come since); None, not known: ask.
    if status != Message.Status.DONE or titled:
        return
    if titled is False or titles.needs_title(conversation_id):
        generate_title.delay(conversation_id)


@shared_task(name="conversations.tasks.reap_stale_replies", ignore_result=True)
def reap_stale_replies() -> int:
    return reaper.reap_stale_replies()
