"""A test run's private Celery queues: the run's own default queue (tests/conftest.py's
``private_task_queue``) and, next to it, one of its own for each side queue that
CELERY_TASK_ROUTES sends side calls (titles) to. The chaos workers route the same way."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def private_routes(queue: str, routes: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """``routes`` with each side queue renamed into the run's private ``queue``."""
    return {task: {**route, "queue": f"{queue}.{route['queue']}"} for task, route in routes.items()}
