"""Every scripted fault, as the openai SDK sees it over real HTTP."""

from __future__ import annotations

import time
from typing import Any

import httpx2
import openai
import pytest

from emulator.server import EmulatorHandle
from emulator.tokens import count_tokens
from tests.emulator.helpers import body_of, raw_sse, user


def create(client: openai.OpenAI | openai.AzureOpenAI, **kwargs: Any) -> Any:
    return client.chat.completions.create(
        model="o3-mini", messages=kwargs.pop("messages", user("hi")), **kwargs
    )


def stream_text(client: openai.OpenAI, **kwargs: Any) -> tuple[list[str], BaseException | None]:
    """Content deltas received before the stream ended or raised."""
    received: list[str] = []
    try:
        for chunk in create(client, stream=True, **kwargs):
            for choice in chunk.choices:
                if choice.delta is not None and choice.delta.content:
                    received.append(choice.delta.content)
    except openai.APIError as exc:
        return received, exc
    return received, None


@pytest.mark.parametrize(
    ("fault", "status", "exception", "code"),
    [
        ("rate_limit", 429, openai.RateLimitError, "rate_limit_exceeded"),
        ("insufficient_quota", 429, openai.RateLimitError, "insufficient_quota"),
        ("server_error", 500, openai.InternalServerError, None),
        ("overloaded", 503, openai.InternalServerError, "server_is_overloaded"),
        ("model_not_found", 404, openai.NotFoundError, "model_not_found"),
        ("unauthorized", 401, openai.AuthenticationError, "invalid_api_key"),
        ("forbidden", 403, openai.PermissionDeniedError, "unsupported_country_region_territory"),
        ("context_length_exceeded", 400, openai.BadRequestError, "context_length_exceeded"),
    ],
)
def test_http_faults(
    client: openai.OpenAI,
    emu: EmulatorHandle,
    fault: str,
    status: int,
    exception: type[openai.APIStatusError],
    code: str | None,
) -> None:
    emu.emulator.push({"fault": fault})
    with pytest.raises(exception) as info:
        create(client, stream=True)
    error = info.value
    assert error.status_code == status
    assert error.code == code
    assert error.request_id and error.request_id.startswith("req_")
    assert emu.emulator.journal[-1]["status"] == status
    # Consumed: the next request succeeds.
    assert create(client).choices[0].finish_reason == "stop"


def test_rate_limit_headers_and_body(client: openai.OpenAI, emu: EmulatorHandle) -> None:
    emu.emulator.push({"fault": "rate_limit", "retry_after": 2, "retry_after_ms": 1500})
    with pytest.raises(openai.RateLimitError) as info:
        create(client)
    headers = info.value.response.headers
    assert headers["retry-after"] == "2" and headers["retry-after-ms"] == "1500"
    assert info.value.type == "tokens"
    assert "Please try again in 1.5s" in info.value.message
    emu.emulator.push({"fault": "rate_limit"})
    with pytest.raises(openai.RateLimitError) as info:
        create(client)
    assert info.value.response.headers["retry-after"] == "1"
    assert "retry-after-ms" not in info.value.response.headers


def test_insufficient_quota_has_no_retry_after(client: openai.OpenAI, emu: EmulatorHandle) -> None:
    emu.emulator.push({"fault": "insufficient_quota"})
    with pytest.raises(openai.RateLimitError) as info:
        create(client)
    assert "retry-after" not in info.value.response.headers
    assert body_of(info.value)["type"] == "insufficient_quota"


def test_sdk_retry_honours_retry_after_ms(emu: EmulatorHandle) -> None:
    emu.emulator.push({"fault": "rate_limit", "retry_after_ms": 100})
    retrying = openai.OpenAI(base_url=emu.url + "/v1", api_key="x", max_retries=1)
    started = time.perf_counter()
    assert create(retrying).choices[0].finish_reason == "stop"
    assert time.perf_counter() - started >= 0.09
    journal = emu.emulator.requests_to("/chat/completions")
    assert [e["status"] for e in journal] == [429, 200]
    assert [e["headers"]["x-stainless-retry-count"] for e in journal] == ["0", "1"]


def test_should_retry_header(client: openai.OpenAI, emu: EmulatorHandle) -> None:
    emu.emulator.push({"fault": "overloaded", "should_retry": False})
    with pytest.raises(openai.InternalServerError) as info:
        create(client)
    assert info.value.response.headers["x-should-retry"] == "false"


def test_prompt_filter_on_azure(azure: openai.AzureOpenAI, emu: EmulatorHandle) -> None:
    emu.emulator.push({"fault": "prompt_filter"})
    with pytest.raises(openai.BadRequestError) as info:
        create(azure, stream=True)
    assert info.value.code == "content_filter" and info.value.param == "prompt"
    assert body_of(info.value)["innererror"]["code"] == "ResponsibleAIPolicyViolation"
    assert body_of(info.value)["innererror"]["content_filter_result"]["jailbreak"] == {
        "filtered": True,
        "detected": True,
    }


def test_drop_mid_stream(client: openai.OpenAI, emu: EmulatorHandle) -> None:
    emu.emulator.push({"fault": "drop", "after_tokens": 5})
    received, error = stream_text(client)
    assert isinstance(error, openai.APIConnectionError)
    assert len(received) == 5
    assert isinstance(error.__cause__, httpx2.RemoteProtocolError)
    # The server survives and serves the next request normally.
    after, error = stream_text(client)
    assert error is None and after


def test_drop_non_streaming(client: openai.OpenAI, emu: EmulatorHandle) -> None:
    emu.emulator.push({"fault": "drop"})
    with pytest.raises(openai.APIConnectionError):
        create(client)


def test_error_event_mid_stream(client: openai.OpenAI, emu: EmulatorHandle) -> None:
    emu.emulator.push({"fault": "error_event", "after_tokens": 3})
    received, error = stream_text(client)
    assert type(error) is openai.APIError
    assert len(received) == 3
    assert body_of(error)["type"] == "server_error"
    assert "The server had an error" in error.message


def test_error_event_wire_format(emu: EmulatorHandle) -> None:
    emu.emulator.push({"fault": "error_event", "after_tokens": 1})
    payloads = raw_sse(
        emu.url + "/v1/chat/completions",
        {"model": "o3-mini", "messages": user("hi"), "stream": True},
    )
    assert payloads[-1].startswith('{"error":{"message":"The server had an error')
    assert "[DONE]" not in payloads


def test_stall_triggers_client_read_timeout(emu: EmulatorHandle) -> None:
    emu.emulator.push({"fault": "stall", "after_tokens": 2, "stall_seconds": 3})
    impatient = openai.OpenAI(base_url=emu.url + "/v1", api_key="x", max_retries=0, timeout=0.4)
    started = time.perf_counter()
    received, error = stream_text(impatient)
    assert isinstance(error, openai.APITimeoutError)
    assert len(received) == 2
    assert time.perf_counter() - started < 2


def test_short_stall_then_stream_resumes(client: openai.OpenAI, emu: EmulatorHandle) -> None:
    emu.emulator.push({"fault": "stall", "after_tokens": 4, "stall_seconds": 0.3})
    started = time.perf_counter()
    received, error = stream_text(client)
    assert error is None and count_tokens("".join(received)) == 30
    assert time.perf_counter() - started >= 0.3


def test_truncate_ends_without_finish_or_usage(client: openai.OpenAI, emu: EmulatorHandle) -> None:
    emu.emulator.push({"fault": "truncate", "after_tokens": 4})
    chunks = list(create(client, stream=True, stream_options={"include_usage": True}))
    assert all(c.usage is None for c in chunks)
    assert all(choice.finish_reason is None for c in chunks for choice in c.choices)
    assert sum(1 for c in chunks if c.choices[0].delta.content) == 4


def test_content_filter_finish(client: openai.OpenAI, emu: EmulatorHandle) -> None:
    emu.emulator.push({"fault": "content_filter", "after_tokens": 6})
    chunks = list(create(client, stream=True, stream_options={"include_usage": True}))
    filtered = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert len(filtered) == 1
    choice = filtered[0].choices[0]
    assert choice.finish_reason == "content_filter" and choice.delta is None
    assert choice.model_extra["content_filter_results"]["protected_material_text"] == {
        "filtered": True,
        "detected": True,
    }
    assert chunks[-1].usage.completion_tokens == 256 + 6


def test_content_filter_non_streaming(client: openai.OpenAI, emu: EmulatorHandle) -> None:
    emu.emulator.push({"fault": "content_filter", "after_tokens": 6})
    completion = create(client)
    assert completion.choices[0].finish_reason == "content_filter"
    assert count_tokens(completion.choices[0].message.content) == 6


def test_refusal_stream(client: openai.OpenAI, emu: EmulatorHandle) -> None:
    emu.emulator.push({"fault": "refusal", "refusal": "I can't help with that request."})
    chunks = list(create(client, stream=True))
    first = chunks[0].choices[0].delta
    assert first.role == "assistant" and first.content is None and first.refusal == ""
    refusal = "".join(c.choices[0].delta.refusal or "" for c in chunks)
    assert refusal == "I can't help with that request."
    assert all(c.choices[0].delta.content is None for c in chunks)
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_refusal_non_streaming(client: openai.OpenAI, emu: EmulatorHandle) -> None:
    emu.emulator.push({"fault": "refusal"})
    message = create(client).choices[0].message
    assert message.content is None and message.refusal == "I'm sorry, but I can't help with that."


def test_length_empty(client: openai.OpenAI, emu: EmulatorHandle) -> None:
    emu.emulator.push({"fault": "length_empty"})
    chunks = list(
        create(
            client, stream=True, max_completion_tokens=500, stream_options={"include_usage": True}
        )
    )
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == ""
    assert chunks[-2].choices[0].finish_reason == "length"
    usage = chunks[-1].usage
    assert usage.completion_tokens == 500 == usage.completion_tokens_details.reasoning_tokens


def test_scenario_overrides(client: openai.OpenAI, emu: EmulatorHandle) -> None:
    emu.emulator.push({"reasoning_tokens": 7, "cached_tokens": 5, "reply_tokens": 4})
    completion = create(client)
    assert completion.usage.completion_tokens == 11
    assert completion.usage.completion_tokens_details.reasoning_tokens == 7
    # Cached tokens can never exceed the prompt.
    assert completion.usage.prompt_tokens_details.cached_tokens == 5


def test_bad_scenario_is_rejected(emu: EmulatorHandle) -> None:
    with pytest.raises(ValueError, match="unknown fault"):
        emu.emulator.push({"fault": "meteor"})
    with pytest.raises(ValueError, match="unknown scenario field"):
        emu.emulator.push({"faults": "drop"})
