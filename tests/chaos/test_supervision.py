"""`make run` (``manage.py runstack``) in the full topology supervises its processes
(two web and two worker processes here): a worker or web process that crashes is started
again, and chat works after it."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
from pathlib import Path
from typing import Any

import httpx2
import pytest

from accounts.models import User
from conversations.models import Message
from llm.models import ModelProfile
from tests.chaos.conftest import Processes, tab_for, wait_for
from tests.conftest import free_port

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def started(log: Path, name: str) -> list[int]:
    return [int(pid) for pid in re.findall(rf"started {name} \(pid (\d+)\)", log.read_text(errors="replace"))]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_runstack_restarts_a_crashed_worker_and_web_process_and_chat_still_works(
    alice: User, o3_mini: ModelProfile, emulator: Any, processes: Processes, tmp_path: Path
) -> None:
    _, redis_url = processes.redis(data_dir=tmp_path / "redis")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    runstack = processes.spawn(
        "runstack", [sys.executable, "manage.py", "runstack", "--port", str(port),
                     "--worker-concurrency", "4"],
        REDIS_URL=redis_url, CHANNEL_PREFIX="supervised", VAR_DIR=str(tmp_path / "var"),
        EMULATOR_URL=f"http://127.0.0.1:{free_port()}", WEB_PROCESSES="2", WORKER_PROCESSES="2",
    )

    def healthy() -> bool:
        assert runstack.alive(), runstack.tail()
        try:
            return httpx2.get(f"{base}/healthz", timeout=2).status_code == 200
        except httpx2.HTTPError:
            return False

    wait_for(healthy, timeout=90, what="runstack to serve", every=0.2)
    names = ("web1", "web2", "worker1", "worker2", "beat", "emulator")
    first = {name: started(runstack.log, name) for name in names}
    assert all(len(pids) == 1 for pids in first.values()), first

    # A worker crash (OOM killer, segfault): a new worker is started.
    os.kill(first["worker1"][0], signal.SIGKILL)
    wait_for(lambda: len(started(runstack.log, "worker1")) == 2, timeout=30,
             what="the worker to be restarted")
    # A web crash: the same port answers again.
    os.kill(first["web1"][0], signal.SIGKILL)
    wait_for(lambda: len(started(runstack.log, "web1")) == 2, timeout=30,
             what="the web process to be restarted")
    wait_for(healthy, timeout=90, what="the restarted web process to serve", every=0.2)
    assert "exited with code -9; restarting in 0s" in runstack.log.read_text()

    # The restarted pair answers a question end to end.
    tab = tab_for(alice, base)

    async def ask() -> None:
        await tab.ask("Still there after the crashes?", tag="supervised")
        await tab.close()

    asyncio.run(ask())
    message = Message.objects.get(pk=tab.answer.message_id)
    assert message.status == Message.Status.DONE
    assert tab.answer.text == message.content

    children = [started(runstack.log, name)[-1] for name in names]
    assert processes.stop(runstack, timeout=60) == 0, runstack.tail()
    assert not [pid for pid in children if alive(pid)], "runstack left children running"
