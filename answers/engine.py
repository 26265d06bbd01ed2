"""One event loop per worker process streams every answer the process has.

A Celery task thread waits for a free slot (``WORKER_LIVE_ANSWERS``), claims the answer
(``generation.take``: the claim and its fence are unchanged) and hands it to the loop,
then returns, which acknowledges the task: from then on the answer's lease, renewed by
the monitor, stands for it, and if the process dies the reaper takes over as before.
The loop runs each answer as a coroutine (``generation.answer``): the provider's stream
is read asynchronously, database calls go to a small executor, and frames go out through
a batching publisher that sends every frame published during one pass of the loop, for
all answers, in one Redis round trip. No answer holds a thread.

``run_generation`` runs one answer on the same loop for a synchronous caller, whose thread
serves the answer's database calls (tests, whose data lives in their own transaction);
``run_here`` runs any coroutine of an answer's kind that way.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import contextvars
import logging
import queue
import threading
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from django.conf import settings

from answers import generation
from answers.generation import Prepared
from answers.rounds import Resume
from answers.runtime import Runtime
from chatsite.dbpool import ENGINE_DB_THREADS
from conversations.models import Message
from llm.client import close_clients
from realtime.publishing import BatchPublisher
from realtime.replay import close_async_clients

logger = logging.getLogger(__name__)

T = TypeVar("T")
# How often a task waiting for a free slot checks whether the worker began to drain.
SLOT_POLL_SECONDS = 1.0


class Draining(Exception):
    """The worker began to stop while the task waited for a free slot."""


def _new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop ships with uvicorn[standard]
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


async def _close_loop_clients() -> None:
    """The loop's provider clients and its Redis client for the answers' frames."""
    await close_clients()
    await close_async_clients()


class Engine:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._thread: threading.Thread | None = None
        self._publisher: BatchPublisher | None = None
        self._slots: threading.BoundedSemaphore | None = None
        self._live: set[asyncio.Task[None]] = set()
        # Answers claimed and not yet ended, counted from the claim (in a task's thread)
        # so the loop is never idle between a claim and its task's start.
        self._claimed = 0
        self._idle = threading.Event()
        self._idle.set()

    # --- The loop ---------------------------------------------------------------------------

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None or self._loop.is_closed():
                loop = _new_loop()
                self._executor = ThreadPoolExecutor(ENGINE_DB_THREADS, thread_name_prefix="answer-db")
                self._publisher = BatchPublisher(loop)
                self._thread = threading.Thread(target=loop.run_forever, name="answer-loop", daemon=True)
                self._thread.start()
                self._loop = loop
                atexit.register(self.close)
            return self._loop

    def close(self, timeout: float = 5.0) -> None:
        """Close the loop's provider clients and stop it (the process is ending; its
        answers have ended or been handed back by the drain)."""
        with self._lock:
            loop, self._loop = self._loop, None
            thread, executor = self._thread, self._executor
        if loop is None or loop.is_closed():
            return
        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(_close_loop_clients(), loop).result(timeout)
        loop.call_soon_threadsafe(loop.stop)
        if thread is not None:
            thread.join(timeout)
        if executor is not None:
            executor.shutdown(wait=False)
        if not loop.is_running():
            loop.close()

    @property
    def live_answers(self) -> int:
        return len(self._live)

    @property
    def publisher(self) -> BatchPublisher:
        self.loop  # noqa: B018 - started on first use
        assert self._publisher is not None
        return self._publisher

    def _runtime(self) -> Runtime:
        publisher = self._publisher
        assert publisher is not None
        return Runtime(db=self._db, send=publisher.publish, sent=publisher.sent)

    async def _db(self, fn: Callable[[], T]) -> T:
        # In the answer's context: its database calls' log lines carry its answer_id too.
        return await asyncio.get_running_loop().run_in_executor(
            self._executor, contextvars.copy_context().run, fn)

    # --- Worker: hand an answer to the loop --------------------------------------------------

    def hand_over(self, message_id: int, *, draining: Callable[[], bool]) -> bool:
        """Wait for a free slot, claim the answer and start it on the loop. Returns
        False when there was nothing to claim; raises Draining when the worker began to
        stop meanwhile (the task goes back to the queue, unclaimed)."""
        slots = self._ensure_slots()
        while not slots.acquire(timeout=SLOT_POLL_SECONDS):
            if draining():
                raise Draining()
        try:
            if draining():
                raise Draining()
            taken = generation.take(message_id)
        except BaseException:
            slots.release()
            raise
        if taken is None:
            slots.release()
            return False
        message, resume, prepared = taken
        with self._lock:
            self._claimed += 1
            self._idle.clear()
        loop = self.loop
        loop.call_soon_threadsafe(self._start, message, resume, prepared)
        return True

    def _ensure_slots(self) -> threading.BoundedSemaphore:
        with self._lock:
            if self._slots is None:
                self._slots = threading.BoundedSemaphore(settings.WORKER_LIVE_ANSWERS)
            return self._slots

    def _start(self, message: Message, resume: Resume | None,
               prepared: Prepared | None) -> None:
        task = asyncio.get_running_loop().create_task(
            generation.answer(message, resume, self._runtime(), prepared),
            name=f"answer-{message.pk}",
        )
        self._live.add(task)
        task.add_done_callback(self._ended)

    def _ended(self, task: asyncio.Task[None]) -> None:
        self._live.discard(task)
        if self._slots is not None:
            self._slots.release()
        if not task.cancelled() and task.exception() is not None:
            logger.error("answer task failed", exc_info=task.exception())
        with self._lock:
            self._claimed -= 1
            if not self._claimed:
                self._idle.set()

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Block until the loop has no answer left (a worker's warm shutdown)."""
        return self._idle.wait(timeout)

    # --- A synchronous caller's own answer ---------------------------------------------------

    def run_here(self, work: Callable[[Runtime], Awaitable[T]]) -> T:
        """Run ``work`` on the loop and return its result once it ended; its database
        calls run in this thread, and its frames go out synchronously
        (``realtime.publishing.publish``), in order with the final frame that this
        thread's ending transaction publishes."""
        calls: queue.SimpleQueue[Any] = queue.SimpleQueue()
        done = object()
        loop = self.loop

        async def db(fn: Callable[[], Any]) -> Any:
            result: asyncio.Future[Any] = loop.create_future()
            calls.put((fn, result))
            return await result

        runtime = Runtime(db=db, send=None, sent=_nothing_pending)
        future = asyncio.run_coroutine_threadsafe(_call(work, runtime), loop)
        future.add_done_callback(lambda _: calls.put(done))
        while (item := calls.get()) is not done:
            fn, result = item
            try:
                value = fn()
            except BaseException as exc:  # handed to the coroutine, which decides
                loop.call_soon_threadsafe(_settle, result, None, exc)
            else:
                loop.call_soon_threadsafe(_settle, result, value, None)
        return future.result()


async def _call(work: Callable[[Runtime], Awaitable[T]], runtime: Runtime) -> T:
    return await work(runtime)


async def _nothing_pending() -> None:
    return None


def _settle(future: asyncio.Future[Any], value: Any, error: BaseException | None) -> None:
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(value)


engine = Engine()


def run_generation(message_id: int) -> None:
    """Claim the answer and stream it to its end, in the calling thread's time: the
    answer runs on the process's event loop while this thread serves its database calls
    (tests, and callers whose data lives in their own transaction). Workers hand answers
    to the loop instead (``Engine.hand_over``) and return once they are claimed."""
    taken = generation.take(message_id)
    if taken is None:
        return
    message, resume, prepared = taken
    engine.run_here(lambda runtime: generation.answer(message, resume, runtime, prepared))
