"""The provider's SDK clients, its one-shot calls, and what its errors mean.

``openai`` is imported by the provider modules of this layer only: this one (the clients,
the calls that are not an answer's stream, error translation) and ``llm.stream`` (an
answer's stream). Request bodies (``llm.bodies``) and stream parsing (``llm.sse``,
``llm.chat_events``, ``llm.responses_events``) need no SDK. Every SDK error becomes an
:class:`LLMError`. The SDK's own retries are off: the generation loop owns retries,
because retrying after text was shown would duplicate (and double-bill) an answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import httpx2
import openai
from django.conf import settings

from chatsite.env import env_secret
from llm.bodies import build_chat_body, build_responses_body
from llm.chat_events import usage_from_chat
from llm.key_envs import key_env_problem
from llm.responses_events import usage_from_responses
from llm.types import ChatRequest, JsonCompletion, LLMError, Usage

if TYPE_CHECKING:
    from llm.models import ModelProfile

# --- Clients ---------------------------------------------------------------------------------

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
    """A cached SDK client for the profile's provider, endpoint and credentials, for the
    calls that are not an answer's stream (status, cancel, delete, JSON, model listing)."""
    client: openai.OpenAI = _client(profile, asynchronous=False)
    return client


def build_async_client(profile: ModelProfile) -> openai.AsyncOpenAI:
    """The same client for the worker's event loop (answers.engine), which streams
    every answer of its process (``llm.stream``); cached per loop, apart from the sync ones."""
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


# --- Calls that are not an answer's stream ---------------------------------------------------


def refuses_summaries(profile: ModelProfile, exc: openai.BadRequestError) -> bool:
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
        if not refuses_summaries(profile, exc):
            raise
    profile.stop_reasoning_summaries()
    return send(build_responses_body(profile, request))


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
                usage = usage_from_responses(response.usage.model_dump())
        else:
            completion = client.chat.completions.create(**build_chat_body(profile, request))
            text = completion.choices[0].message.content or ""
            if completion.usage is not None:
                usage = usage_from_chat(completion.usage.model_dump())
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


# --- What a provider failure means ------------------------------------------------------------


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
