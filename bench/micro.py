"""Per-operation costs of the streaming path, measured one at a time in this process.

The sweep shows what the whole stack does under load; these numbers say what each
step costs on its own, without contention, so that capacity can be reasoned about:
CPU per streamed token in the provider client, CPU per published frame, and the cost of
starting a turn. They run after the sweep, when the stack is idle, against the same
emulator, Redis and database.
"""

from __future__ import annotations

import time
from typing import Any
from unittest import mock

from bench.turn_cost import emulator_config


def provider_stream_cost(emulator_url: str, *, streams: int = 5, tokens: int = 300) -> dict[str, Any]:
    """CPU of this thread per content chunk while reading the product's provider stream
    (the worker's event-loop stream: openai SDK over HTTP + the product's event
    translation), unpaced, on an event loop of this thread's own."""
    import asyncio

    from django.conf import settings

    from llm.client import close_clients
    from llm.models import ModelProfile
    from llm.stream import open_stream_async
    from llm.types import ChatRequest, TextDelta

    settings.EMULATOR_URL = emulator_url
    profile = ModelProfile.objects.get(name="o3-mini")

    async def read_streams() -> tuple[float, float, int]:
        cpu = wall = 0.0
        chunks = 0
        try:
            for n in range(streams + 1):  # the first stream warms the client up
                request = ChatRequest(messages=[{"role": "user", "content": "bench"}],
                                      reasoning_effort="low", max_completion_tokens=10_000)
                c0, w0 = time.thread_time(), time.perf_counter()
                stream = await open_stream_async(profile, request)
                count = 0
                async for event in stream:
                    count += isinstance(event, TextDelta)
                c1, w1 = time.thread_time(), time.perf_counter()
                if n == 0:
                    continue
                cpu += c1 - c0
                wall += w1 - w0
                chunks += count
        finally:
            await close_clients()
        return cpu, wall, chunks

    saved = emulator_config(emulator_url, {"tokens_per_second": 0, "reply_tokens": tokens,
                                            "think_ms": {"low": 0}})
    try:
        cpu, wall, chunks = asyncio.run(read_streams())
    finally:
        emulator_config(emulator_url, saved)
    return {"chunks": chunks, "cpu_us_per_chunk": round(1e6 * cpu / chunks, 1) if chunks else None,
            "wall_us_per_chunk": round(1e6 * wall / chunks, 1) if chunks else None}


def publish_cost(count: int = 500) -> dict[str, Any]:
    """Process CPU and wall time per ``realtime.publish`` of a delta frame, until the
    frame is in the replay buffer and sent on the channel layer. Works with a blocking
    ``publish`` and with one that queues (then ``wait_until_sent`` marks the end)."""
    import redis
    from django.conf import settings

    from realtime import publishing as realtime

    wait = getattr(realtime, "wait_until_sent", None)
    message_id = 999_999_999_999  # no socket follows it
    frame = {"type": "delta", "message": message_id, "seq": 0, "text": " 1@1.0 2@1.0 3@1.0 4@1.0 5@1.0"}
    realtime.publish(message_id, dict(frame, seq=1))  # starts the publisher loop and connections
    if wait is not None:
        wait(10)
    c0, w0 = time.process_time(), time.perf_counter()
    for seq in range(2, count + 2):
        realtime.publish(message_id, dict(frame, seq=seq))
        if wait is not None:
            wait(10)  # one frame at a time, as one answer's flushes are 50 ms apart
    c1, w1 = time.process_time(), time.perf_counter()
    redis.Redis.from_url(settings.REDIS_URL).delete(f"teamchat:replay:{message_id}")
    return {"frames": count, "cpu_us_per_frame": round(1e6 * (c1 - c0) / count, 1),
            "wall_us_per_frame": round(1e6 * (w1 - w0) / count, 1)}


def start_turn_cost(user_pk: int, count: int = 20) -> dict[str, Any]:
    """``replies.start_turn`` (what the websocket `send` runs), without the Celery
    enqueue, and the enqueue on its own (to a queue no worker reads)."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from accounts.models import User
    from answers import replies
    from chatsite.celery import app

    user = User.objects.get(pk=user_pk)
    created: list[int] = []
    walls: list[float] = []
    cpus: list[float] = []
    queries = 0
    with mock.patch("answers.tasks.generate_reply.delay_on_commit"):
        for i in range(count + 1):
            with CaptureQueriesContext(connection) as captured:
                c0, w0 = time.thread_time(), time.perf_counter()
                turn = replies.start_turn(user=user, organization_id=None, conversation_id=None,
                                          content="bench", reasoning_effort="low", client_id=f"micro-{i}")
                c1, w1 = time.thread_time(), time.perf_counter()
            created.append(turn.assistant_message.pk)
            if i:  # the first call warms caches (token counting, profiles)
                walls.append(w1 - w0)
                cpus.append(c1 - c0)
                queries = len(captured.captured_queries)
    for pk in created:  # the product's own Stop: cancels the pending answer, settles its hold
        replies.request_stop(user=user, message_id=pk)
    enqueue: list[float] = []
    for _ in range(51):
        w0 = time.perf_counter()
        app.send_task("bench.micro.noop", args=[0], queue="bench-micro")
        enqueue.append(time.perf_counter() - w0)
    with app.connection_for_write() as conn:
        conn.default_channel.client.delete("bench-micro")
    walls.sort()
    enqueue = sorted(enqueue[1:])
    return {
        "queries": queries,
        "wall_ms_p50": round(1000 * walls[len(walls) // 2], 1),
        "cpu_ms_mean": round(1000 * sum(cpus) / len(cpus), 1),
        "celery_enqueue_ms_p50": round(1000 * enqueue[len(enqueue) // 2], 2),
    }


def dispatch_hop_cost(tasks: int = 200, hops: int = 20) -> dict[str, Any]:
    """Channels 4.3's ``AsyncConsumer.dispatch`` awaits ``aclose_old_connections()``
    (a thread-sensitive ``sync_to_async``) before *every* handler, so every frame a
    consumer forwards makes a round trip through the process's single sync thread, the
    one that also runs ``start_turn``. Throughput and latency of that hop, with
    ``tasks`` consumers each forwarding ``hops`` frames at once, and nothing else on
    the thread."""
    import asyncio

    from channels.db import aclose_old_connections

    latencies: list[float] = []

    async def consumer() -> None:
        for _ in range(hops):
            started = time.perf_counter()
            await aclose_old_connections()
            latencies.append(time.perf_counter() - started)

    async def main() -> float:
        await aclose_old_connections()
        started = time.perf_counter()
        await asyncio.gather(*(consumer() for _ in range(tasks)))
        return time.perf_counter() - started

    from bench.load import event_loop_runner

    elapsed = event_loop_runner()(main())
    latencies.sort()
    return {"hops": len(latencies), "hops_per_s": round(len(latencies) / elapsed),
            "latency_ms_p50": round(1000 * latencies[len(latencies) // 2], 2),
            "latency_ms_p99": round(1000 * latencies[int(len(latencies) * 0.99)], 2)}


def run(emulator_url: str, user_pk: int) -> dict[str, Any]:
    results: dict[str, Any] = {}
    for name, call in (
        ("provider_stream", lambda: provider_stream_cost(emulator_url)),
        ("publish", publish_cost),
        ("start_turn", lambda: start_turn_cost(user_pk)),
        ("dispatch_hop", dispatch_hop_cost),
    ):
        try:
            results[name] = call()
        except Exception as error:  # a broken probe must not lose the sweep's results
            results[name] = {"error": f"{type(error).__name__}: {error}"}
    return results
