"""Database connections per process, and runstack's restart bound.

No connection is held across a provider call, and each process's pool is sized to
what it runs: a web process to its query threads, a Celery worker to its --concurrency.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from django.db import connection

from accounts.models import User
from answers import titles
from chatsite.dbpool import web_pool_size, worker_pool_size
from conversations.management.commands.runstack import POLL_SECONDS, restart_delay
from conversations.models import Conversation, Message
from llm import client as llm
from llm.models import ModelProfile

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.django_db(transaction=True)
def test_a_title_request_holds_no_database_connection_while_the_provider_answers(
    alice: User, o3_mini: ModelProfile, emulator: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    conversation = Conversation.objects.create(
        organization=alice.memberships.get().organization, user=alice, profile=o3_mini)
    Message.objects.create(conversation=conversation, role=Message.Role.USER,
                           content="How do tides work?")
    held_during_call: list[bool] = []
    real = llm.complete_json

    def watching(*args: Any, **kwargs: Any) -> Any:
        held_during_call.append(connection.connection is not None)
        return real(*args, **kwargs)

    monkeypatch.setattr(titles.llm, "complete_json", watching)

    title = titles.generate_title(conversation.pk)

    assert title
    assert held_during_call == [False]
    assert Conversation.objects.get(pk=conversation.pk).title == title


def test_pool_sizes_follow_the_process_role() -> None:
    # 8 claiming threads + 8 event-loop database threads + the monitor + 2 spare.
    assert worker_pool_size(8) == 19
    assert web_pool_size() >= 8 + 1 + 5


@pytest.mark.slow
def test_a_celery_worker_sizes_its_pool_to_its_concurrency_unless_db_pool_max_is_set() -> None:
    probe = (
        "import django; django.setup()\n"
        "from chatsite.celery import size_database_pool\n"
        "size_database_pool(options={'concurrency': 6})\n"
        "from django.db import connection\n"
        "connection.ensure_connection()\n"
        "print('POOL', connection.pool.max_size)\n"
    )
    env = {key: value for key, value in os.environ.items() if key != "DB_POOL_MAX"}
    env.setdefault("DJANGO_SETTINGS_MODULE", "chatsite.settings")
    # The server's maintenance database: always there, whatever this run's database is.
    env["DATABASE_URL"] = "postgres://postgres@127.0.0.1:5432/postgres"

    def pool_size(**extra: str) -> int:
        done = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, env={**env, **extra},
                              capture_output=True, text=True, timeout=120)
        lines = [line for line in done.stdout.splitlines() if line.startswith("POOL ")]
        assert lines, done.stderr[-2000:]
        return int(lines[-1].split()[1])

    assert pool_size() == worker_pool_size(6) == 17
    assert pool_size(DB_POOL_MAX="9") == 9


def test_runstack_restarts_a_crashed_child_within_five_seconds_even_in_a_crash_loop() -> None:
    # A restart waits for the next poll plus the back-off; the child's own start-up
    # (about 2 s for Django and Celery) comes on top.
    assert restart_delay(0) == 0
    assert [restart_delay(n) for n in range(1, 5)] == [0.5, 1.0, 2.0, 2.0]
    assert max(restart_delay(n) for n in range(50)) + POLL_SECONDS <= 2.5
