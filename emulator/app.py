"""Starlette app: OpenAI / Azure OpenAI routes, journal middleware and the control API.

Routes (all relative, so the app also works mounted under a prefix):

    POST /v1/chat/completions                                  OpenAI (Bearer)
    POST /openai/deployments/{deployment}/chat/completions     Azure dated api-version
    POST /openai/v1/chat/completions                           Azure v1 GA
    POST /v1/responses, /openai/v1/responses                   Responses API
    POST /openai/responses?api-version=                        Azure dated Responses
    GET  /v1/responses/{id}[?stream=true&starting_after=N]     background responses
    POST /v1/responses/{id}/cancel, DELETE /v1/responses/{id}  (and the Azure paths)
    GET  /v1/models[/{id}], /openai/v1/models[/{id}]
    /_emulator/journal | scenarios | config | reset            control API, no auth
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from emulator import errors
from emulator.accounting import account_prompt
from emulator.background import BackgroundRun
from emulator.config import EmulatorConfig
from emulator.errors import ApiError
from emulator.generation import Plan, build_plan
from emulator.models import DEFAULT_MODEL, ModelProfile, lookup_model, model_listing, model_object
from emulator.scenarios import Scenario
from emulator.state import Emulator
from emulator.streams import ChatRenderer, DropConnection, ResponsesRenderer, run_script
from emulator.tokens import get_encoding
from emulator.validation import AzureVersion, GenerationRequest, validate_chat, validate_responses

CTX_KEY = "emulator.request"
CONTROL_PREFIX = "/_emulator"
RESPONSES_MIN_VERSION = "2025-03-01"
_VERSION_RE = re.compile(r"^(\d{4}-\d{2}-\d{2})(-preview)?$")
_SSE_HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}


# --- request context + journal middleware --------------------------------------------


@dataclass
class RequestContext:
    raw: bytes
    body: Any  # parsed JSON, None when absent or invalid
    body_ok: bool
    started: float
    request_id: str
    tokens: int = 0  # estimate for x-ratelimit-remaining-tokens


def route_path(scope: Scope) -> str:
    path: str = scope["path"]
    root = scope.get("root_path", "")
    if root and path.startswith(root):
        return path[len(root) :] or "/"
    return path


async def _read_body(receive: Receive) -> bytes:
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


def _parse_json(raw: bytes) -> tuple[Any, bool]:
    if not raw.strip():
        return None, True
    try:
        return json.loads(raw), True
    except ValueError:
        return None, False


class EmulatorMiddleware:
    """Journals every non-control request and adds OpenAI-style headers to every response."""

    def __init__(self, app: ASGIApp, emulator: Emulator) -> None:
        self.app = app
        self.emulator = emulator

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        raw = await _read_body(receive)
        body, body_ok = _parse_json(raw)
        ctx = RequestContext(raw, body, body_ok, time.perf_counter(), "req_" + uuid.uuid4().hex)
        scope[CTX_KEY] = ctx
        entry: dict[str, Any] | None = None
        if not route_path(scope).startswith(CONTROL_PREFIX):
            entry = {
                "method": scope["method"],
                "path": scope["path"],
                "query": dict(parse_qsl(scope.get("query_string", b"").decode("latin-1"))),
                "headers": {
                    k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]
                },
                "body": body,
                "status": None,
                "ts": time.time(),
            }
            self.emulator.record(entry)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": raw, "more_body": False}
            return await receive()

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                if entry is not None:
                    entry["status"] = message["status"]
                headers = list(message.get("headers", []))
                headers.extend(self._headers(ctx))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, replay, send_with_headers)
        finally:
            if entry is not None and entry["status"] is None:
                entry["status"] = 500

    def _headers(self, ctx: RequestContext) -> list[tuple[bytes, bytes]]:
        config = self.emulator.config
        remaining_requests, remaining_tokens = self.emulator.rate_window.record(
            ctx.tokens, config.ratelimit_requests, config.ratelimit_tokens
        )
        elapsed_ms = int((time.perf_counter() - ctx.started) * 1000)
        pairs = {
            "x-request-id": ctx.request_id,
            "openai-processing-ms": str(elapsed_ms),
            "openai-version": "2020-10-01",
            "openai-organization": "org-emulator",
            "x-ratelimit-limit-requests": str(config.ratelimit_requests),
            "x-ratelimit-limit-tokens": str(config.ratelimit_tokens),
            "x-ratelimit-remaining-requests": str(remaining_requests),
            "x-ratelimit-remaining-tokens": str(remaining_tokens),
            "x-ratelimit-reset-requests": "2ms",
            "x-ratelimit-reset-tokens": "0s",
        }
        return [(k.encode(), v.encode()) for k, v in pairs.items()]


class _DropFilter(logging.Filter):
    """Hide the server's traceback for deliberate `drop` faults."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
            exc = exc.exceptions[0]
        return not isinstance(exc, DropConnection)


def _install_log_filter() -> None:
    logger = logging.getLogger("uvicorn.error")
    if not any(isinstance(f, _DropFilter) for f in logger.filters):
        logger.addFilter(_DropFilter())


# --- API surfaces -------------------------------------------------------------------


@dataclass(frozen=True)
class Surface:
    azure: bool  # Azure response shapes
    api_key_header: bool  # accept `api-key` besides Bearer
    dated: bool  # requires ?api-version=YYYY-MM-DD[-preview]
    min_version: str | None = None


OPENAI = Surface(azure=False, api_key_header=False, dated=False)
AZURE_V1 = Surface(azure=True, api_key_header=True, dated=False)
AZURE_DATED = Surface(azure=True, api_key_header=True, dated=True)
AZURE_DATED_RESPONSES = Surface(
    azure=True, api_key_header=True, dated=True, min_version=RESPONSES_MIN_VERSION
)


def parse_api_version(raw: str) -> AzureVersion | None:
    if raw in ("preview", "latest"):
        return AzureVersion(raw, "9999-12-31")
    match = _VERSION_RE.match(raw)
    return AzureVersion(raw, match.group(1)) if match else None


def _authenticate(request: Request, surface: Surface) -> None:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return
    api_key = request.headers.get("api-key", "").strip()
    if surface.api_key_header and api_key:
        return
    raise errors.invalid_api_key(token.strip() or api_key or None)


def _api_version(request: Request, surface: Surface) -> AzureVersion | None:
    if not surface.dated:
        return None
    raw = request.query_params.get("api-version")
    if not raw:
        raise errors.azure_resource_not_found()
    version = parse_api_version(raw)
    if version is None:
        raise errors.azure_bad_api_version(raw)
    if surface.min_version and not version.at_least(surface.min_version):
        raise errors.azure_resource_not_found()
    return version


def _json_object(ctx: RequestContext) -> dict[str, Any]:
    if not ctx.body_ok or not isinstance(ctx.body, dict):
        raise errors.invalid_json()
    return ctx.body


def _peek_user_text(items: Any) -> str:
    """Last user text for scenario matching, read leniently before validation."""
    if isinstance(items, str):
        return items
    if not isinstance(items, list):
        return ""
    for item in reversed(items):
        if isinstance(item, dict) and item.get("role") == "user":
            content = item.get("content")
            if isinstance(content, str):
                return content
            if isinstance(content, list):
                return "\n".join(
                    str(p.get("text") or "") for p in content if isinstance(p, dict) and "text" in p
                )
    return ""


def _model_name(
    emulator: Emulator, request: Request, surface: Surface, body: dict[str, Any]
) -> str:
    """The catalogue model to serve; on Azure the name is a deployment (path or body)."""
    deployment = request.path_params.get("deployment")
    if deployment is None:
        name = body.get("model")
        if name is None:
            raise errors.missing_model()
        if not isinstance(name, str):
            raise errors.invalid_type("model", "a string", name)
        if not surface.azure:
            return name
        deployment = name
    config = emulator.config
    if deployment in config.deployments:
        return config.deployments[deployment]
    if config.strict_deployments:
        raise errors.azure_deployment_not_found()
    if lookup_model(deployment) is not None or deployment in config.retired_models:
        return deployment
    return DEFAULT_MODEL


def _profile(emulator: Emulator, name: str) -> ModelProfile:
    profile = lookup_model(name, emulator.config.retired_models)
    if profile is None:
        raise errors.model_not_found(name)
    return profile


def _fault_error(scenario: Scenario, model: str | None) -> ApiError:
    fault = scenario.fault
    profile = lookup_model(model or DEFAULT_MODEL)
    builders: dict[str, Callable[[], ApiError]] = {
        "rate_limit": lambda: errors.rate_limited(
            model or DEFAULT_MODEL, scenario.retry_after, scenario.retry_after_ms, None
        ),
        "insufficient_quota": errors.insufficient_quota,
        "server_error": errors.server_error,
        "overloaded": errors.overloaded,
        "model_not_found": lambda: errors.model_not_found(model or DEFAULT_MODEL),
        "unauthorized": lambda: errors.invalid_api_key("sk-emulator-revoked-key-0000"),
        "forbidden": errors.forbidden,
        "context_length_exceeded": lambda: errors.context_length_exceeded(
            profile.context_window if profile else 200_000,
            (profile.context_window if profile else 200_000) + 4308,
        ),
        "prompt_filter": errors.azure_prompt_filter,
    }
    error = builders[fault]()  # type: ignore[index]
    if scenario.should_retry is not None:
        error.headers["x-should-retry"] = "true" if scenario.should_retry else "false"
    return error


def _error_response(error: ApiError) -> JSONResponse:
    return JSONResponse(error.body, status_code=error.status, headers=error.headers)


# --- generation endpoints -------------------------------------------------------------


Validator = Callable[[dict[str, Any], ModelProfile, AzureVersion | None], GenerationRequest]


def _prepare(
    emulator: Emulator,
    request: Request,
    surface: Surface,
    items_key: str,
    validate: Validator,
    responses_api: bool,
) -> tuple[GenerationRequest, Plan, dict[str, Any]]:
    """Everything between the raw request and a Plan; raises ApiError for any 4xx/5xx."""
    ctx: RequestContext = request.scope[CTX_KEY]
    _authenticate(request, surface)
    body = _json_object(ctx)
    version = _api_version(request, surface)
    scenario = emulator.scenarios.peek(_peek_user_text(body.get(items_key)))
    if scenario is not None and scenario.http_fault:
        emulator.scenarios.consume(scenario)
        model = request.path_params.get("deployment") or body.get("model")
        raise _fault_error(scenario, model if isinstance(model, str) else None)
    profile = _profile(emulator, _model_name(emulator, request, surface, body))
    generation = validate(body, profile, version)
    config = emulator.config
    account = account_prompt(
        profile.id,
        generation.tools_json,
        generation.conversation.prompt_items,
        config.message_overhead_tokens,
        config.priming_tokens,
        generation.prompt_cache_key,
    )
    ctx.tokens = account.prompt_tokens + (generation.cap or 0)
    if account.prompt_tokens + (generation.cap or 0) > profile.context_window:
        if responses_api:
            raise errors.responses_context_length_exceeded()
        raise errors.context_length_exceeded(
            profile.context_window, account.prompt_tokens + (generation.cap or 0)
        )
    if scenario is not None:
        emulator.scenarios.consume(scenario)
    cached, written = emulator.prefix_cache.read_and_write(
        account, config.cache_min_tokens, config.cache_granularity
    )
    plan = build_plan(generation, scenario, config, account.prompt_tokens, cached, written)
    return generation, plan, body


async def _deliver_whole(plan: Plan, build: Callable[[], dict[str, Any]]) -> Response:
    """Non-streaming delivery: wait like the model would, then apply faults."""
    if plan.fault == "error_event":
        return _error_response(errors.server_error())
    if plan.fault == "stall":
        await asyncio.sleep(plan.stall_s)
    delay = plan.think_s
    if plan.tokens_per_second > 0:
        delay += plan.visible_tokens / plan.tokens_per_second
    if delay > 0:
        await asyncio.sleep(delay)
    payload = json.dumps(build(), ensure_ascii=False).encode()
    if plan.fault in ("drop", "truncate"):
        return _TruncatedResponse(payload)
    return Response(payload, media_type="application/json")


class _TruncatedResponse(Response):
    """Announces the full content-length, sends half, then aborts the connection."""

    def __init__(self, payload: bytes) -> None:
        super().__init__(payload, media_type="application/json")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send(
            {"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers}
        )
        await send(
            {
                "type": "http.response.body",
                "body": self.body[: len(self.body) // 2],
                "more_body": True,
            }
        )
        raise DropConnection()


def _chat_endpoint(
    emulator: Emulator, surface: Surface
) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        try:
            generation, plan, _ = _prepare(
                emulator, request, surface, "messages", validate_chat, responses_api=False
            )
        except ApiError as error:
            return _error_response(error)
        renderer = ChatRenderer(plan, generation, azure=surface.azure or emulator.config.azure)
        if generation.stream:
            return StreamingResponse(
                run_script(renderer.script()), media_type="text/event-stream", headers=_SSE_HEADERS
            )
        return await _deliver_whole(plan, renderer.completion)

    return endpoint


def _responses_endpoint(
    emulator: Emulator, surface: Surface
) -> Callable[[Request], Awaitable[Response]]:
    def validate(
        body: dict[str, Any], profile: ModelProfile, _version: AzureVersion | None
    ) -> GenerationRequest:
        generation = validate_responses(body, profile)
        if generation.summary is not None and not emulator.config.verified_org:
            raise errors.summary_needs_verification()
        return generation

    async def endpoint(request: Request) -> Response:
        try:
            generation, plan, body = _prepare(
                emulator, request, surface, "input", validate, responses_api=True
            )
        except ApiError as error:
            return _error_response(error)
        renderer = ResponsesRenderer(plan, generation, body)
        if body.get("background") is True:
            # Runs on whatever happens to this connection; GET /responses/{id} resumes it.
            run = emulator.background.start(renderer)
            if generation.stream:
                return StreamingResponse(
                    run.follow(-1, creating=True), media_type="text/event-stream",
                    headers=_SSE_HEADERS,
                )
            return JSONResponse(run.current())
        if generation.stream:
            return StreamingResponse(
                run_script(renderer.script()), media_type="text/event-stream", headers=_SSE_HEADERS
            )
        return await _deliver_whole(plan, renderer.response)

    return endpoint


def _background_run(emulator: Emulator, request: Request, surface: Surface) -> BackgroundRun:
    """The stored background response a request names, after authentication."""
    _authenticate(request, surface)
    _api_version(request, surface)
    response_id = request.path_params["response_id"]
    run = emulator.background.get(response_id)
    if run is None:
        raise errors.response_not_found(response_id)
    return run


def _retrieve_response_endpoint(
    emulator: Emulator, surface: Surface
) -> Callable[[Request], Awaitable[Response]]:
    """GET /v1/responses/{id}: the response object, or with ``stream=true`` its events
    after ``starting_after`` (a sequence number) and then the live ones."""

    async def endpoint(request: Request) -> Response:
        try:
            run = _background_run(emulator, request, surface)
            raw_after = request.query_params.get("starting_after", "-1")
            try:
                starting_after = int(raw_after)
            except ValueError:
                raise errors.invalid_type("starting_after", "an integer", raw_after) from None
        except ApiError as error:
            return _error_response(error)
        if request.query_params.get("stream") == "true":
            return StreamingResponse(
                run.follow(starting_after), media_type="text/event-stream", headers=_SSE_HEADERS
            )
        return JSONResponse(run.current())

    return endpoint


def _delete_response_endpoint(
    emulator: Emulator, surface: Surface
) -> Callable[[Request], Awaitable[Response]]:
    """DELETE /v1/responses/{id}: forget a stored response (stopping it if it still runs)."""

    async def endpoint(request: Request) -> Response:
        try:
            run = _background_run(emulator, request, surface)
        except ApiError as error:
            return _error_response(error)
        emulator.background.delete(run.renderer.id)
        return JSONResponse({"id": run.renderer.id, "object": "response.deleted", "deleted": True})

    return endpoint


def _cancel_response_endpoint(
    emulator: Emulator, surface: Surface
) -> Callable[[Request], Awaitable[Response]]:
    """POST /v1/responses/{id}/cancel: stop a background response that is still running;
    the response object comes back (``cancelled``, or unchanged when it had finished)."""

    async def endpoint(request: Request) -> Response:
        try:
            run = _background_run(emulator, request, surface)
        except ApiError as error:
            return _error_response(error)
        run.cancel()
        return JSONResponse(run.current())

    return endpoint


def _models_endpoint(
    emulator: Emulator, surface: Surface
) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        try:
            _authenticate(request, surface)
            retired = emulator.config.retired_models
            model_id = request.path_params.get("model_id")
            if model_id is None:
                return JSONResponse({"object": "list", "data": model_listing(retired)})
            profile = lookup_model(model_id, retired)
            if profile is None:
                raise errors.model_not_found(model_id)
            return JSONResponse(model_object(model_id, profile))
        except ApiError as error:
            return _error_response(error)

    return endpoint


# --- control API ----------------------------------------------------------------------


def _control_routes(emulator: Emulator) -> list[Route]:
    async def journal(request: Request) -> Response:
        if request.method == "DELETE":
            emulator.reset()
            return JSONResponse({"ok": True})
        return JSONResponse(emulator.journal_snapshot())

    async def scenarios(request: Request) -> Response:
        if request.method == "GET":
            return JSONResponse(emulator.scenarios.pending())
        if request.method == "DELETE":
            emulator.scenarios.clear()
            return JSONResponse({"ok": True})
        ctx: RequestContext = request.scope[CTX_KEY]
        items = ctx.body if isinstance(ctx.body, list) else [ctx.body]
        try:
            parsed = [Scenario.from_dict(item) for item in items]
        except (ValueError, TypeError) as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        for scenario in parsed:
            emulator.push(scenario)
        return JSONResponse({"ok": True, "pending": len(emulator.scenarios)})

    async def config(request: Request) -> Response:
        if request.method == "POST":
            ctx: RequestContext = request.scope[CTX_KEY]
            if not isinstance(ctx.body, dict):
                return JSONResponse({"error": "expected a JSON object"}, status_code=400)
            try:
                emulator.update_config(ctx.body)
            except (ValueError, TypeError) as exc:
                return JSONResponse({"error": str(exc)}, status_code=400)
        return JSONResponse(emulator.config.to_dict())

    async def reset(request: Request) -> Response:
        emulator.reset()
        return JSONResponse({"ok": True})

    return [
        Route(f"{CONTROL_PREFIX}/journal", journal, methods=["GET", "DELETE"]),
        Route(f"{CONTROL_PREFIX}/scenarios", scenarios, methods=["GET", "POST", "DELETE"]),
        Route(f"{CONTROL_PREFIX}/config", config, methods=["GET", "POST"]),
        Route(f"{CONTROL_PREFIX}/reset", reset, methods=["POST"]),
    ]


# --- app factory -----------------------------------------------------------------------


async def _http_error(request: Request, exc: Exception) -> Response:
    status = exc.status_code if isinstance(exc, HTTPException) else 500
    path = route_path(request.scope)
    if path.startswith("/openai/"):
        return _error_response(errors.azure_resource_not_found())
    if status == 405:
        return _error_response(errors.method_not_allowed(request.method, path))
    return _error_response(errors.invalid_url(request.method, path))


def _background_routes(emulator: Emulator, prefix: str, surface: Surface) -> list[Route]:
    """Retrieve (and resume), delete and cancel a background response under ``prefix``."""
    return [
        Route(
            f"{prefix}/{{response_id}}",
            _retrieve_response_endpoint(emulator, surface), methods=["GET"],
        ),
        Route(
            f"{prefix}/{{response_id}}",
            _delete_response_endpoint(emulator, surface), methods=["DELETE"],
        ),
        Route(
            f"{prefix}/{{response_id}}/cancel",
            _cancel_response_endpoint(emulator, surface), methods=["POST"],
        ),
    ]


def create_app(config: EmulatorConfig | None = None) -> Starlette:
    emulator = Emulator(config)
    _install_log_filter()
    # Load the vocabulary now: loading it inside the first request would stall
    # every stream on the event loop for ~0.4 s.
    get_encoding()
    routes = [
        Route("/v1/chat/completions", _chat_endpoint(emulator, OPENAI), methods=["POST"]),
        Route(
            "/openai/deployments/{deployment}/chat/completions",
            _chat_endpoint(emulator, AZURE_DATED),
            methods=["POST"],
        ),
        Route("/openai/v1/chat/completions", _chat_endpoint(emulator, AZURE_V1), methods=["POST"]),
        Route("/v1/responses", _responses_endpoint(emulator, OPENAI), methods=["POST"]),
        Route("/openai/v1/responses", _responses_endpoint(emulator, AZURE_V1), methods=["POST"]),
        *_background_routes(emulator, "/v1/responses", OPENAI),
        *_background_routes(emulator, "/openai/v1/responses", AZURE_V1),
        *_background_routes(emulator, "/openai/responses", AZURE_DATED_RESPONSES),
        Route(
            "/openai/responses",
            _responses_endpoint(emulator, AZURE_DATED_RESPONSES),
            methods=["POST"],
        ),
        Route("/v1/models", _models_endpoint(emulator, OPENAI), methods=["GET"]),
        Route("/v1/models/{model_id}", _models_endpoint(emulator, OPENAI), methods=["GET"]),
        Route("/openai/v1/models", _models_endpoint(emulator, AZURE_V1), methods=["GET"]),
        Route(
            "/openai/v1/models/{model_id}", _models_endpoint(emulator, AZURE_V1), methods=["GET"]
        ),
        *_control_routes(emulator),
    ]
    app = Starlette(
        routes=routes,
        middleware=[Middleware(EmulatorMiddleware, emulator=emulator)],
        exception_handlers={404: _http_error, 405: _http_error},
    )
    app.state.emulator = emulator
    return app
