"""What ``manage.py runstack`` starts for WEB_PROCESSES and WORKER_PROCESSES, in the whole
stack (`make run`) and one role at a time (each compose service), and how it keeps their
PostgreSQL pools within what the server accepts."""

from __future__ import annotations

import io
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.core.management.base import CommandError

from chatsite.dbpool import web_pool_size, worker_pool_size
from conversations.management.commands import runstack
from conversations.management.commands.runstack import (
    CLAIM_THREADS,
    MIN_POOL_SIZE,
    Command,
    PoolPlan,
    fit_pools,
)
from tests.scaleout.conftest import ScaledStack

ROOT = Path(__file__).resolve().parents[2]
OPTIONS = {"host": "127.0.0.1", "port": 8000, "worker_concurrency": 200, "only": None}


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    yield sock
    sock.close()


@pytest.fixture
def processes(settings: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    """Three web and two worker processes, and a server that takes every connection."""
    settings.WEB_PROCESSES, settings.WORKER_PROCESSES = 3, 2
    monkeypatch.delenv("DB_POOL_MAX", raising=False)
    monkeypatch.setattr(runstack, "server_connection_limit", lambda: 10_000)
    return settings


def names(children: list[runstack.Child]) -> list[str]:
    return [child.name for child in children]


def test_make_run_starts_every_web_and_worker_process_each_under_its_own_name(
    processes: Any, listener: socket.socket
) -> None:
    children = Command().children(OPTIONS, runstack.ROLES, listener)

    assert names(children) == ["emulator", "worker1", "worker2", "side1", "beat",
                               "web1", "web2", "web3"]
    workers = [child for child in children if child.name.startswith("worker")]
    assert [child.args[child.args.index("--hostname") + 1] for child in workers] == [
        "worker1@%h", "worker2@%h"]
    for child in workers:
        # A few Celery threads claim answers; the event loop streams up to 200 of them.
        assert child.args[child.args.index("--concurrency") + 1] == str(CLAIM_THREADS)
        assert child.env["WORKER_LIVE_ANSWERS"] == "200"
        assert child.stop_grace == processes.WORKER_DRAIN_SECONDS + runstack.STOP_GRACE_SECONDS
        # Answers only: a title never takes one of these threads.
        assert child.args[child.args.index("-Q") + 1] == "celery"
    # Titles: the side worker's own SIDE_CALL_CONCURRENCY threads, from the side queue only.
    side = children[names(children).index("side1")]
    assert side.args[side.args.index("--hostname") + 1] == "side1@%h"
    assert side.args[side.args.index("-Q") + 1] == processes.SIDE_CALL_QUEUE == "side"
    assert side.args[side.args.index("--concurrency") + 1] == str(processes.SIDE_CALL_CONCURRENCY)
    assert processes.CELERY_TASK_ROUTES == {
        "conversations.tasks.generate_title": {"queue": "side"}}
    # Every web child serves the supervisor's one listening socket, handed down by number.
    for child in children[-3:]:
        assert child.pass_fds == (listener.fileno(),)
        assert child.args[child.args.index("--fd") + 1] == str(listener.fileno())
        assert child.args[2:4] == ["runstack", "--serve"]
    # The pools fit: each process sizes its own.
    assert not any("DB_POOL_MAX" in child.env for child in children)


def test_each_compose_service_starts_its_own_role_only(
    processes: Any, listener: socket.socket
) -> None:
    command = Command()
    assert names(command.children({**OPTIONS, "only": "web"}, ("web",), listener)) == [
        "web1", "web2", "web3"]
    assert names(command.children({**OPTIONS, "only": "worker"}, ("worker",), None)) == [
        "worker1", "worker2", "side1"]


def test_embedded_mode_serves_the_product_from_one_process(
    processes: Any, listener: socket.socket
) -> None:
    processes.EMBEDDED = True
    # Web, worker and reaper share one process; the offline demo model (no provider is
    # configured here) is a process of its own, as in the full topology.
    assert names(Command().children(OPTIONS, runstack.ROLES, listener)) == ["emulator", "web1"]
    processes.OPENAI_API_KEY = "sk-test"
    assert names(Command().children(OPTIONS, runstack.ROLES, listener)) == ["web1"]
    with pytest.raises(CommandError, match="embedded mode is one process"):
        Command().handle(**{**OPTIONS, "only": "worker", "serve": False, "ping_workers": False})


def test_pools_that_would_pass_the_server_limit_are_lowered_together(
    processes: Any, listener: socket.socket, monkeypatch: pytest.MonkeyPatch
) -> None:
    plan = PoolPlan(3, 2, web_pool=web_pool_size(), worker_pool=worker_pool_size(CLAIM_THREADS),
                    side_processes=1, side_pool=worker_pool_size(processes.SIDE_CALL_CONCURRENCY))
    monkeypatch.setattr(runstack, "server_connection_limit", lambda: plan.total // 2)

    children = Command().children(OPTIONS, runstack.ROLES, listener)

    fitted = fit_pools(plan, plan.total // 2)
    assert fitted.total <= plan.total // 2 < plan.total
    pools = {child.name: child.env.get("DB_POOL_MAX") for child in children}
    assert pools == {"emulator": None, "beat": None,
                     "worker1": str(fitted.worker_pool), "worker2": str(fitted.worker_pool),
                     "side1": str(fitted.side_pool),
                     "web1": str(fitted.web_pool), "web2": str(fitted.web_pool),
                     "web3": str(fitted.web_pool)}


def test_one_role_reports_its_own_worst_case_and_leaves_the_pools_alone(
    processes: Any, listener: socket.socket, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A compose container cannot know how many others share the server."""
    monkeypatch.setattr(runstack, "server_connection_limit", lambda: 20)
    out = io.StringIO()
    children = Command(stdout=out).children({**OPTIONS, "only": "web"}, ("web",), listener)
    assert not any(child.env for child in children)
    assert (f"PostgreSQL connections at most 3 web × {web_pool_size()} = {3 * web_pool_size()} "
            "from this role's processes (server allows 20); set DB_POOL_MAX") in out.getvalue()


def test_fitting_scales_each_pool_and_keeps_a_floor() -> None:
    plan = PoolPlan(2, 2, web_pool=17, worker_pool=53)  # 2 cores, --concurrency 200
    assert plan.total == 140
    assert fit_pools(plan, 200) == plan
    assert fit_pools(plan, 87) == PoolPlan(2, 2, web_pool=10, worker_pool=32)  # 84 <= 87
    assert fit_pools(plan, 10) == PoolPlan(2, 2, web_pool=MIN_POOL_SIZE, worker_pool=MIN_POOL_SIZE)


def test_an_explicit_db_pool_max_is_left_alone(
    processes: Any, listener: socket.socket, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DB_POOL_MAX", "9")
    monkeypatch.setattr(runstack, "server_connection_limit", lambda: 1)
    children = Command().children(OPTIONS, runstack.ROLES, listener)
    assert not any("DB_POOL_MAX" in child.env for child in children)


def process_settings(**env: str) -> subprocess.CompletedProcess[str]:
    """WEB_PROCESSES and WORKER_PROCESSES as the settings read them from ``env``."""
    probe = ("import django; django.setup(); from django.conf import settings; "
             "print(settings.WEB_PROCESSES, settings.WORKER_PROCESSES)")
    environment = {key: value for key, value in os.environ.items()
                   if key not in ("WEB_PROCESSES", "WORKER_PROCESSES")}
    environment.setdefault("DJANGO_SETTINGS_MODULE", "chatsite.settings")
    return subprocess.run([sys.executable, "-c", probe], cwd=ROOT, env={**environment, **env},
                          capture_output=True, text=True, timeout=120)


@pytest.mark.slow  # starts a child process
def test_process_counts_default_to_the_cores_and_are_at_least_one() -> None:
    cores = str(os.cpu_count() or 1)
    assert process_settings(WORKER_PROCESSES="5").stdout.split()[-2:] == [cores, "5"]
    refused = process_settings(WEB_PROCESSES="0")
    assert refused.returncode != 0 and "WEB_PROCESSES must be at least 1" in refused.stderr


@pytest.mark.slow
def test_the_worker_healthcheck_hears_every_worker_process_of_the_host(
    stack: ScaledStack,
) -> None:
    """What compose's worker healthcheck runs, against the two real workers."""
    env = {**stack.processes.env, "WORKER_PROCESSES": "2"}
    done = subprocess.run([sys.executable, "manage.py", "runstack", "--ping-workers"], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "2 worker processes and 1 side process answered" in done.stdout
