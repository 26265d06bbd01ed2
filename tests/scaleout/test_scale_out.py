"""Scale-out is real: with two web and two worker processes on one PostgreSQL and Redis,
a tab following an answer on one web process moves to the other mid-answer and resumes
from its last sequence number, whichever worker writes the answer, with no token lost
or repeated; a Chromium page reloaded onto the other web process shows the whole answer.
"""

from __future__ import annotations

import asyncio
import os
import re
import threading
import uuid
from dataclasses import dataclass, field
from typing import Any

import psycopg
import pytest
import redis

from accounts.models import User
from chatsite.dbpool import web_pool_size, worker_pool_size
from conversations.management.commands.runstack import CLAIM_THREADS
from conversations.models import Message
from llm.models import ModelProfile
from tests.chaos.conftest import tab_for, wait_for
from tests.chaos.tabs import Tab
from tests.scaleout.conftest import ScaledStack
from tests.scaleout.connections import count_connections, peak

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

# Answers sent at once; each starts on web A and ends on web B. SCALEOUT_ANSWERS=40
# (with -s) prints the connection counts docs/scaling.md quotes for a heavier load.
ANSWERS = int(os.environ.get("SCALEOUT_ANSWERS", "4"))
TOKENS_PER_SECOND = 60
MOVE_AFTER_SEQ = 3
POSTGRES_PORT = 5432


def scripted_reply(tag: str, words: int) -> str:
    """An answer whose every word is numbered: a lost, repeated or reordered token shows.
    A word is about 11 tokens, so 20 words stream for about 4 s at TOKENS_PER_SECOND."""
    return " ".join(f"{tag}-{index:03d}" for index in range(words)) + "."


def ask_for(emulator: Any, *, label: str, words: int = 20) -> tuple[str, str]:
    """A question and the reply the emulator is scripted to stream for it."""
    tag = f"{label}{uuid.uuid4().hex[:8]}"
    reply = scripted_reply(tag, words)
    emulator.push({"match": tag, "reply": reply, "tokens_per_second": TOKENS_PER_SECOND})
    return f"Please answer {tag}", reply


async def follow_then_move(tab: Tab, question: str, *, to: str) -> int:
    """Ask on the tab's web process, and once MOVE_AFTER_SEQ deltas arrived cut the
    socket and reconnect on ``to`` (Tab.follow resumes after its last seq). Returns the
    last seq seen before the move."""
    asking = asyncio.create_task(tab.ask(question, tag=question))
    while tab.answer.last_seq < MOVE_AFTER_SEQ:
        assert not asking.done(), "the answer ended before the tab could move"
        await asyncio.sleep(0.01)
    moved_at = tab.answer.last_seq
    tab.ws_url, tab.origin = to.replace("http", "ws", 1) + "/ws/chat/", to
    tab.drop()
    await asking
    await tab.close()
    return moved_at


@dataclass
class ConnectionSampler:
    """Samples, every 100 ms while answers stream, the PostgreSQL and Redis connections
    each process of the stack holds (from /proc) and the servers' own totals; the first
    sample is taken before any answer starts."""

    stack: ScaledStack
    samples: list[dict[str, int]] = field(default_factory=list)
    stopped: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.ready = threading.Event()

    def processes(self) -> dict[str, int]:
        named = {f"web {chr(ord('A') + i)}": proc.pid for i, (proc, _) in enumerate(self.stack.webs)}
        named.update({node.split("@")[0]: proc.pid for proc, node in self.stack.workers})
        return named

    def sample(self, pg: psycopg.Connection[Any], broker: redis.Redis, database: str) -> None:
        own = os.getpid()
        sample: dict[str, int] = {}
        for name, pid in self.processes().items():
            sample[f"{name} postgres"] = count_connections(pid, POSTGRES_PORT)
            sample[f"{name} redis"] = count_connections(pid, self.stack.redis_port)
        row = pg.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = %s",
                         [database]).fetchone()
        # This test's own connections are not the stack's (the sampler's own one is to
        # the maintenance database, outside the count).
        sample["server postgres (stack only)"] = (
            (row[0] if row else 0) - (count_connections(own, POSTGRES_PORT) - 1))
        sample["server redis (stack only)"] = (
            len(broker.client_list()) - count_connections(own, self.stack.redis_port))
        self.samples.append(sample)

    def run(self) -> None:
        database = self.stack.database.rsplit("/", 1)[1]
        # Autocommit: pg_stat_activity is a snapshot per transaction.
        with psycopg.connect(self.stack.database.replace("/" + database, "/postgres"),
                             autocommit=True) as pg:
            broker = redis.Redis.from_url(self.stack.redis_url)
            try:
                self.sample(pg, broker, database)
                self.ready.set()
                while not self.stopped.wait(0.1):
                    self.sample(pg, broker, database)
            finally:
                self.ready.set()
                broker.close()

    def __enter__(self) -> ConnectionSampler:
        self.thread.start()
        self.ready.wait(timeout=30)
        return self

    def __exit__(self, *_: Any) -> None:
        self.stopped.set()
        self.thread.join(timeout=10)


def test_answers_from_both_workers_followed_across_two_web_processes_lose_no_token(
    stack: ScaledStack, alice: User, o3_mini: ModelProfile, emulator: Any
) -> None:
    asks = [ask_for(emulator, label=f"move{index}x") for index in range(ANSWERS)]
    tabs = [tab_for(alice, stack.web_a) for _ in asks]

    async def run_all() -> list[int]:
        return await asyncio.wait_for(asyncio.gather(*(
            follow_then_move(tab, question, to=stack.web_b)
            for tab, (question, _) in zip(tabs, asks, strict=True))), timeout=120)

    with ConnectionSampler(stack) as sampler:
        moved_at = asyncio.run(run_all())

    for tab, (_, reply), last_seen_on_a in zip(tabs, asks, moved_at, strict=True):
        answer = tab.answer
        message = Message.objects.get(pk=answer.message_id)
        assert message.status == Message.Status.DONE
        assert answer.final is not None and answer.final["type"] == "done"
        # Followed on A, then on B from its last seq: B sent what A's socket missed (from
        # the Redis replay buffer, or as a snapshot of the saved text when a checkpoint
        # was ahead of the buffer), then the live stream; every delta after that exactly
        # once, in order.
        assert tab.connects == 2 and tab.resumes >= 1
        assert 0 < last_seen_on_a < message.stream_seq == answer.last_seq
        assert sorted(answer.parts) == list(range(answer.base_seq + 1, answer.last_seq + 1))
        assert answer.text == message.content == reply

    # Both workers wrote answers, each answer exactly one of them.
    wait_for(lambda: all(stack.tasks.nodes_that_ran(tab.answer.message_id) for tab in tabs),
             timeout=15, what="the workers' task events")
    nodes = [stack.tasks.nodes_that_ran(tab.answer.message_id) for tab in tabs]
    assert all(len(ran) == 1 for ran in nodes), nodes
    assert {ran[0] for ran in nodes} == {node for _, node in stack.workers}, nodes
    # Every tab's socket was accepted once by each web process.
    for proc, _ in stack.webs:
        accepted = re.findall(r'"WebSocket /ws/chat/" \[accepted\]', stack.log(proc))
        assert len(accepted) >= ANSWERS, stack.log(proc)[-2000:]

    counts = peak(sampler.samples)
    report_connections(sampler.samples[0], counts)
    for name, held in counts.items():
        if name.startswith("web") and name.endswith("postgres"):
            assert held <= web_pool_size(), counts
        elif name.startswith("worker") and name.endswith("postgres"):
            assert held <= worker_pool_size(CLAIM_THREADS), counts


def report_connections(before: dict[str, int], counts: dict[str, int]) -> None:
    """The measured counts, for docs/scaling.md (shown with ``pytest -s``)."""
    print(f"\nConnections on 2 web + 2 worker processes, before / peak with {ANSWERS} answers:")
    for name in sorted(counts):
        print(f"  {name:34} {before.get(name, 0):>4} / {counts[name]}")
