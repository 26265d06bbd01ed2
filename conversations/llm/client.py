"""The only module that imports the ``openai`` SDK.

It turns a :class:`ModelProfile` plus a :class:`ChatRequest` into an HTTP call, yields
provider-neutral stream events, and translates every SDK error into :class:`LLMError`.
The SDK's own retries are off: the generation loop owns retries, because retrying
after text was shown would duplicate (and double-bill) an answer.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

import httpx2
import openai
from django.conf import settings

from chatsite.env import env_secret
from conversations.key_envs import key_env_problem
from conversations.llm.types import (
    ChatRequest,
    Finished,
    JsonCompletion,
    LLMError,
    ReasoningItem,
    ReasoningSummaryDelta,
    RefusalDelta,
    StreamEvent,
    TextDelta,
    ToolCallDelta,
    Usage,
    UsageReport,
)

if TYPE_CHECKING:
    from conversations.models import ModelProfile

DEMO_API_KEY = "offline-demo"
AZURE_SCOPE = "https://cognitiveservices.azure.com/.default"

_clients: dict[tuple[Any, ...], openai.OpenAI] = {}
_clients_lock = threading.Lock()


def is_demo_mode() -> bool:
    """True when answers come from the built-in emulator because no provider is configured:
    neither an OpenAI key nor an Azure endpoint with a deployment."""
    azure = settings.AZURE_OPENAI_ENDPOINT and settings.AZURE_OPENAI_DEPLOYMENT
    return not settings.OPENAI_API_KEY and not azure


def _http_client() -> httpx2.Client:
    # One pooled client per provider config and process: many answers stream at once.
    return openai.DefaultHttpxClient(
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
        version = profile.api_version
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

    with _clients_lock:
        client = _clients.get(cache_key)
        if client is not None:
            return client
        common: dict[str, Any] = {"max_retries": 0, "http_client": _http_client()}
        if provider == "azure" and version:
            auth: dict[str, Any] = (
                {"api_key": key} if key else {"azure_ad_token_provider": _entra_token_provider()}
            )
            client = openai.AzureOpenAI(
                azure_endpoint=endpoint, api_version=version, **auth, **common
            )
        elif provider == "azure":
            # Azure's v1 GA path: the plain client, deployment name as model, and either a
            # key or a callable that returns a fresh Entra ID token per request.
            client = openai.OpenAI(
                base_url=f"{endpoint}/openai/v1/",
                api_key=key or _entra_token_provider(),
                **common,
            )
        elif provider == "openai" and not is_demo_mode():
            client = openai.OpenAI(
                api_key=key,
                base_url=endpoint or None,
                organization=settings.OPENAI_ORGANIZATION or None,
                project=settings.OPENAI_PROJECT or None,
                **common,
            )
        else:
            client = openai.OpenAI(api_key=key, base_url=endpoint, **common)
        _clients[cache_key] = client
        return client


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
    instructions, items = _responses_input(request.messages)
    body: dict[str, Any] = {"model": profile.model, "input": items, "store": False}
    if instructions:
        body["instructions"] = instructions
    if request.stream:
        body["stream"] = True
    if profile.accepts("reasoning_effort"):
        body["reasoning"] = {"effort": request.reasoning_effort}
        if profile.reasoning_summaries:
            body["reasoning"]["summary"] = "auto"
        # Nothing is stored at the provider; the reasoning comes back encrypted so later
        # turns and tool rounds can hand it back (the model then need not reason again).
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


class ChatStream:
    """An open upstream stream. ``close()`` may be called from another thread (Stop)."""

    def __init__(self, profile: ModelProfile, raw: Any, api_style: str) -> None:
        self.profile = profile
        self._raw = raw
        self._api_style = api_style
        self._closed = threading.Event()
        # When the provider last sent anything, keep-alive comments included: the
        # monitor counts it as progress of this answer.
        self.last_read_at = 0.0

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

    def __iter__(self) -> Iterator[StreamEvent]:
        try:
            if self._api_style == "responses":
                yield from _responses_events(self._timed(self._raw))
            else:
                yield from _chat_events(_sse_payloads(self._timed(self._raw.iter_lines())))
        except openai.OpenAIError as exc:
            raise translate_error(exc, self.profile) from exc
        except (httpx2.HTTPError, httpx2.StreamError, OSError) as exc:
            if self.closed:
                return  # Stop or a stall closed the response from the monitor thread
            raise LLMError(
                "upstream_error",
                "The connection to the model provider was lost.",
                retryable=True,
                reason="connection",
            ) from exc

    def _timed(self, items: Iterable[Any]) -> Iterator[Any]:
        for item in items:
            self.last_read_at = time.monotonic()
            yield item


def _create_response(client: openai.OpenAI, profile: ModelProfile, request: ChatRequest) -> Any:
    """``responses.create``. When the provider refuses reasoning summaries (an OpenAI org
    that is not verified answers 400, param ``reasoning.summary``), the profile stops
    asking for them and the request is sent once more without: a refused request showed
    nothing and costs nothing, and the answer matters more than its summary."""
    try:
        return client.responses.create(**build_responses_body(profile, request))
    except openai.BadRequestError as exc:
        if not profile.reasoning_summaries or _error_body(exc).get("param") != "reasoning.summary":
            raise
    from conversations.profiles import stop_reasoning_summaries

    stop_reasoning_summaries(profile)
    return client.responses.create(**build_responses_body(profile, request))


def open_stream(profile: ModelProfile, request: ChatRequest) -> ChatStream:
    client = build_client(profile)
    try:
        if profile.api_style == "responses":
            raw: Any = _create_response(client, profile, request)
        else:
            # The SDK builds, authenticates and sends the request and raises its typed
            # errors; the SSE lines are parsed here with plain json, because the SDK's
            # per-chunk model parsing costs ~150 µs of CPU per token and a worker streams
            # tens of thousands of tokens per second.
            raw = client.chat.completions.with_streaming_response.create(
                **build_chat_body(profile, request)
            ).__enter__()
    except openai.OpenAIError as exc:
        raise translate_error(exc, profile) from exc
    return ChatStream(profile, raw, profile.api_style)


def complete_json(profile: ModelProfile, request: ChatRequest) -> JsonCompletion:
    """A non-streaming Structured Outputs call: the parsed JSON object and the usage the
    provider reported. An unusable reply raises LLMError carrying that usage in
    ``error.usage`` (the provider billed it all the same)."""
    client = build_client(profile)
    request.stream = False
    usage: Usage | None = None
    try:
        if profile.api_style == "responses":
            response = _create_response(client, profile, request)
            text = response.output_text
            if response.usage is not None:
                usage = Usage(
                    prompt_tokens=response.usage.input_tokens or 0,
                    cached_tokens=getattr(response.usage.input_tokens_details, "cached_tokens", 0) or 0,
                    completion_tokens=response.usage.output_tokens or 0,
                    reasoning_tokens=getattr(response.usage.output_tokens_details, "reasoning_tokens", 0) or 0,
                )
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


def _sse_payloads(lines: Iterator[str]) -> Iterator[dict[str, Any]]:
    """``data:`` payloads of a Chat Completions SSE stream, up to ``[DONE]``.

    Comment lines (``: keep-alive``) and blank separators are skipped; an ``error``
    object inside the stream becomes an :class:`LLMError` (retryable only before text).
    """
    for line in lines:
        if not line.startswith("data:"):
            continue
        data = line[5:].strip()
        if data == "[DONE]":
            return
        try:
            payload = json.loads(data)
        except ValueError as exc:
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
    )


def _chat_events(payloads: Iterator[dict[str, Any]]) -> Iterator[StreamEvent]:
    for chunk in payloads:
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


def _responses_events(raw: Any) -> Iterator[StreamEvent]:
    call_index: dict[str, int] = {}
    for event in raw:
        kind = event.type
        if kind == "response.output_text.delta":
            yield TextDelta(event.delta)
        elif kind == "response.refusal.delta":
            yield RefusalDelta(event.delta)
        elif kind == "response.reasoning_summary_text.delta":
            yield ReasoningSummaryDelta(event.delta)
        elif kind == "response.output_item.done" and event.item.type == "reasoning":
            yield ReasoningItem(event.item.model_dump(mode="json", exclude_none=True))
        elif kind == "response.output_item.added" and event.item.type == "function_call":
            index = call_index.setdefault(event.item.id or event.item.call_id, len(call_index))
            yield ToolCallDelta(index, event.item.call_id, event.item.name, "")
        elif kind == "response.function_call_arguments.delta":
            yield ToolCallDelta(call_index.get(event.item_id, 0), None, None, event.delta)
        elif kind in ("response.completed", "response.incomplete"):
            response = event.response
            usage = response.usage
            if usage is not None:
                yield UsageReport(
                    Usage(
                        prompt_tokens=usage.input_tokens or 0,
                        cached_tokens=getattr(usage.input_tokens_details, "cached_tokens", 0)
                        or 0,
                        completion_tokens=usage.output_tokens or 0,
                        reasoning_tokens=getattr(
                            usage.output_tokens_details, "reasoning_tokens", 0
                        )
                        or 0,
                    ),
                    service_tier=response.service_tier or "",
                )
            if kind == "response.completed":
                has_calls = any(item.type == "function_call" for item in response.output or [])
                yield Finished("tool_calls" if has_calls else "stop")
            else:
                reason = getattr(response.incomplete_details, "reason", "") or ""
                yield Finished("content_filter" if reason == "content_filter" else "length")
        elif kind in ("error", "response.failed"):
            # Responses yields (does not raise) its error event; make it an error here.
            raise LLMError(
                "upstream_error",
                "The model provider reported an error while answering.",
                retryable=True,
                reason="stream_error",
            )


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
