"""Reference servers for ``bench --reference``: what these cores do without the product.

The same tabs, emulator and closed loop as the product's steps, against three servers that
speak the product's websocket frames (``message.created``, ``delta`` with ``seq``,
``done``) and batch deltas in the same flush window:

- ``relay``: one aiohttp process. A send opens the upstream stream and relays it. No
  accounts, no storage, no queue: the cost of moving the tokens and nothing else.
- ``floor``: the relay plus the least per-turn work a server with a Celery queue and
  PostgreSQL storage does: one transaction stores the question, the answer's row and its
  budget reservation before ``message.created``; a Celery task (a worker process, its
  own thread pool, the product's broker settings) claims the row; one transaction at
  the end stores the text and settles the reservation. Its tables are copies of the
  product's message and reservation tables (indexes, the generated search vector and
  checks included, foreign keys left out).
- ``hop`` (``bench/reference_hop.py``): the floor with the stream moved where DESIGN's
  parts put it: a Celery worker streams the answer on its event loop and publishes the
  frames through Redis (pub/sub and a replay list), and the web process forwards them.

All are lower bounds on purpose. The floor keeps the stream in the process that holds
the socket, so it has no worker → Redis → web hop, no session check, no rate limit, no
prompt building and no SDK; anything the product does costs at least this. If the floor
misses a latency budget on these cores, the product cannot meet it here either. The hop
adds only that hop, so hop ÷ floor is what the architecture alone costs.

Run by the bench: ``python -m bench.reference --port P --emulator URL --mode relay|floor|hop``
and, for ``floor`` and ``hop``, ``celery -A bench.reference worker --pool threads`` on the
mode's queue.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import time
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from typing import Any

import orjson
from celery import Celery

FLOOR_MESSAGE = "bench_floor_message"
FLOOR_RESERVATION = "bench_floor_reservation"
CLAIM_THREADS = 4

# Celery with the product's delivery settings (chatsite/settings.py): late acks, one
# prefetched task, no results.
app = Celery("bench_reference", broker=os.environ.get("REDIS_URL", "memory://"))
app.conf.update(task_ignore_result=True, task_acks_late=True, task_reject_on_worker_lost=True,
                worker_prefetch_multiplier=1, worker_hijack_root_logger=False,
                broker_connection_retry_on_startup=True, task_default_queue="bench-reference",
                # The hop's stream task lives beside its server; a worker of this app loads it.
                include=["bench.reference_hop"])

_INSERT_MESSAGE = (
    f"INSERT INTO {FLOOR_MESSAGE} (role, content, status, client_id, created_at, model_name, "
    "reasoning_effort, finish_reason, refusal, reasoning_summary, error_code, error_detail, tool_calls, "
    "history_truncated, prompt_tokens, cached_tokens, completion_tokens, reasoning_tokens, "
    "usage_estimated, cost_usd, price_snapshot, stream_seq, cancel_requested, conversation_id, "
    "parent_id, service_tier, reasoning_items, claims, provider_response_id) "
    "VALUES (%s, %s, %s, %s, now(), 'o3-mini', %s, '', '', '', '', '', '[]', 0, 0, 0, 0, 0, false, 0, "
    "'{}', 0, false, 1, %s, '', '[]', 0, '') RETURNING id"
)
_INSERT_RESERVATION = (
    f"INSERT INTO {FLOOR_RESERVATION} (amount_usd, estimated, prompt_tokens_estimate, created_at, "
    "message_id, org_period_id, cached_tokens, completion_tokens, kind, model_name, prompt_tokens, "
    "reasoning_tokens) VALUES (0.05, true, 100, now(), %s, 1, 0, 0, 'answer', 'o3-mini', 0, 0)"
)
_CLAIM = (
    f"UPDATE {FLOOR_MESSAGE} SET status = 'streaming', started_at = now(), "
    "lease_expires_at = now() + interval '60 seconds', claims = claims + 1 "
    "WHERE id = %s AND status = 'pending'"
)
_FINISH = (
    f"UPDATE {FLOOR_MESSAGE} SET status = 'done', content = %s, stream_seq = %s, "
    "completion_tokens = %s, finish_reason = 'stop', finished_at = now(), lease_expires_at = NULL "
    "WHERE id = %s"
)
_SETTLE = (
    f"UPDATE {FLOOR_RESERVATION} SET charged_usd = 0.001, settled_at = now() "
    "WHERE message_id = %s AND settled_at IS NULL"
)


def create_tables(conn: Any) -> None:
    """The floor's tables, as copies of the product's (``conn``: psycopg, autocommit)."""
    for table, source in ((FLOOR_MESSAGE, "conversations_message"),
                          (FLOOR_RESERVATION, "billing_reservation")):
        conn.execute(f"CREATE TABLE IF NOT EXISTS {table} (LIKE {source} INCLUDING ALL)")
        conn.execute(f"TRUNCATE {table}")


_claim_pool: Any = None


@app.task(name="bench.reference.claim")
def claim(message_id: int) -> None:
    """The worker's share of a turn: claim the answer's row."""
    global _claim_pool
    if _claim_pool is None:
        from psycopg_pool import ConnectionPool

        _claim_pool = ConnectionPool(os.environ["DATABASE_URL"], min_size=1, max_size=CLAIM_THREADS,
                                     kwargs={"autocommit": True}, open=True)
    with _claim_pool.connection() as conn:
        conn.execute(_CLAIM, (message_id,))


@dataclass
class Answer:
    """One answer's stream so far: its text's parts, the last delta's seq, tokens seen."""

    parts: list[str] = field(default_factory=list)
    seq: int = 0
    tokens: int = 0


async def coalesced(session: Any, url: str, effort: str, flush_s: float, answer: Answer) -> AsyncGenerator[str, None]:
    """Stream the upstream answer and yield its deltas batched as the product batches
    them; ``answer.seq`` is the seq of the batch just yielded. Close it (``aclosing``)
    when leaving early, so the upstream response is released at once."""
    body = {"model": "o3-mini", "messages": [{"role": "user", "content": "bench"}], "stream": True,
            "stream_options": {"include_usage": True}, "reasoning_effort": effort}
    pending: list[str] = []
    last_flush = 0.0
    async with session.post(url, data=orjson.dumps(body), headers={
            "Authorization": "Bearer bench", "Content-Type": "application/json"}) as response:
        async for line in response.content:
            if not line.startswith(b"data: "):
                continue
            payload = line[6:].strip()
            if payload == b"[DONE]":
                break
            chunk = orjson.loads(payload)
            choices = chunk.get("choices") or ()
            text = choices[0].get("delta", {}).get("content") if choices else None
            if not text:
                continue
            answer.tokens += 1
            answer.parts.append(text)
            pending.append(text)
            now = time.monotonic()
            # As the product: the first token at once, later ones once the window passed.
            if answer.seq == 0 or now - last_flush >= flush_s:
                answer.seq += 1
                batch = "".join(pending)
                pending.clear()
                yield batch
                last_flush = now
    if pending:
        answer.seq += 1
        yield "".join(pending)


def created_frame(client_id: str, effort: str, question: int, answer: int) -> bytes:
    return orjson.dumps({
        "type": "message.created", "conversation": 0, "user_message": question,
        "assistant_message": answer, "client_id": client_id, "reasoning_effort": effort, "ahead": 0,
    })


def delta_frame(answer: int, seq: int, text: str) -> bytes:
    return orjson.dumps({"type": "delta", "message": answer, "seq": seq, "text": text})


def done_frame(answer: int, seq: int) -> bytes:
    """The answer's last frame, numbered after its last delta (``seq``)."""
    return orjson.dumps({
        "type": "done", "message": answer, "seq": seq + 1, "status": "done", "finish_reason": "stop",
        "usage": {}, "usage_estimated": False, "cost_usd": "0.000000",
    })


async def open_pool() -> Any:
    """The async PostgreSQL pool of a process that stores turns (autocommit: each
    transaction is an explicit ``conn.transaction()``)."""
    from psycopg_pool import AsyncConnectionPool

    pool = AsyncConnectionPool(os.environ["DATABASE_URL"], min_size=4, max_size=20,
                               kwargs={"autocommit": True}, open=False)
    await pool.open(wait=True)
    return pool


async def store_turn(pool: Any, client_id: str, effort: str) -> tuple[int, int]:
    """The turn's first transaction: the question, the pending answer and its
    reservation. Returns (question, answer)."""
    async with pool.connection() as conn, conn.transaction():
        cursor = await conn.execute(_INSERT_MESSAGE, ("user", "bench", "done", client_id, effort, None))
        question = (await cursor.fetchone())[0]
        cursor = await conn.execute(_INSERT_MESSAGE, ("assistant", "", "pending", client_id, effort, question))
        answer = (await cursor.fetchone())[0]
        await conn.execute(_INSERT_RESERVATION, (answer,))
    return question, answer


async def finish_turn(pool: Any, answer_id: int, answer: Answer) -> None:
    """The turn's last transaction: the answer's text, and its reservation settled."""
    async with pool.connection() as conn, conn.transaction():
        await conn.execute(_FINISH, ("".join(answer.parts), answer.seq, answer.tokens, answer_id))
        await conn.execute(_SETTLE, (answer_id,))


class Relay:
    """The relay and the floor's server: the stream stays in the process that holds
    the socket."""

    def __init__(self, emulator: str, *, floor: bool, flush_ms: int) -> None:
        self.url = emulator.rstrip("/") + "/v1/chat/completions"
        self.floor = floor
        self.flush_s = flush_ms / 1000
        self.session: Any = None
        self.pool: Any = None
        self.next_id = 0

    async def start(self) -> None:
        import aiohttp

        self.session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
        if self.floor:
            self.pool = await open_pool()

    async def websocket(self, request: Any) -> Any:
        from aiohttp import WSMsgType, web

        ws = web.WebSocketResponse(max_msg_size=2**20)
        await ws.prepare(request)
        turns: set[asyncio.Task[None]] = set()
        async for message in ws:
            if message.type != WSMsgType.TEXT:
                continue
            try:
                frame = orjson.loads(message.data)
            except orjson.JSONDecodeError:
                continue
            if frame.get("type") == "send":
                task = asyncio.create_task(self.turn(ws, frame))
                turns.add(task)
                task.add_done_callback(turns.discard)
        for task in list(turns):
            task.cancel()
        return ws

    async def _begin(self, client_id: str, effort: str) -> tuple[int, int]:
        if not self.floor:
            self.next_id += 2
            return self.next_id - 1, self.next_id
        question, answer = await store_turn(self.pool, client_id, effort)
        await asyncio.to_thread(claim.delay, answer)
        return question, answer

    async def turn(self, ws: Any, frame: dict[str, Any]) -> None:
        client_id = str(frame.get("client_id", ""))
        effort = str(frame.get("reasoning_effort") or "medium")
        question, answer_id = await self._begin(client_id, effort)
        await ws.send_str(created_frame(client_id, effort, question, answer_id).decode())
        answer = Answer()
        async with contextlib.aclosing(coalesced(self.session, self.url, effort, self.flush_s, answer)) as deltas:
            async for text in deltas:
                await ws.send_str(delta_frame(answer_id, answer.seq, text).decode())
        if self.floor:
            await finish_turn(self.pool, answer_id, answer)
        await ws.send_str(done_frame(answer_id, answer.seq).decode())


async def health(_request: Any) -> Any:
    from aiohttp import web

    return web.Response(text="ok")


def main(argv: list[str] | None = None) -> None:
    from aiohttp import web

    parser = argparse.ArgumentParser(prog="python -m bench.reference")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--emulator", required=True)
    parser.add_argument("--mode", choices=("relay", "floor", "hop"), required=True)
    parser.add_argument("--flush-ms", type=int, default=60)
    args = parser.parse_args(argv)
    relay: Relay
    if args.mode == "hop":
        # Imported here, not at the top: bench.reference_hop builds on this module.
        from bench.reference_hop import HopServer

        relay = HopServer(args.emulator, flush_ms=args.flush_ms)
    else:
        relay = Relay(args.emulator, floor=args.mode == "floor", flush_ms=args.flush_ms)

    async def on_startup(_app: Any) -> None:
        await relay.start()

    application = web.Application()
    application.on_startup.append(on_startup)
    application.router.add_get("/ws/chat/", relay.websocket)
    application.router.add_get("/healthz", health)
    loop: asyncio.AbstractEventLoop
    try:  # uvloop, as the product's processes run (uvicorn, the worker's event loop)
        import uvloop

        loop = uvloop.new_event_loop()
    except ImportError:  # pragma: no cover - uvloop ships with uvicorn[standard]
        loop = asyncio.new_event_loop()
    web.run_app(application, host=args.host, port=args.port, print=None, access_log=None, loop=loop)


if __name__ == "__main__":
    main()
