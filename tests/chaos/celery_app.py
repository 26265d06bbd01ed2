"""The product's Celery app for chaos workers: ``celery -A tests.chaos.celery_app worker``.

Two changes: a task whose worker died unacknowledged is handed out again after 2 s
instead of an hour, so every kill is followed by a redelivery, and the suite checks that
a redelivered task never calls the provider a second time; and the tasks it queues
itself go to ``CHAOS_QUEUE`` (the run's private queue) when that is set.
"""

from __future__ import annotations

import os
from typing import Any

from celery.signals import worker_ready

from chatsite.celery import app
from tests.queues import private_routes

app.conf.broker_transport_options = {**app.conf.broker_transport_options, "visibility_timeout": 2}
# Tasks this worker queues itself (titles) go to the test run's private queues too: its
# side calls to the run's side queue, which the chaos worker also consumes (-Q).
if os.environ.get("CHAOS_QUEUE"):
    queue = os.environ["CHAOS_QUEUE"]
    app.conf.update(task_default_queue=queue, task_default_exchange=queue,
                    task_default_routing_key=queue,
                    task_routes=private_routes(queue, app.conf.task_routes or {}))



@worker_ready.connect
def announce_ready(**_: Any) -> None:
    # The suite waits for this line (the worker logs at WARNING, without Celery's own).
    print("chaos worker ready", flush=True)


__all__ = ["app"]
