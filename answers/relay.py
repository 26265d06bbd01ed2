"""How a growing answer reaches its tabs and Postgres: deltas coalesced into at most one
frame per flush window, and the text checkpointed a bounded number of times (never per
token), each write naming the worker's claim so that one which outlived its lease loses
to the worker that took the answer over.

The answer itself is the :class:`AnswerDraft`; the relay adds to it and says when.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
import weakref
from collections.abc import Callable
from typing import Any

from django.conf import settings

from answers import lifecycle
from answers.draft import AnswerDraft
from answers.lifecycle import Abandoned
from answers.runtime import Db, release_db
from llm.stream import AsyncChatStream
from realtime import frames
from realtime.publishing import publish

logger = logging.getLogger(__name__)


class Relay:
    def __init__(self, draft: AnswerDraft, *, claim: int | None = None,
                 sink: Callable[[int, dict[str, Any]], None] | None = None,
                 resumable: bool = False) -> None:
        self.draft = draft
        self.claim = claim  # this worker's claim: its writes lose to a later one's
        # Where frames go: the event loop's batching publisher for an answer the engine
        # runs, else ``publish`` (a synchronous caller's answer).
        self.sink = sink
        # A background answer's first round: a successor could resume its provider
        # response, whose id is saved once and whose sequence number each checkpoint saves.
        self.resumable = resumable
        self.upstream: AsyncChatStream | None = None  # the stream being read
        self.pending: list[str] = []
        self.pending_refusal: list[str] = []
        self.frames = 0
        self.checkpoints = 0
        self.last_flush = 0.0
        # Read once per answer, not per token: when the next checkpoint falls due (never,
        # once the answer has had its STREAM_MAX_CHECKPOINTS).
        self.checkpoint_every = settings.STREAM_CHECKPOINT_SECONDS
        self.max_checkpoints = settings.STREAM_MAX_CHECKPOINTS
        self.next_checkpoint = time.monotonic() + self.checkpoint_every
        # A checkpoint is due: the answer's coroutine awaits the write (its database calls
        # run off the loop).
        self.checkpoint_due = False
        # A resumed answer: text tabs were shown after the checkpoint, which the provider
        # is about to send again.
        self.replayed_text = ""
        self.replayed_refusal = ""
        # Waiting for its loop's next flush tick (FlushClock); stopped: the answer is no
        # longer this relay's to show (taken over), so no tick flushes it.
        self.ticking = False
        self.stopped = False

    @property
    def shown_anything(self) -> bool:
        return bool(self.draft.seq or self.pending or self.pending_refusal)

    @property
    def provider_seq(self) -> int | None:
        """The provider event the text so far ends with, when a successor could resume
        the stream right after it."""
        stream, response_id = self.upstream, self.draft.response_id
        if not response_id or stream is None or stream.response_id != response_id:
            return None
        return stream.sequence_number

    # --- Output as it arrives ------------------------------------------------------------

    def add_text(self, text: str) -> None:
        if self.replayed_text:
            self.replayed_text, text = _past_replay(self.replayed_text, text, self.draft.message_id)
            if not text:
                return
        self.draft.text_parts.append(text)
        self.pending.append(text)
        self._after_add()

    def add_refusal(self, text: str) -> None:
        if self.replayed_refusal:
            self.replayed_refusal, text = _past_replay(self.replayed_refusal, text,
                                                       self.draft.message_id)
            if not text:
                return
        self.draft.refusal_parts.append(text)
        self.pending_refusal.append(text)
        self._after_add()

    def add_summary(self, text: str) -> None:
        self.draft.summary_parts.append(text)
        self.send(frames.reasoning_frame(self.draft.message_id, text))
        self.frames += 1

    def send(self, frame: dict[str, Any]) -> None:
        (self.sink or publish)(self.draft.message_id, frame)

    def _after_add(self) -> None:
        now = time.monotonic()
        # The first token goes out at once (it ends the thinking timer); later ones wait
        # for the flush window so a stream costs at most ~20 frames per second.
        if self.draft.seq == 0:
            self.flush(now)
        elif not self.ticking and not self.stopped:
            clock = FlushClock.current()
            if clock is None:  # no loop (a synchronous test's relay): by arrival time
                if (now - self.last_flush) * 1000 >= settings.STREAM_FLUSH_MS:
                    self.flush(now)
            else:
                self.ticking = True
                clock.add(self)
        if now >= self.next_checkpoint:
            self.checkpoint_due = True

    def tick(self, clock: FlushClock) -> None:
        """The loop's flush tick: what arrived since the last frame goes out now, unless
        the last frame (the first token's, sent at once) left less than half a window
        ago; then at the next tick, so no two frames of an answer come closer."""
        self.ticking = False
        if self.stopped:
            return
        if (time.monotonic() - self.last_flush) * 1000 < settings.STREAM_FLUSH_MS / 2:
            self.ticking = True
            clock.add(self)
            return
        self.flush()

    def stop(self) -> None:
        """Nothing more goes out from this relay on a tick (the answer was taken over)."""
        self.stopped = True

    def flush(self, now: float | None = None) -> None:
        draft = self.draft
        for kind, buffer in (("text", self.pending), ("refusal", self.pending_refusal)):
            if not buffer:
                continue
            draft.seq += 1
            frame = frames.delta_frame(draft.message_id, draft.seq, "".join(buffer),
                                       refusal=kind == "refusal")
            buffer.clear()
            self.send(frame)
            self.frames += 1
        self.last_flush = now if now is not None else time.monotonic()

    # --- Writes ----------------------------------------------------------------------------

    async def checkpoint(self, db: Db, now: float) -> None:
        """Save text up to the last flushed seq, so a reload + resume loses nothing:
        frames go out on the loop, the write off it. Raises Abandoned once the answer is
        no longer this worker's."""
        self.flush(now)
        self.checkpoints += 1
        self.next_checkpoint = (now + self.checkpoint_every
                                if self.checkpoints < self.max_checkpoints else math.inf)
        self.checkpoint_due = False
        draft = self.draft
        fields: dict[str, Any] = {
            "message_id": draft.message_id, "content": draft.text, "refusal": draft.refusal,
            "seq": draft.seq, "reasoning_summary": draft.reasoning_summary,
            "provider_seq": self.provider_seq, "claim": self.claim,
        }
        await db(lambda: _saved(lifecycle.checkpoint(**fields)))

    async def track(self, db: Db, response_id: str) -> None:
        """Save the id of this answer's background response once (one UPDATE per upstream
        request), so that if this worker dies the next one can resume it."""
        if not self.resumable or response_id == self.draft.response_id:
            return
        self.draft.response_id = response_id
        await db(self._save_response_id)

    async def untrack(self, db: Db) -> None:
        """The resumable first round ended and tool rounds follow, which a successor could
        not resume (it would not have their inputs): the answer is no longer resumable."""
        self.resumable = False
        if self.draft.response_id:
            self.draft.response_id = ""
            await db(self._save_response_id)

    def _save_response_id(self) -> None:
        _saved(lifecycle.track_response(
            message_id=self.draft.message_id, claim=self.claim, response_id=self.draft.response_id
        ))


class FlushClock:
    """One flush tick for every answer streaming on an event loop.

    Each relay with text waiting joins the next tick, and the ticks of a loop fall on one
    grid (multiples of ``STREAM_FLUSH_MS`` of the loop's clock), so every answer's delta
    of one tick is published in the same pass of the loop and the batching publisher
    (``realtime.publishing.BatchPublisher``) sends them all in one Redis round trip.
    Flushing at each answer's own arrival times instead scattered the frames over the
    window: about one round trip per frame. A token waits for the next tick, at most one
    window, as it waited for the window to pass before; with ``STREAM_FLUSH_MS`` = 0
    every delta goes out as it arrives.
    """

    _clocks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, FlushClock] = (
        weakref.WeakKeyDictionary()
    )

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        # Weakly: the clock is the value of its own loop's entry in ``_clocks``, and a
        # strong reference would keep every loop that ever streamed (and its clock) alive.
        self._loop = weakref.ref(loop)
        self._due: list[Relay] = []
        # The pending tick and its time. Kept here: uvloop's call_at returns a plain Handle,
        # with no when(), for a time less than a millisecond away.
        self._handle: asyncio.Handle | None = None
        self._when = 0.0

    @classmethod
    def current(cls) -> FlushClock | None:
        """The running loop's clock; None outside a loop or when nothing is coalesced."""
        if settings.STREAM_FLUSH_MS <= 0:
            return None
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return None
        clock = cls._clocks.get(loop)
        if clock is None:
            clock = cls._clocks[loop] = cls(loop)
        return clock

    def add(self, relay: Relay) -> None:
        self._due.append(relay)
        loop = self._loop()
        if loop is None:  # pragma: no cover - a relay adds itself from its running loop
            return
        period = settings.STREAM_FLUSH_MS / 1000
        tick = (math.floor(loop.time() / period) + 1) * period
        # A tick already set for later (the window was longer when it was set) is moved
        # to this one: a relay never waits past the next grid point of today's window.
        if self._handle is not None and self._when > tick:
            self._handle.cancel()
            self._handle = None
        if self._handle is None:
            self._handle, self._when = loop.call_at(tick, self._tick), tick

    def _tick(self) -> None:
        self._handle = None
        due, self._due = self._due, []
        for relay in due:
            try:
                relay.tick(self)
            except Exception:
                # One answer's failure to send leaves the others' frames to go out.
                logger.exception("message %s: the flush tick failed", relay.draft.message_id)


def _saved(saved: bool) -> None:
    release_db()
    if not saved:
        raise Abandoned()


def _past_replay(replayed: str, text: str, message_id: int) -> tuple[str, str]:
    """Split a delta of a resumed stream into the part tabs were already shown (still
    ahead in ``replayed``) and the new part: returns (rest of replayed, new text)."""
    seen = min(len(replayed), len(text))
    if text[:seen] != replayed[:seen]:
        # The provider replays a stored response's own events, so this cannot happen
        # short of a provider bug; the saved answer then keeps what tabs were shown.
        logger.error("message %s: the resumed stream differs from the text shown", message_id)
    return replayed[seen:], text[seen:]
