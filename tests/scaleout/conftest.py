"""Two web processes and two Celery worker processes (and runstack's side worker, which
makes the titles) on one PostgreSQL and one Redis.

Each process runs the command ``make run`` starts it with (runstack's web child, its
Celery worker command at its default 200 threads), plus ``--task-events`` so that the test learns from the workers
themselves which node ran which answer. They share this run's test database, a private
redis-server (never the shared one) and the emulator over HTTP. The stack starts once
for this directory (package scope); every test makes its own people and conversations,
committed (transactional tests) so that the other processes see them.
"""

from __future__ import annotations

import ast
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import httpx2
import pytest
import redis
from celery.utils.nodenames import host_format
from django.conf import settings as django_settings

from answers.dispatch import GENERATE_REPLY
from conversations.management.commands.runstack import (
    WORKER_CONCURRENCY,
    side_node,
    side_worker_command,
    web_command,
    worker_command,
    worker_node,
)
from tests.chaos.conftest import Proc, Processes, database_url, wait_for
from tests.conftest import free_port, settings_module

TASK_ENDS = {"task-succeeded", "task-failed", "task-rejected", "task-revoked", "task-retried"}
SCRUBBED = {"OPENAI_API_KEY", "OPENAI_BASE_URL", "AZURE_OPENAI_ENDPOINT", "AZURE_OPENAI_DEPLOYMENT",
            "DJANGO_SETTINGS_MODULE", "DB_POOL_MAX", "WEB_PROCESSES", "WORKER_PROCESSES"}


class TaskEvents:
    """Which Celery node ran each answer, as the workers report it in their events."""

    def __init__(self, broker_url: str) -> None:
        from chatsite.celery import app

        self.connection = app.connection_for_read(broker_url)
        self.receiver = app.events.Receiver(self.connection, handlers={"*": self.record})
        self.lock = threading.Lock()
        self.answer_of_task: dict[str, int] = {}
        self.node_of_task: dict[str, str] = {}
        self.received: set[str] = set()
        self.ended: set[str] = set()
        self.workers_seen: set[str] = set()
        self.thread = threading.Thread(target=self.receiver.capture, daemon=True,
                                       kwargs={"limit": None, "timeout": None, "wakeup": True})
        self.thread.start()

    def record(self, event: dict[str, Any]) -> None:
        kind, node = event["type"], event.get("hostname", "")
        with self.lock:
            if kind.startswith("worker-"):
                self.workers_seen.add(node)
            elif kind == "task-received":
                self.received.add(event["uuid"])
                if event.get("name") == GENERATE_REPLY:
                    self.answer_of_task[event["uuid"]] = ast.literal_eval(event["args"])[0]
            elif kind == "task-started":
                self.node_of_task[event["uuid"]] = node
            elif kind in TASK_ENDS:
                self.ended.add(event["uuid"])

    def running(self) -> int:
        with self.lock:
            return len(self.received - self.ended)

    def nodes_that_ran(self, message_id: int) -> list[str]:
        with self.lock:
            return sorted(self.node_of_task[task] for task, answer in self.answer_of_task.items()
                          if answer == message_id and task in self.node_of_task)

    def stop(self) -> None:
        self.receiver.should_stop = True
        self.thread.join(timeout=5)
        self.connection.release()


@dataclass
class ScaledStack:
    processes: Processes
    redis_url: str
    webs: list[tuple[Proc, str]]  # each web process and its base URL
    workers: list[tuple[Proc, str]]  # each worker process and its node name
    tasks: TaskEvents
    database: str = field(default_factory=database_url)

    @property
    def web_a(self) -> str:
        return self.webs[0][1]

    @property
    def web_b(self) -> str:
        return self.webs[1][1]

    @property
    def redis_port(self) -> int:
        return int(self.redis_url.rsplit(":", 1)[1].split("/")[0])

    def log(self, proc: Proc) -> str:
        return proc.log.read_text(errors="replace")

    def idle(self) -> bool:
        """No task queued, held unacknowledged by a worker (acks_late: until it ends) or
        running. A finished answer queues its title before its final frame goes out."""
        broker = redis.Redis.from_url(self.redis_url)
        try:
            waiting = (broker.llen("celery") + broker.llen(django_settings.SIDE_CALL_QUEUE)
                       + broker.hlen("unacked"))
        finally:
            broker.close()
        return waiting == 0 and self.tasks.running() == 0

    def wait_until_idle(self) -> None:
        settled = [False]

        def twice_idle() -> bool:
            was, settled[0] = settled[0], self.idle()
            return was and settled[0]

        wait_for(twice_idle, timeout=60, what="the workers to finish every task", every=0.1)


def start_web(processes: Processes, name: str) -> tuple[Proc, str]:
    """A web process as runstack's web child, on a port of its own (not yet serving)."""
    port = free_port()
    proc = processes.spawn(name, web_command(host="127.0.0.1", port=port,
                                             concurrency=WORKER_CONCURRENCY))
    return proc, f"http://127.0.0.1:{port}"


def serving(proc: Proc, base: str) -> bool:
    assert proc.alive(), proc.tail()
    try:
        return httpx2.get(f"{base}/healthz", timeout=2).status_code == 200
    except httpx2.HTTPError:
        return False


@pytest.fixture(scope="package")
def scaled_stack(django_db_setup: None, emulator_server: Any,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[ScaledStack]:
    log_dir: Path = tmp_path_factory.mktemp("scaleout")
    env = {key: value for key, value in os.environ.items() if key not in SCRUBBED}
    env.update(
        # The test process's own settings module, as for tests/chaos (see its conftest).
        DJANGO_SETTINGS_MODULE=settings_module(),
        DATABASE_URL=database_url(),
        SECRET_KEY=django_settings.SECRET_KEY,
        EMULATOR_URL=emulator_server.url,
        CHANNEL_PREFIX="scaleout",
        # The proxy test puts the checked-in nginx config in front of web A, on loopback.
        TRUSTED_PROXIES="127.0.0.1",
        SENDS_PER_MINUTE="10000",
        MAX_LIVE_ANSWERS_PER_USER="1000",
        LOG_LEVEL="INFO",
        PYTHONUNBUFFERED="1",
    )
    processes = Processes(log_dir=log_dir, env=env)
    tasks: TaskEvents | None = None
    try:
        _, redis_url = processes.redis(data_dir=log_dir / "redis")
        processes.env["REDIS_URL"] = redis_url
        tasks = TaskEvents(redis_url)
        workers = []
        for index in (1, 2):
            args = worker_command(index, concurrency=WORKER_CONCURRENCY) + ["--task-events"]
            workers.append((processes.spawn(f"worker{index}", args), host_format(worker_node(index))))
        # The side worker runstack starts next to them: it makes the titles.
        side_args = side_worker_command(1, concurrency=django_settings.SIDE_CALL_CONCURRENCY)
        side = (processes.spawn("side1", side_args + ["--task-events"]), host_format(side_node(1)))
        webs = [start_web(processes, "web-a"), start_web(processes, "web-b")]
        for proc, base in webs:
            wait_for(partial(serving, proc, base), timeout=60, what=f"{proc.name} to serve",
                     every=0.2)
        nodes = {node for _, node in [*workers, side]}

        def both_workers_report() -> bool:
            for proc, _ in [*workers, side]:
                assert proc.alive(), proc.tail()
            with tasks.lock:
                return nodes <= tasks.workers_seen

        wait_for(both_workers_report, timeout=60, what="both workers' events", every=0.2)
        yield ScaledStack(processes, redis_url, webs, workers, tasks)
    finally:
        if tasks is not None:
            tasks.stop()
        processes.stop_all()


@pytest.fixture
def stack(scaled_stack: ScaledStack, transactional_db: None) -> Iterator[ScaledStack]:
    """The stack for one test. Its teardown runs before the test database is flushed, and
    waits for the workers to finish what the test started (a title, say): a worker still
    writing while the flush truncates its tables would deadlock with it."""
    yield scaled_stack
    scaled_stack.wait_until_idle()
