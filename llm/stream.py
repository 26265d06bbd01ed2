"""An answer's upstream stream, read on the worker's event loop (answers.engine): opening
it (Chat Completions or Responses), resuming a background response's stream, and reading
its events.

The SDK builds, authenticates and sends the request and raises its typed errors, which
become :class:`LLMError`; the SSE lines are parsed here with orjson
(docs/decisions.md#0038).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

import httpx2
import openai

from llm.bodies import build_chat_body, build_responses_body
from llm.chat_events import chat_events
from llm.client import build_async_client, refuses_summaries, response_status, translate_error
from llm.responses_events import ResponseProgress, ResponsesEvents
from llm.sse import SseParser
from llm.types import ChatRequest, LLMError, StreamEvent

if TYPE_CHECKING:
    from llm.models import ModelProfile

# Runs a database call off the event loop and returns its result.
AsyncDb = Callable[[Callable[[], Any]], Awaitable[Any]]


class AsyncChatStream:
    """An open upstream stream read on the worker's event loop.

    ``close()`` may be called from any thread (the monitor's Stop or stall): it wakes a
    read waiting on the network by cancelling it on the loop, and the stream then ends
    quietly. Each network chunk's SSE objects go to the parsers as it arrives (``llm.sse``).
    """

    def __init__(
        self, profile: ModelProfile, raw: Any, api_style: str, *, background: bool = False,
        response_id: str = "",
    ) -> None:
        self.profile = profile
        self._raw = raw
        self._api_style = api_style
        self.background = background
        self.progress = ResponseProgress(response_id=response_id)
        self._closed = threading.Event()
        self._loop = asyncio.get_running_loop()
        self._reader: asyncio.Task[Any] | None = None
        self._reading = False

    @property
    def response_id(self) -> str:
        return self.progress.response_id

    @property
    def sequence_number(self) -> int | None:
        """The last provider event read (Responses API): a resume starts after it."""
        return self.progress.sequence_number

    @property
    def running_upstream(self) -> bool:
        """Whether a background response may still be generating (and billing) at the
        provider although this stream is done with it."""
        return self.background and bool(self.progress.response_id) and not self.progress.ended

    def provider_status(self) -> str:
        """What the provider says of this background response (``GET /responses/{id}``):
        ``queued`` or ``in_progress`` while it works on it, silent reasoning included; ""
        when it is not a background response still running. A blocking call: not for the
        event loop."""
        if not self.running_upstream:
            return ""
        return response_status(self.profile, self.response_id)

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    def close(self) -> None:
        self._closed.set()
        with contextlib.suppress(RuntimeError):  # the loop is gone: nothing reads
            self._loop.call_soon_threadsafe(self._interrupt)

    def _interrupt(self) -> None:
        if self._reading and self._reader is not None and not self._reader.done():
            self._reader.cancel()

    def _reader_of_events(self) -> Callable[[dict[str, Any], list[StreamEvent]], None]:
        """This stream's event parser for its API style: one SSE object at a time."""
        if self._api_style == "responses":
            return ResponsesEvents(self.progress).read
        return chat_events

    async def __aiter__(self) -> AsyncGenerator[StreamEvent, None]:
        """The stream's events, in order, a network chunk at a time.

        The read is written out here rather than in a helper coroutine: a stream is one
        chunk per token, and each coroutine or async iterator between the network and
        the answer costs CPU per chunk (docs/decisions.md#0055)."""
        self._reader = asyncio.current_task()
        read = self._reader_of_events()
        sse = SseParser()
        body = _body_chunks(self._raw.http_response)
        events: list[StreamEvent] = []
        ended = False  # the body ended: its last line was parsed
        try:
            while not (ended or sse.done):
                if self.closed:
                    return
                self._reading = True
                try:
                    chunk = await anext(body)
                except StopAsyncIteration:
                    payloads = sse.end()
                    ended = True
                except asyncio.CancelledError:
                    if not self.closed:
                        raise
                    # Our own interruption (Stop, a stall), not the task's cancellation:
                    # the answer goes on without this stream.
                    task = asyncio.current_task()
                    if task is not None:
                        task.uncancel()
                    return
                else:
                    payloads = sse.payloads(chunk)
                finally:
                    self._reading = False
                for payload in payloads:
                    read(payload, events)
                    if events:
                        for event in events:
                            yield event
                        events.clear()
        except openai.OpenAIError as exc:
            raise translate_error(exc, self.profile) from exc
        except (httpx2.HTTPError, httpx2.StreamError, OSError) as exc:
            if self.closed:
                return  # Stop or a stall closed the response from the monitor thread
            raise _connection_lost() from exc
        finally:
            if isinstance(body, AsyncGenerator):
                with contextlib.suppress(Exception):
                    await body.aclose()
            with contextlib.suppress(Exception):
                await self._raw.close()  # releases the connection, whatever the reader did


def _body_chunks(response: httpx2.Response) -> AsyncIterator[bytes]:
    """The response body's network chunks as they arrive. A body sent without a content
    encoding (an event stream normally is) is read from the transport's stream itself,
    two async generators per chunk fewer than ``aiter_bytes``, which stays the way for
    an encoded one: it decodes."""
    encoding = response.headers.get("content-encoding", "").strip().lower()
    if (encoding in ("", "identity") and not response.is_stream_consumed
            and isinstance(response.stream, httpx2.AsyncByteStream)):
        response.is_stream_consumed = True  # as aiter_bytes marks it: read once
        return aiter(response.stream)
    return response.aiter_bytes()  # decodes; refuses a body already read


def _connection_lost() -> LLMError:
    return LLMError("upstream_error", "The connection to the model provider was lost.",
                    retryable=True, reason="connection")


async def _call_db(db: AsyncDb | None, fn: Callable[[], Any]) -> Any:
    return fn() if db is None else await db(fn)


# What goes through the SDK's typed arguments: the model, which an Azure client reads to
# pick the deployment's path, and ``stream``, which picks the response type. The rest of
# the body is sent as given (``extra_body``) instead of being walked against its
# parameter types on every request (about 30 µs of a turn's worker CPU), a walk that
# changes nothing in a body ``llm.bodies`` built from plain JSON.
_TYPED = ("model", "stream")


def _sdk_arguments(body: dict[str, Any]) -> dict[str, Any]:
    """``body`` as arguments of the SDK's ``create``: the model and ``stream`` typed, the
    rest in ``extra_body``, which the SDK merges over the typed arguments (the later
    mapping wins), so a required argument (Chat Completions' ``messages``) keeps an empty
    placeholder. The request's JSON is the body, key for key."""
    arguments = {key: body[key] for key in _TYPED if key in body}
    given = {key: value for key, value in body.items() if key not in _TYPED}
    if given:
        arguments["extra_body"] = given
        if "messages" in given:
            arguments["messages"] = []
    return arguments


async def open_stream_async(
    profile: ModelProfile, request: ChatRequest, *, db: AsyncDb | None = None
) -> AsyncChatStream:
    """Send the request and return its stream. ``db`` runs, off the loop, the one database
    write the request may cause: when the provider refuses reasoning summaries (an OpenAI
    org that is not verified), the profile stops asking for them and the request is sent
    once more without (a refused request showed nothing and costs nothing)."""
    client = build_async_client(profile)
    try:
        if profile.api_style == "responses":
            body = build_responses_body(profile, request)
            try:
                raw: Any = await client.responses.with_streaming_response.create(
                    **_sdk_arguments(body)
                ).__aenter__()
            except openai.BadRequestError as exc:
                if not refuses_summaries(profile, exc):
                    raise
                await _call_db(db, profile.stop_reasoning_summaries)
                raw = await client.responses.with_streaming_response.create(
                    **_sdk_arguments(build_responses_body(profile, request))
                ).__aenter__()
        else:
            raw = await client.chat.completions.with_streaming_response.create(
                **_sdk_arguments(build_chat_body(profile, request))
            ).__aenter__()
    except openai.OpenAIError as exc:
        raise translate_error(exc, profile) from exc
    return AsyncChatStream(profile, raw, profile.api_style, background=request.background)


async def resume_stream_async(
    profile: ModelProfile, response_id: str, *, starting_after: int | None
) -> AsyncChatStream:
    """Follow a background response again (``GET /responses/{id}?stream=true``): the
    events after sequence number ``starting_after`` (all of them when None), then the
    live ones."""
    client = build_async_client(profile)
    options: dict[str, Any] = {} if starting_after is None else {"starting_after": starting_after}
    try:
        raw = await client.responses.with_streaming_response.retrieve(
            response_id, stream=True, **options
        ).__aenter__()
    except openai.OpenAIError as exc:
        raise translate_error(exc, profile) from exc
    stream = AsyncChatStream(profile, raw, "responses", background=True, response_id=response_id)
    # Before it reads anything new, the stream is still past the event it resumed after.
    stream.progress.sequence_number = starting_after
    return stream
