"""The provider layer against the emulator over real HTTP: URLs, auth, bodies, errors."""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import Any

import pytest

from llm.tools import tool_schemas
from llm.types import (
    ChatRequest,
    Finished,
    LLMError,
    ReasoningSummaryDelta,
    RefusalDelta,
    StreamEvent,
    TextDelta,
    ToolCallDelta,
    UsageReport,
)
from tests.llm.streams import read_stream

pytestmark = pytest.mark.django_db

AZURE_VERSION = "2024-12-01-preview"
SECRET = "sk-live-TOPSECRET-0123456789abcdef"
MESSAGES = [
    {"role": "developer", "content": "Formatting re-enabled"},
    {"role": "user", "content": "Explain Euler's identity"},
]


def request(**fields: Any) -> ChatRequest:
    values: dict[str, Any] = {
        "messages": MESSAGES, "reasoning_effort": "low", "max_completion_tokens": 4000,
    }
    values.update(fields)
    return ChatRequest(**values)


def stream(profile: Any, chat: ChatRequest | None = None) -> list[StreamEvent]:
    return read_stream(profile, chat or request())


def text_of(events: list[StreamEvent]) -> str:
    return "".join(e.text for e in events if isinstance(e, TextDelta))


def finish_of(events: list[StreamEvent]) -> str:
    [finished] = [e for e in events if isinstance(e, Finished)]
    return finished.reason


def usage_of(events: list[StreamEvent]) -> Any:
    [report] = [e for e in events if isinstance(e, UsageReport)]
    return report.usage


def only_call(emulator: Any) -> dict[str, Any]:
    [call] = emulator.journal_snapshot()
    return call


@pytest.fixture
def openai_key(settings: Any, emulator: Any) -> str:
    settings.OPENAI_API_KEY = "sk-test"
    settings.OPENAI_BASE_URL = settings.EMULATOR_URL + "/v1"
    return "sk-test"


# --- One profile per provider style ------------------------------------------------------------


def test_an_openai_profile_posts_to_the_base_url_with_a_bearer_key(
    make_profile: Callable[..., Any], openai_key: str, emulator: Any
) -> None:
    profile = make_profile()

    events = stream(profile, request(tools=tool_schemas()))

    call = only_call(emulator)
    assert call["path"] == "/v1/chat/completions" and call["query"] == {}
    assert call["headers"]["authorization"] == "Bearer sk-test"
    assert call["body"] == {
        "model": "o3-mini",
        "messages": MESSAGES,
        "stream": True,
        "stream_options": {"include_usage": True},
        "reasoning_effort": "low",
        "max_completion_tokens": 4000,
        "tools": tool_schemas(),
    }
    assert call["status"] == 200
    assert text_of(events) and finish_of(events) == "stop"
    assert usage_of(events).completion_tokens > usage_of(events).reasoning_tokens > 0


def test_an_azure_profile_with_an_api_version_uses_the_deployment_url_and_api_key_header(
    make_profile: Callable[..., Any], settings: Any, emulator: Any
) -> None:
    settings.AZURE_OPENAI_API_KEY = "azure-key-123"
    settings.AZURE_OPENAI_ENDPOINT = settings.EMULATOR_URL  # the server's key goes only here
    profile = make_profile(provider="azure", model="team-o3", endpoint=settings.EMULATOR_URL,
                           api_version=AZURE_VERSION)

    events = stream(profile)

    call = only_call(emulator)
    assert call["path"] == "/openai/deployments/team-o3/chat/completions"
    assert call["query"] == {"api-version": AZURE_VERSION}
    assert call["headers"]["api-key"] == "azure-key-123"
    assert "authorization" not in call["headers"]
    assert call["body"]["model"] == "team-o3"
    assert call["body"]["reasoning_effort"] == "low"
    assert call["body"]["max_completion_tokens"] == 4000
    assert call["status"] == 200
    assert text_of(events) and finish_of(events) == "stop"
    usage_of(events)  # the prompt-annotation chunk (empty choices) is not taken for usage


def test_an_azure_profile_without_an_api_version_uses_the_v1_path(
    make_profile: Callable[..., Any], settings: Any, emulator: Any
) -> None:
    settings.AZURE_OPENAI_API_KEY = "azure-key-123"
    settings.AZURE_OPENAI_ENDPOINT = settings.EMULATOR_URL  # the server's key goes only here
    profile = make_profile(provider="azure", model="team-o3", endpoint=settings.EMULATOR_URL,
                           api_version="")

    events = stream(profile)

    call = only_call(emulator)
    assert call["path"] == "/openai/v1/chat/completions"
    assert call["query"] == {}
    assert call["headers"]["authorization"] == "Bearer azure-key-123"
    assert call["body"]["model"] == "team-o3"
    assert call["status"] == 200
    assert text_of(events) and finish_of(events) == "stop"


def test_an_azure_stream_with_content_filter_annotations_is_read_without_losing_text(
    make_profile: Callable[..., Any], settings: Any, emulator: Any
) -> None:
    settings.AZURE_OPENAI_API_KEY = "azure-key-123"
    settings.AZURE_OPENAI_ENDPOINT = settings.EMULATOR_URL  # the server's key goes only here
    profile = make_profile(provider="azure", model="team-o3", endpoint=settings.EMULATOR_URL,
                           api_version=AZURE_VERSION)
    reply = "Annotated answers arrive with delta-less filter chunks in between. " * 4
    emulator.push({"reply": reply, "annotations": True})

    events = stream(profile)

    assert text_of(events) == reply
    assert finish_of(events) == "stop"


def test_an_azure_content_filter_finish_is_reported_as_such(
    make_profile: Callable[..., Any], settings: Any, emulator: Any
) -> None:
    settings.AZURE_OPENAI_API_KEY = "azure-key-123"
    settings.AZURE_OPENAI_ENDPOINT = settings.EMULATOR_URL  # the server's key goes only here
    profile = make_profile(provider="azure", model="team-o3", endpoint=settings.EMULATOR_URL,
                           api_version=AZURE_VERSION)
    emulator.push({"fault": "content_filter", "after_tokens": 4})

    events = stream(profile)

    assert text_of(events)
    assert finish_of(events) == "content_filter"


def test_an_openai_compatible_profile_reads_its_key_from_the_named_variable(
    make_profile: Callable[..., Any], settings: Any, emulator: Any, monkeypatch: Any
) -> None:
    monkeypatch.setenv("LLM_KEY_TEST_GATEWAY", "gw-key-456")
    profile = make_profile(provider="compatible", endpoint=settings.EMULATOR_URL + "/v1",
                           api_key_env="LLM_KEY_TEST_GATEWAY")

    events = stream(profile)

    call = only_call(emulator)
    assert call["path"] == "/v1/chat/completions"
    assert call["headers"]["authorization"] == "Bearer gw-key-456"
    assert call["body"]["model"] == "o3-mini"
    assert call["body"]["stream_options"] == {"include_usage": True}
    assert text_of(events) and finish_of(events) == "stop"


def test_a_responses_profile_streams_a_reasoning_summary_text_and_usage(
    make_profile: Callable[..., Any], openai_key: str, emulator: Any
) -> None:
    profile = make_profile(api_style="responses")
    emulator.push({"reasoning_summary": "Recall Euler's formula, then set x to pi.",
                   "reasoning_tokens": 200, "reply_tokens": 40})

    events = stream(profile, request(reasoning_effort="medium"))

    call = only_call(emulator)
    assert call["path"] == "/v1/responses"
    assert call["headers"]["authorization"] == "Bearer sk-test"
    body = call["body"]
    assert body["model"] == "o3-mini"
    assert body["instructions"] == "Formatting re-enabled"
    assert body["input"] == [{"role": "user", "content": "Explain Euler's identity"}]
    assert body["reasoning"] == {"effort": "medium", "summary": "auto"}
    assert body["max_output_tokens"] == 4000
    assert body["store"] is False and body["stream"] is True
    assert "max_completion_tokens" not in body and "messages" not in body
    summary = "".join(e.text for e in events if isinstance(e, ReasoningSummaryDelta))
    assert summary == "Recall Euler's formula, then set x to pi."
    kinds = [type(e) for e in events]
    assert kinds.index(ReasoningSummaryDelta) < kinds.index(TextDelta)
    assert text_of(events)
    usage = usage_of(events)
    assert usage.reasoning_tokens == 200
    assert usage.completion_tokens == 240
    assert finish_of(events) == "stop"


def test_a_model_without_reasoning_gets_max_tokens_and_no_reasoning_effort(
    make_profile: Callable[..., Any], openai_key: str, emulator: Any
) -> None:
    profile = make_profile(model="gpt-4.1-mini", accepted_params=["max_tokens"],
                           reasoning_efforts=[], default_effort="")

    events = stream(profile, request(reasoning_effort="", max_completion_tokens=1000))

    body = only_call(emulator)["body"]
    assert body["max_tokens"] == 1000
    assert "reasoning_effort" not in body and "max_completion_tokens" not in body
    assert "tools" not in body
    assert only_call(emulator)["status"] == 200
    assert text_of(events) and finish_of(events) == "stop"
    assert usage_of(events).reasoning_tokens == 0


def test_a_profile_that_does_not_accept_tools_sends_none(
    make_profile: Callable[..., Any], openai_key: str, emulator: Any
) -> None:
    profile = make_profile(accepted_params=["reasoning_effort", "max_completion_tokens"])

    stream(profile, request(tools=tool_schemas()))

    assert "tools" not in only_call(emulator)["body"]


def test_a_tool_call_streams_as_fragments_of_one_call(
    make_profile: Callable[..., Any], openai_key: str, emulator: Any
) -> None:
    profile = make_profile()
    emulator.push({"tool_call": {"name": "calculate", "arguments": {"expression": "2**10"}}})

    events = stream(profile, request(tools=tool_schemas()))

    calls = [e for e in events if isinstance(e, ToolCallDelta)]
    assert {c.index for c in calls} == {0}
    assert [c.name for c in calls if c.name] == ["calculate"]
    assert calls[0].id
    assert "".join(c.arguments for c in calls) == '{"expression":"2**10"}'
    assert finish_of(events) == "tool_calls"


def test_a_refusal_streams_as_refusal_deltas(
    make_profile: Callable[..., Any], openai_key: str, emulator: Any
) -> None:
    emulator.push({"fault": "refusal", "refusal": "I can't help with that."})

    events = stream(make_profile())

    assert "".join(e.text for e in events if isinstance(e, RefusalDelta)) == (
        "I can't help with that."
    )
    assert text_of(events) == ""


# --- Errors ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("scenario", "code", "retryable"),
    [
        pytest.param({"fault": "rate_limit", "retry_after": 7}, "rate_limited", True,
                     id="429 rate limit"),
        pytest.param({"fault": "insufficient_quota"}, "provider_quota", False,
                     id="429 insufficient quota"),
        pytest.param({"fault": "server_error"}, "upstream_error", True, id="500"),
        pytest.param({"fault": "overloaded"}, "upstream_error", True, id="503"),
        pytest.param({"fault": "model_not_found"}, "model_unavailable", False, id="404"),
        pytest.param({"fault": "unauthorized"}, "upstream_error", False, id="401"),
        pytest.param({"fault": "forbidden"}, "upstream_error", False, id="403"),
        pytest.param({"fault": "context_length_exceeded"}, "context_too_long", False,
                     id="400 context length"),
        pytest.param({"fault": "prompt_filter"}, "content_filtered", False,
                     id="400 prompt filter"),
    ],
)
def test_each_provider_failure_becomes_one_error_code_after_a_single_request(
    make_profile: Callable[..., Any], openai_key: str, emulator: Any,
    scenario: dict[str, Any], code: str, retryable: bool,
) -> None:
    emulator.push(scenario)

    with pytest.raises(LLMError) as caught:
        stream(make_profile())

    assert caught.value.code == code
    assert caught.value.retryable is retryable
    assert len(emulator.journal_snapshot()) == 1  # the SDK's own retries are off


def test_a_rate_limit_carries_the_providers_retry_after(
    make_profile: Callable[..., Any], openai_key: str, emulator: Any
) -> None:
    emulator.push({"fault": "rate_limit", "retry_after": 7, "retry_after_ms": 6500})

    with pytest.raises(LLMError) as caught:
        stream(make_profile())

    assert caught.value.retry_after == 6.5


@pytest.mark.parametrize("fault", ["drop", "error_event"])
def test_a_stream_that_breaks_after_text_raises_a_retryable_upstream_error(
    make_profile: Callable[..., Any], openai_key: str, emulator: Any, fault: str
) -> None:
    emulator.push({"fault": fault, "after_tokens": 3})
    seen: list[StreamEvent] = []

    with pytest.raises(LLMError) as caught:
        read_stream(make_profile(), request(), seen)

    assert caught.value.code == "upstream_error"
    assert text_of(seen)  # what came before the break was yielded


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


CREDENTIAL_FAULTS = [
    {"fault": "unauthorized"}, {"fault": "forbidden"}, {"fault": "rate_limit", "retry_after": 1},
    {"fault": "insufficient_quota"}, {"fault": "server_error"}, {"fault": "model_not_found"},
    {"fault": "context_length_exceeded"}, {"fault": "prompt_filter"},
    {"fault": "drop", "after_tokens": 2}, {"fault": "error_event", "after_tokens": 2},
]


PROVIDER_WORDING = [
    "Incorrect API key provided", "sk-emulator", "Rate limit reached", "You exceeded your current",
    "Sorry about that", "does not exist or you do not have access", "maximum context length",
    "content management policy", "Unsupported parameter", "Country, region",
]


@pytest.mark.parametrize("provider", ["openai", "azure", "compatible"])
def test_credentials_never_appear_in_error_details(
    make_profile: Callable[..., Any], settings: Any, emulator: Any, monkeypatch: Any,
    provider: str,
) -> None:
    monkeypatch.setenv("LLM_KEY_TEST_SECRET", SECRET)
    settings.OPENAI_API_KEY = SECRET
    settings.OPENAI_BASE_URL = settings.EMULATOR_URL + "/v1"
    endpoint = {"openai": "", "azure": settings.EMULATOR_URL,
                "compatible": settings.EMULATOR_URL + "/v1"}[provider]
    profile = make_profile(provider=provider, endpoint=endpoint, api_key_env="LLM_KEY_TEST_SECRET",
                           api_version=AZURE_VERSION if provider == "azure" else "")
    # A profile that sends a parameter the model rejects: the provider's 400 names it.
    rejected = make_profile(name="rejected", provider=provider, endpoint=endpoint,
                            api_key_env="LLM_KEY_TEST_SECRET",
                            api_version=AZURE_VERSION if provider == "azure" else "",
                            accepted_params=["max_tokens"])
    unreachable = make_profile(name="unreachable", provider="compatible",
                               endpoint=f"http://127.0.0.1:{closed_port()}/v1",
                               api_key_env="LLM_KEY_TEST_SECRET")
    errors: list[LLMError] = []
    for scenario in CREDENTIAL_FAULTS:
        emulator.push(scenario)
        with pytest.raises(LLMError) as caught:
            stream(profile)
        errors.append(caught.value)
    for failing in (rejected, unreachable):
        with pytest.raises(LLMError) as caught:
            stream(failing)
        errors.append(caught.value)

    assert len(errors) == len(CREDENTIAL_FAULTS) + 2
    assert "max_tokens" in errors[-2].detail
    for error in errors:
        for text in (error.detail, str(error)):
            assert SECRET not in text
            assert SECRET[-8:] not in text  # not even the masked tail a provider echoes
            # Provider bodies can echo a (masked) key; none of their wording is passed on.
            for wording in PROVIDER_WORDING:
                assert wording not in text
