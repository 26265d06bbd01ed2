"""The only module that imports the ``openai`` SDK.

It turns a :class:`ModelProfile` plus a :class:`ChatRequest` into an HTTP call, yields
provider-neutral stream events, and translates every SDK error into :class:`LLMError`.
The SDK's own retries are off: the generation loop owns retries, because retrying
after text was shown would duplicate (and double-bill) an answer.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import datetime as dt
import json
import socket
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import httpx2
import openai
import orjson
from django.conf import settings

from chatsite.env import env_secret
from llm.key_envs import key_env_problem
from llm.types import (
    ChatRequest,
    Finished,
    JsonCompletion,
    LLMError,
    ReasoningItem,
    ReasoningSummaryDelta,
    RefusalDelta,
    ResponseStarted,
    StreamEvent,
    TextDelta,
    ToolCallDelta,
    Usage,
    UsageReport,
)

if TYPE_CHECKING:
    from llm.models import ModelProfile

DEMO_API_KEY = "offline-demo"
AZURE_SCOPE = "https://cognitiveservices.azure.com/.default"
# Cancelling or deleting a stored response is a small control call, not an answer: it
# must not hold a worker thread for the answer's long read timeout.
CONTROL_TIMEOUT_SECONDS = 10.0

_clients: dict[tuple[Any, ...], Any] = {}
_clients_lock = threading.Lock()


async def close_clients() -> None:
    """Close the running loop's cached clients and their connections (a worker's loop
    ends with its process; unclosed, each would be reported at exit)."""
    loop = asyncio.get_running_loop()
    with _clients_lock:
        mine = [key for key in _clients if key[0] is loop]
        clients = [_clients.pop(key) for key in mine]
    for client in clients:
        with contextlib.suppress(Exception):
            await client.close()


def forget_clients() -> None:
    """Drop every cached client (the settings they were built from changed), closing
    each: a sync one here, an async one on its loop if that loop still runs."""
    with _clients_lock:
        items = list(_clients.items())
        _clients.clear()
    for (loop, *_), client in items:
        with contextlib.suppress(Exception):
            if loop is None:
                client.close()
            elif loop.is_running():
                asyncio.run_coroutine_threadsafe(client.close(), loop)


def is_demo_mode() -> bool:
    """True when answers come from the built-in emulator because no provider is configured:
    neither an OpenAI key nor an Azure endpoint with a deployment."""
    azure = settings.AZURE_OPENAI_ENDPOINT and settings.AZURE_OPENAI_DEPLOYMENT
    return not settings.OPENAI_API_KEY and not azure


def _http_client(*, asynchronous: bool = False) -> Any:
    # One pooled client per provider config and process: many answers stream at once.
    # The event loop's client sends through aiohttp (the SDK's ``aiohttp`` extra), whose
    # HTTP parser is compiled: a worker reads one small chunk per token of every answer.
    factory = openai.DefaultAioHttpClient if asynchronous else openai.DefaultHttpxClient
    return factory(
        limits=httpx2.Limits(max_connections=1000, max_keepalive_connections=200),
        timeout=httpx2.Timeout(settings.LLM_READ_TIMEOUT, connect=10.0),
    )


def _profile_key(profile: ModelProfile) -> str | None:
    if profile.api_key_env:
        return env_secret(profile.api_key_env) or None
    return None


def _check_key_env(profile: ModelProfile) -> None:
    """Refuse a key variable outside the allowed names before reading it; the admin form
    refuses it too, but a row may have reached the database some other way."""
    problem = key_env_problem(profile.api_key_env) if profile.api_key_env else None
    if problem is not None:
        raise LLMError(
            "upstream_error",
            f"Model profile {profile.display_name!r} is misconfigured: {problem} "
            "An admin must fix its API key environment variable.",
            reason="configuration",
        )


def _entra_token_provider() -> Callable[[], str]:
    from azure.identity import DefaultAzureCredential, get_bearer_token_provider

    return get_bearer_token_provider(DefaultAzureCredential(), AZURE_SCOPE)


def build_client(profile: ModelProfile) -> openai.OpenAI:
    """A cached SDK client for the profile's provider, endpoint and credentials."""
    client: openai.OpenAI = _client(profile, asynchronous=False)
    return client


def build_async_client(profile: ModelProfile) -> openai.AsyncOpenAI:
    """The same client for the worker's event loop (answers.engine), which streams
    every answer of its process; cached apart from the sync ones."""
    client: openai.AsyncOpenAI = _client(profile, asynchronous=True)
    return client


def _client(profile: ModelProfile, *, asynchronous: bool) -> Any:
    _check_key_env(profile)
    provider = profile.provider
    if provider == "azure":
        endpoint = (profile.endpoint or settings.AZURE_OPENAI_ENDPOINT).rstrip("/")
        own_key = _profile_key(profile)
        if not own_key and endpoint != settings.AZURE_OPENAI_ENDPOINT.rstrip("/"):
            # The server's Azure key and its Entra ID tokens go only to the server's own
            # Azure endpoint, never to one typed into a profile.
            raise LLMError(
                "upstream_error",
                f"Model profile {profile.display_name!r} points at its own Azure endpoint but "
                "names no key variable. An admin must set its key variable (LLM_KEY_…).",
                reason="configuration",
            )
        key = own_key or settings.AZURE_OPENAI_API_KEY or None
        # The Responses API goes to Azure's v1 path (/openai/v1/responses, GA, no
        # api-version; openai-wire.md section 6) whatever dated version the profile names
        # for Chat Completions: a dated Responses path needs 2025-03-01-preview or later.
        version = "" if profile.api_style == "responses" else profile.api_version
        cache_key: tuple[Any, ...] = ("azure", endpoint, version, key)
    elif provider == "compatible":
        endpoint = profile.endpoint.rstrip("/")
        key = _profile_key(profile) or "none"
        cache_key = ("compatible", endpoint, key)
    elif is_demo_mode():
        endpoint = settings.EMULATOR_URL.rstrip("/") + "/v1"
        key = DEMO_API_KEY
        cache_key = ("demo", endpoint)
    else:
        endpoint = settings.OPENAI_BASE_URL or ""
        key = _profile_key(profile) or settings.OPENAI_API_KEY
        if not key:
            # Azure-only set-up: an OpenAI profile has no key to send.
            raise LLMError(
                "upstream_error",
                f"Model profile {profile.display_name!r} needs an OpenAI key, and none is "
                "configured. Pick the Azure model, or an admin must set OPENAI_API_KEY.",
                reason="configuration",
            )
        cache_key = ("openai", endpoint, key, settings.OPENAI_ORGANIZATION, settings.OPENAI_PROJECT)
    if not endpoint and provider != "openai":
        raise LLMError(
            "upstream_error",
            f"Model profile {profile.display_name!r} has no endpoint configured. "
            "An admin must set its endpoint or the provider's environment variable.",
            reason="configuration",
        )

    # An async client's connections belong to the loop that opened them (the worker's
    # one loop in production; tests run others). The loop itself is the key, not its id,
    # which a later loop may be given again.
    cache_key = (asyncio.get_running_loop() if asynchronous else None, *cache_key)
    with _clients_lock:
        client = _clients.get(cache_key)
        if client is not None:
            return client
        plain, azure = (
            (openai.AsyncOpenAI, openai.AsyncAzureOpenAI) if asynchronous
            else (openai.OpenAI, openai.AzureOpenAI)
        )
        common: dict[str, Any] = {
            "max_retries": 0, "http_client": _http_client(asynchronous=asynchronous)
        }
        if provider == "azure" and version:
            auth: dict[str, Any] = (
                {"api_key": key} if key else {"azure_ad_token_provider": _entra_token_provider()}
            )
            client = azure(azure_endpoint=endpoint, api_version=version, **auth, **common)
        elif provider == "azure":
            # Azure's v1 GA path: the plain client, deployment name as model, and either a
            # key or a callable that returns a fresh Entra ID token per request.
            client = plain(
                base_url=f"{endpoint}/openai/v1/",
                api_key=key or _token_callable(asynchronous),
                **common,
            )
        elif provider == "openai" and not is_demo_mode():
            client = plain(
                api_key=key,
                base_url=endpoint or None,
                organization=settings.OPENAI_ORGANIZATION or None,
                project=settings.OPENAI_PROJECT or None,
                **common,
            )
        else:
            client = plain(api_key=key, base_url=endpoint, **common)
        _clients[cache_key] = client
        return client


def _token_callable(asynchronous: bool) -> Any:
    """The Entra ID token callable a plain client takes as its key: the async client
    awaits it. The credential caches its token, so the call rarely leaves the process."""
    provider = _entra_token_provider()
    if not asynchronous:
        return provider

    async def token() -> str:
        return await asyncio.to_thread(provider)

    return token


def build_chat_body(profile: ModelProfile, request: ChatRequest) -> dict[str, Any]:
    """The exact Chat Completions body, from the profile alone (no model-name branches)."""
    body: dict[str, Any] = {"model": profile.model, "messages": request.messages}
    if request.stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    if request.reasoning_effort and profile.accepts("reasoning_effort"):
        body["reasoning_effort"] = request.reasoning_effort
    if profile.accepts("max_completion_tokens"):
        body["max_completion_tokens"] = request.max_completion_tokens
    elif profile.accepts("max_tokens"):
        body["max_tokens"] = request.max_completion_tokens
    if request.tools and profile.accepts("tools"):
        body["tools"] = request.tools
    if request.response_format is not None and profile.accepts("response_format"):
        body["response_format"] = request.response_format
    return body


def _responses_input(messages: list[dict[str, Any]]) -> tuple[str, list[dict[str, Any]]]:
    """Split chat messages into Responses ``instructions`` and ``input`` items."""
    instructions: list[str] = []
    items: list[dict[str, Any]] = []
    for message in messages:
        role = message["role"]
        if role in ("developer", "system"):
            instructions.append(message["content"])
        elif role == "tool":
            items.append(
                {
                    "type": "function_call_output",
                    "call_id": message["tool_call_id"],
                    "output": message["content"],
                }
            )
        elif role == "assistant" and message.get("tool_calls"):
            # Each reasoning item goes right before the output it led to.
            items.extend(message.get("reasoning_items") or ())
            for call in message["tool_calls"]:
                items.append(
                    {
                        "type": "function_call",
                        "call_id": call["id"],
                        "name": call["function"]["name"],
                        "arguments": call["function"]["arguments"],
                    }
                )
        else:
            if role == "assistant":
                items.extend(message.get("reasoning_items") or ())
            items.append({"role": role, "content": message["content"] or ""})
    return "\n\n".join(instructions), items


def build_responses_body(profile: ModelProfile, request: ChatRequest) -> dict[str, Any]:
    """The exact Responses body. Nothing is stored at the provider, except for a
    background answer: the provider requires ``store`` for it, and keeping it is what
    lets another worker resume its stream."""
    instructions, items = _responses_input(request.messages)
    body: dict[str, Any] = {"model": profile.model, "input": items, "store": request.background}
    if request.background:
        body["background"] = True
    if instructions:
        body["instructions"] = instructions
    if request.stream:
        body["stream"] = True
    if profile.accepts("reasoning_effort"):
        body["reasoning"] = {"effort": request.reasoning_effort}
        if profile.reasoning_summaries:
            body["reasoning"]["summary"] = "auto"
        # Later turns and tool rounds send the reasoning back themselves (encrypted), so
        # they never depend on what the provider stored (a background response may be
        # deleted once its answer ended).
        body["include"] = ["reasoning.encrypted_content"]
    body["max_output_tokens"] = request.max_completion_tokens
    if request.tools and profile.accepts("tools"):
        body["tools"] = [
            {"type": "function", **tool["function"]} for tool in request.tools
        ]
    if request.response_format is not None and profile.accepts("response_format"):
        schema = request.response_format.get("json_schema", {})
        body["text"] = {"format": {"type": "json_schema", **schema}}
    if profile.verbosity:
        body["text"] = {**body.get("text", {}), "verbosity": profile.verbosity}
    if request.prompt_cache_key:
        body["prompt_cache_key"] = request.prompt_cache_key
    if profile.service_tier:
        body["service_tier"] = profile.service_tier
    return body


@dataclass
class ResponseProgress:
    """How far a Responses stream got: the response's id (from ``response.created``, or
    the one being resumed), the last ``sequence_number`` read, and whether its terminal
    event arrived."""

    response_id: str = ""
    sequence_number: int | None = None
    ended: bool = False
    status: str = ""  # the response's last status the stream reported (queued, in_progress, …)


class ChatStream:
    """An open upstream stream. ``close()`` may be called from another thread (Stop)."""

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

    def close(self) -> None:
        self._closed.set()
        # Closing a half-read response from another thread is best effort. Closing alone
        # does not wake a read blocked in the silent reasoning phase (it would wait for
        # the first token, minutes at high effort); shutting the socket down does.
        with contextlib.suppress(Exception):
            http = getattr(self._raw, "http_response", None) or self._raw.response
            http.extensions["network_stream"].get_extra_info("socket").shutdown(
                socket.SHUT_RDWR
            )
        with contextlib.suppress(Exception):
            self._raw.close()

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    def _events(self, lines: Iterator[Any]) -> Iterator[Any]:
        """The stream events of SSE ``lines``, parsed for this stream's API style."""
        payloads = _sse_payloads(lines)
        if self._api_style == "responses":
            return _responses_events(payloads, self.progress)
        return _chat_events(payloads)

    def __iter__(self) -> Iterator[StreamEvent]:
        try:
            yield from self._events(self._raw.iter_lines())
        except openai.OpenAIError as exc:
            raise translate_error(exc, self.profile) from exc
        except (httpx2.HTTPError, httpx2.StreamError, OSError) as exc:
            if self.closed:
                return  # Stop or a stall closed the response from the monitor thread
            raise _connection_lost() from exc


def _connection_lost() -> LLMError:
    return LLMError("upstream_error", "The connection to the model provider was lost.",
                    retryable=True, reason="connection")


class _Pause:
    """Marks where the parsers ran out of lines: an async reader fetches more and asks
    the same parser for its next event, so one parser serves both kinds of stream."""


PAUSE = _Pause()


class AsyncChatStream(ChatStream):
    """An open upstream stream read on the worker's event loop (answers.engine).

    ``close()`` may be called from any thread (the monitor's Stop or stall): it wakes a
    read waiting on the network by cancelling it on the loop, and the stream then ends
    as a sync one does when closed. Lines are parsed by the same parsers as the sync
    stream, fed a line at a time.
    """

    def __init__(
        self, profile: ModelProfile, raw: Any, api_style: str, *, background: bool = False,
        response_id: str = "",
    ) -> None:
        super().__init__(profile, raw, api_style, background=background, response_id=response_id)
        self._loop = asyncio.get_running_loop()
        self._reader: asyncio.Task[Any] | None = None
        self._reading = False
        self._lines: collections.deque[str] = collections.deque()
        self._eof = False

    def close(self) -> None:
        self._closed.set()
        with contextlib.suppress(RuntimeError):  # the loop is gone: nothing reads
            self._loop.call_soon_threadsafe(self._interrupt)

    def _interrupt(self) -> None:
        if self._reading and self._reader is not None and not self._reader.done():
            self._reader.cancel()

    def _feed(self) -> Iterator[Any]:
        while True:
            if self._lines:
                yield self._lines.popleft()
            elif self._eof:
                return
            else:
                yield PAUSE

    async def __aiter__(self) -> AsyncIterator[StreamEvent]:  # type: ignore[override]
        self._reader = asyncio.current_task()
        events = self._events(self._feed())
        lines = _lines(self._raw.http_response.aiter_bytes())
        try:
            for event in events:
                if event is not PAUSE:
                    yield event
                elif self.closed or not await self._read(lines):
                    return
        except openai.OpenAIError as exc:
            raise translate_error(exc, self.profile) from exc
        except (httpx2.HTTPError, httpx2.StreamError, OSError) as exc:
            if self.closed:
                return
            raise _connection_lost() from exc
        finally:
            with contextlib.suppress(Exception):
                await self._raw.close()

    async def _read(self, lines: AsyncIterator[str]) -> bool:
        """One more line into the buffer; False when the stream was closed (Stop, a
        stall) while waiting. The end of the stream lets the parsers finish."""
        self._reading = True
        try:
            line = await anext(lines)
        except StopAsyncIteration:
            self._eof = True
            return True
        except asyncio.CancelledError:
            if not self.closed:
                raise
            # Our own interruption, not the task's cancellation: the answer goes on.
            task = asyncio.current_task()
            if task is not None:
                task.uncancel()
            return False
        finally:
            self._reading = False
        self._lines.append(line)
        return True


async def _lines(chunks: AsyncIterator[bytes]) -> AsyncIterator[str]:
    """The lines of an SSE body. Split here rather than through the SDK's and httpx's
    text and line decoders: a stream is one small chunk per token, and each layer of
    async generators costs CPU per chunk. Lines split on LF (CRLF and CR-only endings
    too), UTF-8 decoded whole, so a character split across chunks stays intact."""
    rest = b""
    async for chunk in chunks:
        rest += chunk
        if b"\n" not in rest and b"\r" not in rest:
            continue
        *complete, rest = rest.replace(b"\r\n", b"\n").replace(b"\r", b"\n").split(b"\n")
        for line in complete:
            yield line.decode("utf-8", "replace")
    if rest:
        yield rest.decode("utf-8", "replace")


AsyncDb = Callable[[Callable[[], Any]], Awaitable[Any]]


async def _call_db(db: AsyncDb | None, fn: Callable[[], Any]) -> Any:
    return fn() if db is None else await db(fn)


async def open_stream_async(
    profile: ModelProfile, request: ChatRequest, *, db: AsyncDb | None = None
) -> AsyncChatStream:
    """``open_stream`` on the event loop; ``db`` runs the one database write the
    request may cause (turning the profile's refused reasoning summaries off) off it."""
    client = build_async_client(profile)
    try:
        if profile.api_style == "responses":
            body = build_responses_body(profile, request)
            try:
                raw: Any = await client.responses.with_streaming_response.create(**body).__aenter__()
            except openai.BadRequestError as exc:
                if not _refuses_summaries(profile, exc):
                    raise
                from llm.profiles import stop_reasoning_summaries

                await _call_db(db, lambda: stop_reasoning_summaries(profile))
                raw = await client.responses.with_streaming_response.create(
                    **build_responses_body(profile, request)
                ).__aenter__()
        else:
            raw = await client.chat.completions.with_streaming_response.create(
                **build_chat_body(profile, request)
            ).__aenter__()
    except openai.OpenAIError as exc:
        raise translate_error(exc, profile) from exc
    return AsyncChatStream(profile, raw, profile.api_style, background=request.background)


async def resume_stream_async(
    profile: ModelProfile, response_id: str, *, starting_after: int | None
) -> AsyncChatStream:
    """``resume_stream`` on the event loop."""
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


def _refuses_summaries(profile: ModelProfile, exc: openai.BadRequestError) -> bool:
    """An OpenAI org that is not verified answers 400, param ``reasoning.summary``."""
    return profile.reasoning_summaries and _error_body(exc).get("param") == "reasoning.summary"


def _create_response(
    send: Callable[[dict[str, Any]], Any], profile: ModelProfile, request: ChatRequest
) -> Any:
    """Send a Responses body with ``send``. When the provider refuses reasoning summaries
    (an OpenAI org that is not verified answers 400, param ``reasoning.summary``), the
    profile stops asking for them and the request is sent once more without: a refused
    request showed nothing and costs nothing, and the answer matters more than its
    summary."""
    try:
        return send(build_responses_body(profile, request))
    except openai.BadRequestError as exc:
        if not _refuses_summaries(profile, exc):
            raise
    from llm.profiles import stop_reasoning_summaries

    stop_reasoning_summaries(profile)
    return send(build_responses_body(profile, request))


def open_stream(profile: ModelProfile, request: ChatRequest) -> ChatStream:
    """Send the request and return its stream.

    The SDK builds, authenticates and sends the request and raises its typed errors;
    the SSE lines are parsed here with orjson. See docs/decisions.md#0038.
    """
    client = build_client(profile)
    try:
        if profile.api_style == "responses":
            raw: Any = _create_response(
                lambda body: client.responses.with_streaming_response.create(**body).__enter__(),
                profile, request,
            )
        else:
            raw = client.chat.completions.with_streaming_response.create(
                **build_chat_body(profile, request)
            ).__enter__()
    except openai.OpenAIError as exc:
        raise translate_error(exc, profile) from exc
    return ChatStream(profile, raw, profile.api_style, background=request.background)


def resume_stream(
    profile: ModelProfile, response_id: str, *, starting_after: int | None
) -> ChatStream:
    """Follow a background response again (``GET /responses/{id}?stream=true``): the
    events after sequence number ``starting_after`` (all of them when None), then the
    live ones."""
    client = build_client(profile)
    options: dict[str, Any] = {} if starting_after is None else {"starting_after": starting_after}
    try:
        raw = client.responses.with_streaming_response.retrieve(
            response_id, stream=True, **options
        ).__enter__()
    except openai.OpenAIError as exc:
        raise translate_error(exc, profile) from exc
    return ChatStream(profile, raw, "responses", background=True, response_id=response_id)


def response_status(profile: ModelProfile, response_id: str) -> str:
    """``GET /responses/{id}``: the status of a stored (background) response."""
    client = build_client(profile)
    try:
        return str(client.responses.retrieve(response_id, timeout=CONTROL_TIMEOUT_SECONDS).status)
    except openai.OpenAIError as exc:
        raise translate_error(exc, profile) from exc


def cancel_response(profile: ModelProfile, response_id: str) -> None:
    """``POST /responses/{id}/cancel``: a background response runs on at the provider
    (and is billed) whatever happens to our connection, so one we give up on is
    cancelled there. Cancelling one that already ended changes nothing."""
    client = build_client(profile)
    try:
        client.responses.with_raw_response.cancel(response_id, timeout=CONTROL_TIMEOUT_SECONDS)
    except openai.OpenAIError as exc:
        raise translate_error(exc, profile) from exc


def delete_response(profile: ModelProfile, response_id: str) -> None:
    """``DELETE /responses/{id}``: forget a stored background response once its answer
    has ended, so the provider keeps no more of a conversation than it does with
    ``store=false``."""
    client = build_client(profile)
    try:
        client.responses.delete(response_id, timeout=CONTROL_TIMEOUT_SECONDS)
    except openai.OpenAIError as exc:
        raise translate_error(exc, profile) from exc


def complete_json(profile: ModelProfile, request: ChatRequest) -> JsonCompletion:
    """A non-streaming Structured Outputs call: the parsed JSON object and the usage the
    provider reported. An unusable reply raises LLMError carrying that usage in
    ``error.usage`` (the provider billed it all the same)."""
    client = build_client(profile)
    request.stream = False
    usage: Usage | None = None
    try:
        if profile.api_style == "responses":
            response = _create_response(
                lambda body: client.responses.create(**body), profile, request
            )
            text = response.output_text
            if response.usage is not None:
                usage = _usage_from_responses(response.usage.model_dump())
        else:
            completion = client.chat.completions.create(**build_chat_body(profile, request))
            text = completion.choices[0].message.content or ""
            if completion.usage is not None:
                usage = _usage_from_chat(completion.usage.model_dump())
    except openai.OpenAIError as exc:
        raise translate_error(exc, profile) from exc
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        error = LLMError("upstream_error", "The model returned malformed JSON.")
        error.usage = usage
        raise error from exc
    if not isinstance(value, dict):
        error = LLMError("upstream_error", "The model returned JSON that is not an object.")
        error.usage = usage
        raise error
    return JsonCompletion(value, usage)


def listed_shutdown_date(profile: ModelProfile) -> dt.date | None:
    """The provider's announced shutdown date for the profile's model, if it lists one
    (OpenAI's ``GET /v1/models/{id}`` carries ``shutdown_date``)."""
    client = build_client(profile)
    try:
        model = client.models.retrieve(profile.model)
    except openai.NotFoundError:
        return None
    except openai.OpenAIError as exc:
        raise translate_error(exc, profile) from exc
    # A typed field in recent SDKs, an extra field in older ones and on gateways.
    raw = getattr(model, "shutdown_date", None) or (model.model_extra or {}).get("shutdown_date")
    if not raw:
        return None
    try:
        return dt.date.fromisoformat(str(raw)[:10])
    except ValueError:
        return None


def list_models(profile: ModelProfile) -> list[dict[str, Any]]:
    """The provider's ``GET /v1/models`` listing for the profile's endpoint and key:
    ``{"id": …, "shutdown_date": date | None}`` per model."""
    client = build_client(profile)
    try:
        # A page load may be waiting on this (the first sync): not the answer's long timeout.
        models = list(client.models.list(timeout=15.0))
    except openai.OpenAIError as exc:
        raise translate_error(exc, profile) from exc
    listing = []
    for model in models:
        raw = getattr(model, "shutdown_date", None) or (model.model_extra or {}).get("shutdown_date")
        try:
            shutdown = dt.date.fromisoformat(str(raw)[:10]) if raw else None
        except ValueError:
            shutdown = None
        listing.append({"id": str(model.id), "shutdown_date": shutdown})
    return listing


def _sse_payloads(lines: Iterator[Any]) -> Iterator[Any]:
    """The JSON objects of an SSE stream's ``data:`` lines (orjson), up to ``[DONE]``
    (Chat Completions ends with it; a Responses stream ends after its terminal event).

    ``event:`` lines (Responses repeats the type inside the data), comment lines
    (``: keep-alive``) and blank separators are skipped; an object with an ``error``
    becomes an :class:`LLMError`, as the SDK raises it (retryable only before text).
    """
    for line in lines:
        if line is PAUSE:
            yield PAUSE  # an async reader refills the lines (AsyncChatStream)
            continue
        if not line.startswith("data:"):
            continue
        data = line[5:].strip()
        if data == "[DONE]":
            return
        try:
            payload = orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            raise LLMError(
                "upstream_error", "The model provider sent a malformed stream.", retryable=True,
                reason="malformed",
            ) from exc
        if not isinstance(payload, dict):
            continue
        if payload.get("error"):
            raise LLMError(
                "upstream_error", "The model provider reported an error mid-answer.",
                retryable=True, reason="stream_error",
            )
        yield payload


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _usage_from_chat(raw: dict[str, Any]) -> Usage:
    # Any *_details object or field may be missing or null (gateways, old Azure versions).
    prompt_details = raw.get("prompt_tokens_details") or {}
    completion_details = raw.get("completion_tokens_details") or {}
    return Usage(
        prompt_tokens=_int(raw.get("prompt_tokens")),
        cached_tokens=_int(prompt_details.get("cached_tokens")),
        completion_tokens=_int(raw.get("completion_tokens")),
        reasoning_tokens=_int(completion_details.get("reasoning_tokens")),
        # openai-python ``PromptTokensDetails.cache_write_tokens`` (optional).
        cache_write_tokens=_int(prompt_details.get("cache_write_tokens")),
    )


def _usage_from_responses(raw: dict[str, Any]) -> Usage:
    input_details = raw.get("input_tokens_details") or {}
    output_details = raw.get("output_tokens_details") or {}
    write_details = input_details.get("cache_write_tokens_details") or {}
    return Usage(
        prompt_tokens=_int(raw.get("input_tokens")),
        cached_tokens=_int(input_details.get("cached_tokens")),
        completion_tokens=_int(raw.get("output_tokens")),
        reasoning_tokens=_int(output_details.get("reasoning_tokens")),
        # openai-python ``InputTokensDetails``: cache writes are their own price line.
        cache_write_tokens=_int(input_details.get("cache_write_tokens")),
        cache_write_12h_tokens=_int(write_details.get("ttl_12h_tokens")),
    )


def _chat_events(payloads: Iterator[Any]) -> Iterator[Any]:
    for chunk in payloads:
        if chunk is PAUSE:
            yield PAUSE
            continue
        # Azure's prompt-annotation chunk also has empty choices: only a non-null
        # usage marks the usage chunk.
        usage = chunk.get("usage")
        if isinstance(usage, dict):
            yield UsageReport(_usage_from_chat(usage))
        for choice in chunk.get("choices") or ():
            delta = choice.get("delta")  # absent on Azure content-filter annotation chunks
            if isinstance(delta, dict):
                content = delta.get("content")
                if content:
                    yield TextDelta(str(content))
                refusal = delta.get("refusal")
                if refusal:
                    yield RefusalDelta(str(refusal))
                for call in delta.get("tool_calls") or ():
                    function = call.get("function") or {}
                    yield ToolCallDelta(
                        index=_int(call.get("index")),
                        id=call.get("id"),
                        name=function.get("name"),
                        arguments=function.get("arguments") or "",
                    )
            if choice.get("finish_reason"):
                yield Finished(str(choice["finish_reason"]))


def _responses_events(payloads: Iterator[Any], progress: ResponseProgress) -> Iterator[Any]:
    """Stream events from Responses API event objects, noting the stream's progress.

    A resumed stream starts after events it never sees again (a tool call announced,
    a reasoning item finished): the terminal event's ``output`` supplies the items this
    stream did not see, once.
    """
    call_index: dict[str, int] = {}
    reasoning_seen: set[str] = set()
    for event in payloads:
        if event is PAUSE:
            yield PAUSE
            continue
        sequence = event.get("sequence_number")
        if isinstance(sequence, int):
            progress.sequence_number = sequence
        kind = event.get("type")
        if kind == "response.output_text.delta":
            if event.get("delta"):
                yield TextDelta(str(event["delta"]))
        elif kind == "response.refusal.delta":
            if event.get("delta"):
                yield RefusalDelta(str(event["delta"]))
        elif kind == "response.reasoning_summary_text.delta":
            if event.get("delta"):
                yield ReasoningSummaryDelta(str(event["delta"]))
        elif kind == "response.function_call_arguments.delta":
            index = call_index.get(str(event.get("item_id")))
            if index is not None:  # else announced before a resume: taken from the output
                yield ToolCallDelta(index, None, None, str(event.get("delta") or ""))
        elif kind == "response.output_item.added":
            item = _object(event.get("item"))
            if item.get("type") == "function_call":
                index = call_index.setdefault(_item_key(item), len(call_index))
                yield ToolCallDelta(index, item.get("call_id"), item.get("name"), "")
        elif kind == "response.output_item.done":
            item = _object(event.get("item"))
            if item.get("type") == "reasoning":
                reasoning_seen.add(str(item.get("id")))
                yield ReasoningItem(_without_nulls(item))
        elif kind in ("response.queued", "response.in_progress"):
            progress.status = str(_object(event.get("response")).get("status") or "")
        elif kind == "response.created":
            progress.status = str(_object(event.get("response")).get("status") or "")
            response_id = str(_object(event.get("response")).get("id") or "")
            if response_id:
                progress.response_id = response_id
                yield ResponseStarted(response_id)
        elif kind in ("response.completed", "response.incomplete"):
            progress.ended = True
            response = _object(event.get("response"))
            output = [item for item in response.get("output") or () if isinstance(item, dict)]
            for item in output:
                if item.get("type") == "reasoning" and str(item.get("id")) not in reasoning_seen:
                    yield ReasoningItem(_without_nulls(item))
                elif item.get("type") == "function_call" and _item_key(item) not in call_index:
                    index = call_index.setdefault(_item_key(item), len(call_index))
                    yield ToolCallDelta(index, item.get("call_id"), item.get("name"),
                                        str(item.get("arguments") or ""))
            usage = response.get("usage")
            if isinstance(usage, dict):
                yield UsageReport(
                    _usage_from_responses(usage), service_tier=str(response.get("service_tier") or "")
                )
            if kind == "response.completed":
                has_calls = any(item.get("type") == "function_call" for item in output)
                yield Finished("tool_calls" if has_calls else "stop")
            else:
                reason = _object(response.get("incomplete_details")).get("reason") or ""
                yield Finished("content_filter" if reason == "content_filter" else "length")
        elif kind in ("error", "response.failed"):
            progress.ended = True
            raise LLMError(
                "upstream_error",
                "The model provider reported an error while answering.",
                retryable=True,
                reason="stream_error",
            )


def _object(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _item_key(item: dict[str, Any]) -> str:
    return str(item.get("id") or item.get("call_id"))


def _without_nulls(item: dict[str, Any]) -> dict[str, Any]:
    # The item is kept with the answer and sent back as input later; like the SDK's
    # exclude_none dump it replaced, it carries no null fields.
    return {key: value for key, value in item.items() if value is not None}


def _retry_after(exc: openai.APIStatusError) -> float | None:
    headers = exc.response.headers
    try:
        if "retry-after-ms" in headers:
            return float(headers["retry-after-ms"]) / 1000
        if "retry-after" in headers:
            return float(headers["retry-after"])
    except ValueError:
        return None
    return None


def _error_body(exc: openai.APIError) -> dict[str, Any]:
    body = exc.body
    if isinstance(body, dict):
        return body.get("error", body) if isinstance(body.get("error"), dict) else body
    return {}


def translate_error(exc: openai.OpenAIError, profile: ModelProfile) -> LLMError:
    """One place that decides what each provider failure means to a person."""
    name = profile.display_name
    if isinstance(exc, openai.APITimeoutError):
        return LLMError(
            "upstream_error", "The model provider did not answer in time.", retryable=True,
            reason="timeout",
        )
    if isinstance(exc, openai.APIConnectionError):
        return LLMError(
            "upstream_error", "Could not reach the model provider.", retryable=True,
            reason="connection",
        )
    if not isinstance(exc, openai.APIError):
        return LLMError("upstream_error", "The model provider failed unexpectedly.")
    body = _error_body(exc)
    code = str(body.get("code") or getattr(exc, "code", "") or "")
    kind = str(body.get("type") or "")
    inner = body.get("innererror") if isinstance(body.get("innererror"), dict) else {}
    if not isinstance(exc, openai.APIStatusError):
        # An error event inside a stream that had already started.
        return LLMError(
            "upstream_error", "The model provider reported an error mid-answer.",
            retryable=True, reason="stream_error",
        )
    status = exc.status_code
    if status == 429:
        if code == "insufficient_quota" or kind == "insufficient_quota":
            return LLMError(
                "provider_quota",
                "The organization's OpenAI credit is used up; an admin must add credit.",
                status=status,
            )
        return LLMError(
            "rate_limited",
            "The model provider is rate limiting requests.",
            retryable=True,
            retry_after=_retry_after(exc),
            status=status,
        )
    if status in (401, 403):
        return LLMError(
            "upstream_error",
            f"The model provider refused our credentials for {name!r} (HTTP {status}). "
            "An admin must check the API key or access settings.",
            status=status,
            reason="configuration",
        )
    if status == 404:
        return LLMError(
            "model_unavailable",
            f"The model behind {name!r} is not available from the provider (retired, "
            "renamed or not deployed). An admin must pick another model profile.",
            status=status,
        )
    if status == 400 and code == "context_length_exceeded":
        return LLMError(
            "context_too_long",
            "This conversation is too long for the model even after leaving out older "
            "turns. Start a new conversation or shorten your message.",
            status=status,
        )
    if status == 400 and (
        code == "content_filter" or (inner or {}).get("code") == "ResponsibleAIPolicyViolation"
    ):
        return LLMError(
            "content_filtered",
            "The provider's content filter blocked this prompt. Rephrase it and try again.",
            status=status,
        )
    if status >= 500:
        return LLMError(
            "upstream_error",
            "The model provider had a server error.",
            retryable=True,
            retry_after=_retry_after(exc),
            status=status,
        )
    param = body.get("param")
    return LLMError(
        "upstream_error",
        f"The provider rejected the request for {name!r} (HTTP {status}"
        + (f", parameter {param!r}" if param else "")
        + "). An admin must check the model profile's settings.",
        status=status,
        reason="configuration",
    )
