"""The event loop's stream (AsyncChatStream) against the emulator over real HTTP: a close
from another thread (Stop, a stall) that ends a read waiting on a silent provider without
cancelling the answer's task. Its SSE parsing is in test_sse_parser.py; what it yields for
each API style is in test_client.py, test_responses_api.py and
test_background_requests.py."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

import pytest

from llm.client import build_async_client
from llm.stream import open_stream_async
from llm.types import ChatRequest, LLMError, StreamEvent

pytestmark = pytest.mark.django_db

MESSAGES = [{"role": "user", "content": "Explain Euler's identity"}]


def request() -> ChatRequest:
    return ChatRequest(messages=MESSAGES, reasoning_effort="low", max_completion_tokens=4000)


async def close_client(profile: Any) -> None:
    """This test's loop ends here: close the client (and its aiohttp session) it opened."""
    await build_async_client(profile).close()


def test_a_close_from_another_thread_ends_a_read_waiting_through_the_reasoning_pause(
    make_profile: Callable[..., Any], emulator: Any
) -> None:
    # Long enough that only the close can end the read inside the test's guard below.
    emulator.config.think_ms = {"minimal": 60_000, "low": 60_000, "medium": 60_000, "high": 60_000}
    profile = make_profile()

    async def stop_while_thinking() -> tuple[list[StreamEvent], bool]:
        stream = await open_stream_async(profile, request())
        threading.Timer(0.3, stream.close).start()  # the monitor thread's Stop
        events = [event async for event in stream]
        await asyncio.sleep(0)  # the task was not cancelled: it goes on awaiting
        await close_client(profile)
        return events, stream.closed

    events, closed = asyncio.run(asyncio.wait_for(stop_while_thinking(), timeout=30))

    assert events == [] and closed


def test_a_provider_silent_past_the_read_timeout_fails_the_stream_instead_of_hanging(
    make_profile: Callable[..., Any], emulator: Any, settings: Any
) -> None:
    settings.LLM_READ_TIMEOUT = 1  # the clients of this test are built after this
    emulator.config.think_ms = {"minimal": 60_000, "low": 60_000, "medium": 60_000, "high": 60_000}
    profile = make_profile()

    async def read_until_it_fails() -> LLMError:
        try:
            stream = await open_stream_async(profile, request())
            async for _ in stream:
                pass
        except LLMError as error:
            return error
        finally:
            await close_client(profile)
        raise AssertionError("the stream ended without an error")

    error = asyncio.run(asyncio.wait_for(read_until_it_fails(), timeout=30))

    assert error.code == "upstream_error" and error.retryable, (error.code, error.detail)
