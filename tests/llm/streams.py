"""Reading an answer's upstream stream from a test: on an event loop of the test's own, as
the worker's loop reads it (``llm.stream``), with the loop's clients closed at the end."""

from __future__ import annotations

import asyncio
from typing import Any

from llm.client import close_clients
from llm.stream import open_stream_async
from llm.types import ChatRequest, StreamEvent


def read_stream(profile: Any, request: ChatRequest,
                seen: list[StreamEvent] | None = None) -> list[StreamEvent]:
    """The stream's events to its end. They go to ``seen`` as they arrive, so a test
    whose stream fails still sees what came before the failure."""
    events: list[StreamEvent] = [] if seen is None else seen

    async def read() -> None:
        try:
            stream = await open_stream_async(profile, request)
            async for event in stream:
                events.append(event)
        finally:
            await close_clients()

    asyncio.run(read())
    return events
