"""Per-process bookkeeping for the answers a worker is streaming right now.

One monitor thread per worker process does the periodic work for *all* live answers
at once: ``thinking`` heartbeats until the first token, one query per second to pick up
Stop requests, one UPDATE to renew the leases of the answers still making progress, and
closing streams that stalled. That
keeps database and channel-layer traffic per answer constant instead of per tick.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import close_old_connections, connection
from django.utils import timezone

from conversations.frames import thinking_frame
from conversations.models import Message
from conversations.realtime import publish

logger = logging.getLogger(__name__)

TICK_SECONDS = 0.25
THINKING_EVERY = 1.0
CANCEL_POLL_EVERY = 0.5


class LiveReply:
    def __init__(self, message_id: int) -> None:
        self.message_id = message_id
        self.started = time.monotonic()
        self.first_output_at: float | None = None
        self.last_activity = self.started
        # True from the start of each upstream request until its first event: the model
        # reasons silently then (minutes at high effort, in every tool round), and only
        # the provider's read timeout bounds that wait, not the idle timeout.
        self.awaiting_first_event = True
        self.last_thinking = 0.0
        self.stream: Any = None
        self.cancelled = threading.Event()
        self.stalled = False

    @property
    def elapsed_ms(self) -> int:
        return int((time.monotonic() - self.started) * 1000)

    def continue_from(self, *, elapsed: float, shown: bool) -> None:
        """Taking over an answer another worker started ``elapsed`` seconds ago: the
        thinking timer goes on from there, and says nothing once text was shown."""
        now = time.monotonic()
        self.started = now - elapsed
        self.last_thinking = now
        if shown:
            self.first_output_at = now

    def begin_round(self) -> None:
        """A new upstream request (a retry or a tool round) is about to be sent."""
        self.last_activity = time.monotonic()
        self.awaiting_first_event = True

    def touch(self) -> None:
        """The provider sent something for this answer: progress."""
        self.last_activity = time.monotonic()
        self.awaiting_first_event = False

    def output(self) -> None:
        """Visible output arrived (ends the thinking heartbeats)."""
        if self.first_output_at is None:
            self.first_output_at = time.monotonic()

    def silence(self, now: float) -> float:
        """Seconds since the provider last sent anything for this answer (bytes
        included: SSE keep-alive comments count when the stream tracks them)."""
        last = max(self.last_activity, getattr(self.stream, "last_read_at", 0.0) or 0.0)
        return now - last

    def stalled_at(self, now: float) -> bool:
        return not self.awaiting_first_event and self.silence(now) > settings.STREAM_IDLE_TIMEOUT

    def making_progress(self, now: float) -> bool:
        """Whether this answer's lease deserves renewal: it heard from the provider
        within the silence its current phase allows."""
        allowed = settings.LLM_READ_TIMEOUT if self.awaiting_first_event else settings.STREAM_IDLE_TIMEOUT
        return not self.stalled and self.silence(now) <= allowed

    def attach(self, stream: Any) -> None:
        self.stream = stream
        if self.cancelled.is_set():
            stream.close()

    def cancel(self) -> None:
        self.cancelled.set()
        if self.stream is not None:
            self.stream.close()

    def stall(self) -> None:
        self.stalled = True
        if self.stream is not None:
            self.stream.close()

    def wait(self, seconds: float) -> bool:
        """Sleep for a retry back-off; returns True if Stop arrived meanwhile."""
        return self.cancelled.wait(seconds)

    async def wait_async(self, seconds: float) -> bool:
        """``wait`` on the event loop: Stop is noticed within a monitor tick."""
        deadline = time.monotonic() + seconds
        while not self.cancelled.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            await asyncio.sleep(min(left, TICK_SECONDS))
        return True


class Monitor:
    def __init__(self) -> None:
        self._replies: dict[int, LiveReply] = {}
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._last_cancel_poll = 0.0
        self._last_lease_renewal = time.monotonic()

    def register(self, message_id: int) -> LiveReply:
        reply = LiveReply(message_id)
        with self._lock:
            self._replies[message_id] = reply
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="reply-monitor", daemon=True)
                self._thread.start()
        return reply

    def unregister(self, message_id: int) -> None:
        with self._lock:
            self._replies.pop(message_id, None)

    def snapshot(self) -> list[LiveReply]:
        with self._lock:
            return list(self._replies.values())

    def _run(self) -> None:
        while True:
            time.sleep(TICK_SECONDS)
            try:
                self.tick()
            except Exception:
                logger.exception("reply monitor tick failed")
            finally:
                close_old_connections()
                connection.close()

    def tick(self) -> None:
        replies = self.snapshot()
        if not replies:
            return
        now = time.monotonic()
        for reply in replies:
            if reply.first_output_at is None and now - reply.last_thinking >= THINKING_EVERY:
                reply.last_thinking = now
                publish(reply.message_id, thinking_frame(reply.message_id, reply.elapsed_ms))
            if not reply.stalled and reply.stalled_at(now):
                reply.stall()
        if now - self._last_cancel_poll >= CANCEL_POLL_EVERY:
            self._last_cancel_poll = now
            ids = [reply.message_id for reply in replies]
            stop_ids = set(
                Message.objects.filter(pk__in=ids, cancel_requested=True).values_list(
                    "pk", flat=True
                )
            )
            for reply in replies:
                if reply.message_id in stop_ids and not reply.cancelled.is_set():
                    reply.cancel()
        if now - self._last_lease_renewal >= settings.STREAM_LEASE_SECONDS / 3:
            self._last_lease_renewal = now
            # A lease proves progress of that answer, not that this process is alive: an
            # answer whose thread hangs (or whose provider went quiet) stops renewing and
            # the reaper ends it.
            progressing = [reply.message_id for reply in replies if reply.making_progress(now)]
            if progressing:
                Message.objects.filter(
                    pk__in=progressing, status=Message.Status.STREAMING
                ).update(lease_expires_at=timezone.now() + timedelta(seconds=settings.STREAM_LEASE_SECONDS))


monitor = Monitor()
