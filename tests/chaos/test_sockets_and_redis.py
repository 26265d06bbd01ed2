"""Browser tabs on the real stack (uvicorn web process, Celery worker process, a private
redis-server) lose their sockets, or the Redis under them restarts, mid-answer: every
tab still ends with exactly the saved text, no token lost or duplicated.
"""

from __future__ import annotations

import asyncio
import json
import random
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from accounts.models import User
from conversations.models import Message
from llm.models import ModelProfile
from tests.chaos.conftest import Processes, fast_and_full, tab_for
from tests.chaos.tabs import Tab

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


class Stack:
    def __init__(self, processes: Processes, data_dir: Path) -> None:
        self.processes = processes
        self.data_dir = data_dir
        self.redis, self.redis_url = processes.redis(data_dir=data_dir)
        self.port = int(self.redis_url.rsplit(":", 1)[1].split("/")[0])
        self.worker = processes.worker(REDIS_URL=self.redis_url, CHANNEL_PREFIX="chaos")
        self.web, self.base = processes.web(REDIS_URL=self.redis_url, CHANNEL_PREFIX="chaos")

    def restart_redis(self) -> float:
        """Stop Redis (as a restart or a deploy does) and start it again on the same
        port and append-only file; returns how long it was down."""
        down = time.monotonic()
        assert self.processes.stop(self.redis, timeout=20) == 0, self.redis.tail()
        time.sleep(1.0)  # down long enough for deltas, acks and subscriptions to fail
        self.redis, _ = self.processes.redis(port=self.port, data_dir=self.data_dir)
        return time.monotonic() - down

    def tab(self, user: User) -> Tab:
        return tab_for(user, self.base)


@pytest.fixture
def stack(processes: Processes, tmp_path: Path) -> Stack:
    return Stack(processes, tmp_path / "redis")


def check_every_tab_has_the_saved_text(tabs: list[Tab]) -> None:
    for tab in tabs:
        answer = tab.answer
        message = Message.objects.get(pk=answer.message_id)
        assert message.status == Message.Status.DONE, (message.pk, message.status)
        assert answer.final is not None and answer.final["type"] == "done"
        assert answer.text == message.content
        assert answer.last_seq == message.stream_seq
        # Every delta after the last snapshot arrived exactly once, in order.
        assert sorted(answer.parts) == list(range(answer.base_seq + 1, answer.last_seq + 1))


CHAOS_TIMEOUT_SECONDS = 240


async def every_tab_shows_text(tabs: list[Tab]) -> None:
    for _ in range(1200):
        if all(tab.answer.last_seq for tab in tabs):
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the answers showed no text within a minute")


async def _ask_all(tabs: list[Tab], questions: list[str], chaos: Any) -> None:
    asks = [asyncio.create_task(tab.ask(q, tag=f"tab-{i}")) for i, (tab, q) in
            enumerate(zip(tabs, questions, strict=True))]
    try:
        # A chaos case must fail, never hang: tabs that all gave up leave nothing to drop.
        await asyncio.wait_for(chaos(), timeout=CHAOS_TIMEOUT_SECONDS)
    except TimeoutError:
        failed = [repr(task.exception()) for task in asks if task.done() and task.exception()]
        raise AssertionError(f"the faults were not all made within {CHAOS_TIMEOUT_SECONDS} s; "
                             f"{len(failed)} tabs had failed: {failed}") from None
    await asyncio.wait_for(asyncio.gather(*asks), timeout=180)
    for tab in tabs:
        await tab.close()


@fast_and_full("shape", (20, 4, 400), (200, 10, 1500))
def test_random_socket_drops_lose_and_duplicate_no_token(
    alice: User, o3_mini: ModelProfile, emulator: Any, stack: Stack, shape: tuple[int, int, int]
) -> None:
    drops_wanted, count, tokens = shape  # drops, tabs, tokens per answer
    questions = []
    for i in range(count):
        emulator.push({"match": f"drops-{i}", "reply_tokens": tokens, "tokens_per_second": 100})
        questions.append(f"Socket chaos question drops-{i}")
    tabs = [stack.tab(alice) for _ in range(count)]
    rng = random.Random(9)
    started = time.monotonic()

    async def chaos() -> None:
        await every_tab_shows_text(tabs)
        drops = 0
        while drops < drops_wanted:
            await asyncio.sleep(rng.uniform(0.02, 0.08))
            live = [tab for tab in tabs if tab.answer.final is None and tab.socket is not None
                    and tab.socket.state.name == "OPEN"]
            assert any(tab.answer.final is None for tab in tabs), "answers ended before the drops"
            if live:
                rng.choice(live).drop()
                drops += 1

    asyncio.run(_ask_all(tabs, questions, chaos))

    assert sum(tab.drops for tab in tabs) == drops_wanted
    check_every_tab_has_the_saved_text(tabs)
    print(f"\nchaos: {drops_wanted} socket drops over {count} tabs, "
          f"{sum(t.connects for t in tabs)} connects, {sum(t.resumes for t in tabs)} resumes, "
          f"{sum(t.wire_duplicates for t in tabs)} duplicates dropped by seq, "
          f"{sum(t.snapshots for t in tabs)} snapshots, {time.monotonic() - started:.0f}s")


@fast_and_full("count", 3, 10)
def test_a_redis_restart_mid_answer_leaves_every_tab_with_the_full_saved_text(
    alice: User, o3_mini: ModelProfile, emulator: Any, stack: Stack, count: int
) -> None:
    questions = []
    for i in range(count):
        emulator.push({"match": f"restart-{i}", "reply_tokens": 400, "tokens_per_second": 50})
        questions.append(f"Redis chaos question restart-{i}")
    tabs = [stack.tab(alice) for _ in range(count)]
    outage: list[float] = []

    async def chaos() -> None:
        await every_tab_shows_text(tabs)
        outage.append(await asyncio.to_thread(stack.restart_redis))
        assert not all(tab.answer.final for tab in tabs), "answers ended before the restart"

    asyncio.run(_ask_all(tabs, questions, chaos))

    assert stack.worker.alive() and stack.web.alive()
    check_every_tab_has_the_saved_text(tabs)
    print(f"\nchaos: Redis down {outage[0]:.1f}s mid-answer; {count} tabs, "
          f"{sum(t.connects for t in tabs)} connects, {sum(t.resumes for t in tabs)} resumes, "
          f"{sum(t.snapshots for t in tabs)} snapshots")


def test_a_send_while_redis_is_down_is_refused_and_the_socket_stays_open(
    alice: User, o3_mini: ModelProfile, emulator: Any, stack: Stack
) -> None:
    tab = stack.tab(alice)

    async def scenario() -> dict[str, Any]:
        await tab.connect()
        stack.processes.signal(stack.redis, signal.SIGTERM)
        await asyncio.to_thread(stack.redis.process.wait, 20)
        await tab.send({"type": "send", "conversation": None, "content": "Anyone there?",
                        "reasoning_effort": "low", "client_id": "down"})
        refused = json.loads(await asyncio.wait_for(tab.socket.recv(), 30))
        assert tab.socket.state.name == "OPEN"
        return refused

    refused = asyncio.run(scenario())
    assert refused["type"] == "error" and refused["code"] == "service_unavailable", refused
    assert not Message.objects.exists()
