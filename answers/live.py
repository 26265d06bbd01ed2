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

from chatsite import metrics
from conversations.models import Message
from llm.types import (
    Finished,
    ReasoningItem,
    ReasoningSummaryDelta,
    RefusalDelta,
    TextDelta,
    ToolCallDelta,
    UsageReport,
)
from realtime.frames import thinking_frame
from realtime.publishing import publish

logger = logging.getLogger(__name__)

TICK_SECONDS = 0.25
THINKING_EVERY = 1.0
CANCEL_POLL_EVERY = 0.5
# What restarts an answer's stall clock: what the model produced. Lifecycle events
# (``response.created``: ResponseStarted) and SSE keep-alive bytes are not content.
CONTENT_EVENTS = (TextDelta, RefusalDelta, ReasoningSummaryDelta, ReasoningItem, ToolCallDelta,
                  Finished, UsageReport)


class LiveReply:
    def __init__(self, message_id: int) -> None:
        self.message_id = message_id
        self.started = time.monotonic()
        self.timer = metrics.OutputTimer(self.started)  # time to first token, per-token gaps
        self.first_output_at: float | None = None
        # When the provider last sent content (or the current request went out): the
        # stall clock. Lifecycle events and keep-alive bytes do not move it.
        self.last_activity = self.started
        # True from the start of each upstream request until its first content: the model
        # reasons silently then (minutes at high effort, in every tool round and retry),
        # after ``response.created`` too, and only the first-content allowance
        # (LLM_READ_TIMEOUT) bounds that wait, not the idle timeout.
        self.awaiting_content = True
        # Whether the stall ended the first-content phase (nothing came) or a later one.
        self.stalled_waiting = False
        # A background response's status check is under way (off the monitor thread).
        self.checking = False
        self.was_queued = False  # the last status check found the response still queued
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
        self.timer = metrics.OutputTimer(self.started, shown=shown)
        self.last_thinking = now
        if shown:
            self.first_output_at = now

    def begin_round(self) -> None:
        """A new upstream request (a retry or a tool round) is about to be sent."""
        self.timer.pause()
        self.last_activity = time.monotonic()
        self.awaiting_content = True
        self.was_queued = False

    def touch(self) -> None:
        """The provider sent content for this answer (text, refusal, reasoning summary or
        item, tool-call arguments, the finish or usage): progress, and the stall clock
        starts again. Lifecycle events (``response.created``) are not content."""
        self.last_activity = time.monotonic()
        self.awaiting_content = False

    def heard(self, event: object) -> None:
        """An event of the current upstream stream arrived: content touches."""
        if isinstance(event, CONTENT_EVENTS):
            self.touch()

    def output(self) -> None:
        """Visible output arrived (ends the thinking heartbeats)."""
        self.timer.output()
        if self.first_output_at is None:
            self.first_output_at = time.monotonic()

    def silence(self, now: float) -> float:
        """Seconds since the provider last sent content for this answer, or since the
        current request went out when none came yet (SSE keep-alive bytes and lifecycle
        events are not content)."""
        return now - self.last_activity

    def allowed_silence(self) -> float:
        """The first-content allowance before any content, the idle timeout after it."""
        return settings.LLM_READ_TIMEOUT if self.awaiting_content else settings.STREAM_IDLE_TIMEOUT

    def stalled_at(self, now: float) -> bool:
        """Whether the current phase's silence ran out (a background response still
        waiting for its first content is asked before it counts as stalled)."""
        return self.silence(now) > self.allowed_silence()

    def making_progress(self, now: float) -> bool:
        """Whether this answer's lease deserves renewal: it heard from the provider
        within the silence its current phase allows (the whole silent reasoning phase
        included), or its provider is being asked whether it still works on it."""
        return not self.stalled and (self.checking or self.silence(now) <= self.allowed_silence())

    def in_background(self) -> bool:
        """Whether the provider runs this answer's current request as a background
        response it can be asked about (``GET /responses/{id}``)."""
        return bool(getattr(self.stream, "running_upstream", False))

    def ask_provider(self) -> None:
        """The first-content allowance of a background response ran out: a background
        response has no wall limit, so ask the provider (off the monitor thread, which
        serves every answer) and keep waiting while it says ``queued`` or ``in_progress``."""
        if self.checking:
            return
        self.checking = True
        threading.Thread(target=self._ask_provider, name="reply-status", daemon=True).start()

    def _ask_provider(self) -> None:
        try:
            status = str(self.stream.provider_status())
        except Exception:
            logger.warning("could not ask the provider about message %s", self.message_id,
                           exc_info=True)
            status = ""
        try:
            if self.stalled or self.cancelled.is_set() or not self.awaiting_content:
                return
            if not self.keeps_waiting(status):
                self.stall()
        finally:
            self.checking = False

    def keeps_waiting(self, status: str) -> bool:
        """Given the provider's status of the background response this answer awaits
        content from, whether to wait on: yes, with a fresh first-content allowance, while
        it is ``in_progress``. A response can stay ``queued`` for good after a disconnect
        at its start (community.openai.com thread 1382584): ``queued`` gets one more
        allowance, not two in a row."""
        waits = status == "in_progress" or (status == "queued" and not self.was_queued)
        self.was_queued = status == "queued"
        if waits:
            self.last_activity = time.monotonic()
        return waits

    def attach(self, stream: Any) -> None:
        self.stream = stream
        if self.cancelled.is_set():
            stream.close()

    def cancel(self) -> None:
        self.cancelled.set()
        if self.stream is not None:
            self.stream.close()

    def stall(self) -> None:
        self.stalled_waiting = self.awaiting_content
        self.stalled = True
        if self.stream is not None:
            self.stream.close()

    async def wait_async(self, seconds: float) -> bool:
        """Sleep on the event loop (a retry back-off, a pause before following a
        response again); True if Stop arrived meanwhile, noticed within a monitor tick."""
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
            metrics.live_answers(len(self._replies))
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="reply-monitor", daemon=True)
                self._thread.start()
        return reply

    def unregister(self, message_id: int) -> None:
        with self._lock:
            self._replies.pop(message_id, None)
            metrics.live_answers(len(self._replies))

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
            if not reply.stalled and not reply.checking and reply.stalled_at(now):
                if reply.awaiting_content and reply.in_background():
                    reply.ask_provider()
                else:
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
