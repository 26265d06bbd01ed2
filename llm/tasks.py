"""Thin Celery wrappers for the model catalog (names kept stable: see answers/tasks.py)."""

from __future__ import annotations

from celery import shared_task

from llm import profiles


@shared_task(name="conversations.tasks.refresh_shutdown_dates", ignore_result=True)
def refresh_shutdown_dates() -> None:
    profiles.refresh_shutdown_dates()
