"""Per-process bookkeeping for the answers a worker is streaming right now.

One monitor thread per worker process does the periodic work for *all* live answers
at once: ``thinking`` heartbeats until the first token, one query per second to pick up
Stop requests, one UPDATE to renew every lease, and closing streams that stalled. That
keeps database and channel-layer traffic per answer constant instead of per tick.
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import close_old_connections, connection
from django.utils import timezone

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
        self.last_thinking = 0.0
        self.stream: Any = None
        self.cancelled = threading.Event()
        self.stalled = False

    @property
    def elapsed_ms(self) -> int:
        return int((time.monotonic() - self.started) * 1000)

    def touch(self) -> None:
        now = time.monotonic()
        self.last_activity = now
        if self.first_output_at is None:
            self.first_output_at = now

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
                publish(
                    reply.message_id,
                    {"type": "thinking", "message": reply.message_id, "elapsed_ms": reply.elapsed_ms},
                )
            idle_limit = settings.STREAM_IDLE_TIMEOUT
            if reply.first_output_at is not None and now - reply.last_activity > idle_limit:
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
            Message.objects.filter(
                pk__in=[reply.message_id for reply in replies],
                status=Message.Status.STREAMING,
            ).update(lease_expires_at=timezone.now() + timedelta(seconds=settings.STREAM_LEASE_SECONDS))


monitor = Monitor()
