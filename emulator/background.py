"""Background responses (``background=true``) and resuming their stream.

A background response runs on the emulator's event loop whatever happens to the client
that asked for it; every event it emits is kept, so ``GET /v1/responses/{id}?stream=true
&starting_after=N`` replays the events after sequence number N and then follows the live
ones, and a plain ``GET /v1/responses/{id}`` returns the response object as it stands.
``POST /v1/responses/{id}/cancel`` stops one still running (its status becomes
``cancelled``; a finished one is returned unchanged, so cancelling is idempotent), and
``DELETE /v1/responses/{id}`` forgets it.

A ``drop`` fault cuts only the connection that created the response, which runs on
server-side (developers.openai.com/api/docs/guides/background: the response continues
whatever happens to the client); the ``stuck_queued`` fault reproduces the provider bug
where a disconnect right at ``response.created`` leaves the response ``queued`` for good
(community.openai.com thread 1382584): its creating connection drops after the queued
events, and it never starts until it is cancelled or deleted.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from emulator.streams import (
    CONNECTION_DROP,
    DropConnection,
    ResponsesRenderer,
    Script,
    run_script,
)


@dataclass
class BackgroundRun:
    renderer: ResponsesRenderer
    events: list[bytes] = field(default_factory=list)  # index == sequence_number
    finished: bool = False
    cancelled: bool = False
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None
    # How many events the connection that created the response gets before it drops
    # (None: it does not drop).
    drop_at: int | None = None

    async def produce(self, script: Script) -> None:
        try:
            if self.renderer.plan.fault == "stuck_queued":
                await self._stay_queued()
                return
            script.runs_on_after_drop = True
            async for data in run_script(script):
                if data == CONNECTION_DROP:
                    self.drop_at = len(self.events)
                    continue
                self.events.append(data)
                self._wake()
        except DropConnection:
            pass  # a fault meant for a connection: the run itself just ends here
        finally:
            self.finished = True
            self._wake()

    async def _stay_queued(self) -> None:
        self.events.extend(self.renderer.queued_events())
        self.drop_at = len(self.events)
        self._wake()
        await asyncio.Event().wait()  # until cancelled or deleted

    def _wake(self) -> None:
        self.changed.set()
        self.changed = asyncio.Event()

    async def follow(self, starting_after: int, *, creating: bool = False) -> AsyncIterator[bytes]:
        """Events with sequence_number > starting_after, then live ones until the end.
        ``creating``: the connection that created the response, which a ``drop`` fault cuts."""
        index = max(starting_after + 1, 0)
        while True:
            while index < len(self.events):
                if creating and self.drop_at is not None and index >= self.drop_at:
                    raise DropConnection()
                yield self.events[index]
                index += 1
            if creating and self.drop_at is not None and index >= self.drop_at:
                raise DropConnection()
            if self.finished:
                return
            await self.changed.wait()

    def current(self) -> dict[str, Any]:
        """The response object as of the last event (queued before any)."""
        response = self._last_response()
        if self.cancelled:
            # No usage for a run that never completed (what OpenAI reports for a cancelled
            # response is not documented): the client bills its own estimate, as for Stop.
            return {**response, "status": "cancelled", "usage": None}
        return response

    def _last_response(self) -> dict[str, Any]:
        for data in reversed(self.events):
            payload = json.loads(data.decode().split("data: ", 1)[1])
            if isinstance(payload.get("response"), dict):
                response = payload["response"]
                assert isinstance(response, dict)
                return response
        return self.renderer.response_object("queued", [], None)

    def cancel(self) -> None:
        """Stop generating (its followers' streams end without a terminal event); a
        finished run is left as it is."""
        if self.finished:
            return
        self.cancelled = True
        if self.task is not None:
            self.task.cancel()


class BackgroundRuns:
    """Background responses by id (kept for the emulator's lifetime; reset clears them)."""

    def __init__(self) -> None:
        self._runs: dict[str, BackgroundRun] = {}

    def start(self, renderer: ResponsesRenderer) -> BackgroundRun:
        run = BackgroundRun(renderer)
        run.task = asyncio.get_running_loop().create_task(run.produce(renderer.script()))
        self._runs[renderer.id] = run
        return run

    def get(self, response_id: str) -> BackgroundRun | None:
        return self._runs.get(response_id)

    def delete(self, response_id: str) -> bool:
        """Forget a response (stopping it first if it still runs); False if unknown."""
        run = self._runs.pop(response_id, None)
        if run is None:
            return False
        run.cancel()
        return True

    def clear(self) -> None:
        for run in list(self._runs.values()):
            if run.task is not None and not run.task.done():
                # reset() runs on a test's thread; the task lives on the server's loop.
                run.task.get_loop().call_soon_threadsafe(run.task.cancel)
        self._runs.clear()
