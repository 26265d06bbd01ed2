"""Thin Celery wrappers: ids in, one domain call, nothing returned."""

from __future__ import annotations

from celery import shared_task


@shared_task(ignore_result=True, acks_late=True)
def generate_reply(message_id: int) -> None:
    from conversations.generation import run_generation

    run_generation(message_id)


@shared_task(ignore_result=True)
def generate_title(conversation_id: int) -> None:
    from conversations import titles

    titles.generate_title(conversation_id)


@shared_task(ignore_result=True)
def reap_stale_replies() -> int:
    from conversations.replies import reap_stale_replies as reap

    return reap()


@shared_task(ignore_result=True)
def refresh_shutdown_dates() -> None:
    from conversations.profiles import refresh_shutdown_dates as refresh

    refresh()
