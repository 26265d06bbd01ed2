"""OpenAI's exact 400/401/404 bodies for o-series request mistakes."""

from __future__ import annotations

from typing import Any

import httpx2
import openai
import pytest
from openai.types.shared import ReasoningEffort

from emulator.server import EmulatorHandle
from emulator.tokens import count_tokens
from tests.emulator.helpers import body_of, user


def error_of(call: Any) -> openai.APIStatusError:
    with pytest.raises(openai.APIStatusError) as info:
        call()
    return info.value


def unsupported(param: str, extra: str = "") -> dict[str, Any]:
    return {
        "message": f"Unsupported parameter: '{param}' is not supported with this model.{extra}",
        "type": "invalid_request_error",
        "param": param,
        "code": "unsupported_parameter",
    }


@pytest.mark.parametrize(
    ("param", "value"),
    [
        ("temperature", 0.2),
        ("temperature", 1),
        ("top_p", 1),
        ("presence_penalty", 0),
        ("frequency_penalty", 0.5),
        ("logprobs", True),
        ("top_logprobs", 2),
        ("logit_bias", {"50256": -100}),
        ("parallel_tool_calls", False),
        ("parallel_tool_calls", True),
        ("stop", ["\n"]),
    ],
)
def test_rejected_parameters(client: openai.OpenAI, param: str, value: Any) -> None:
    error = error_of(
        lambda: client.chat.completions.create(
            model="o3-mini", messages=user("hi"), **{param: value}
        )
    )
    assert isinstance(error, openai.BadRequestError)
    assert error.status_code == 400
    assert (
        error.code == "unsupported_parameter"
        and error.param == param
        and error.type == "invalid_request_error"
    )
    assert error.body == unsupported(param)


def test_max_tokens_points_to_max_completion_tokens(client: openai.OpenAI) -> None:
    error = error_of(
        lambda: client.chat.completions.create(model="o3-mini", messages=user("hi"), max_tokens=50)
    )
    assert error.body == unsupported("max_tokens", " Use 'max_completion_tokens' instead.")
    assert error.response.json() == {"error": error.body}


def test_successor_model_rejects_the_same_parameters(client: openai.OpenAI) -> None:
    error = error_of(
        lambda: client.chat.completions.create(
            model="gpt-5.6-sol", messages=user("hi"), temperature=0
        )
    )
    assert error.body == unsupported("temperature")


def test_non_reasoning_model_rejects_reasoning_effort(client: openai.OpenAI) -> None:
    error = error_of(
        lambda: client.chat.completions.create(
            model="gpt-4.1-mini", messages=user("hi"), reasoning_effort="low"
        )
    )
    assert error.body == unsupported("reasoning_effort")


def test_n_greater_than_one(client: openai.OpenAI) -> None:
    error = error_of(
        lambda: client.chat.completions.create(model="o3-mini", messages=user("hi"), n=2)
    )
    assert error.code == "unsupported_value" and error.param == "n"
    assert body_of(error)["message"] == (
        "Unsupported value: 'n' does not support 2 with this model. Only the default (1) value is supported."
    )
    assert client.chat.completions.create(model="o3-mini", messages=user("hi"), n=1).choices


@pytest.mark.parametrize("effort", ["minimal", "xhigh", "none"])
def test_effort_outside_the_model_list(client: openai.OpenAI, effort: ReasoningEffort) -> None:
    error = error_of(
        lambda: client.chat.completions.create(
            model="o3-mini", messages=user("hi"), reasoning_effort=effort
        )
    )
    assert error.body == {
        "message": (
            f"Unsupported value: 'reasoning_effort' does not support '{effort}' with this model. "
            "Supported values are: 'low', 'medium', and 'high'."
        ),
        "type": "invalid_request_error",
        "param": "reasoning_effort",
        "code": "unsupported_value",
    }


def test_max_completion_tokens_too_large(client: openai.OpenAI) -> None:
    error = error_of(
        lambda: client.chat.completions.create(
            model="o3-mini", messages=user("hi"), max_completion_tokens=200000
        )
    )
    assert error.param == "max_completion_tokens" and error.code == "invalid_value"
    assert body_of(error)["message"] == (
        "max_completion_tokens is too large: 200000. This model supports at most 100000 completion tokens, "
        "whereas you provided 200000."
    )
    ok = client.chat.completions.create(
        model="o3-mini", messages=user("hi"), max_completion_tokens=100000
    )
    assert ok.choices[0].finish_reason == "stop"


def test_stream_options_without_stream(client: openai.OpenAI) -> None:
    error = error_of(
        lambda: client.chat.completions.create(
            model="o3-mini", messages=user("hi"), stream_options={"include_usage": True}
        )
    )
    assert error.param == "stream_options"
    assert (
        body_of(error)["message"]
        == "The 'stream_options' parameter is only allowed when 'stream' is enabled."
    )


def test_context_length_exceeded(client: openai.OpenAI) -> None:
    text = "hello " * 100_100
    prompt_tokens = 3 + 3 + count_tokens(text)
    error = error_of(
        lambda: client.chat.completions.create(
            model="o3-mini", messages=user(text), max_completion_tokens=100000
        )
    )
    assert error.body == {
        "message": (
            "This model's maximum context length is 200000 tokens. However, your messages resulted in "
            f"{prompt_tokens + 100000} tokens. Please reduce the length of the messages."
        ),
        "type": "invalid_request_error",
        "param": "messages",
        "code": "context_length_exceeded",
    }
    # The same prompt fits once the completion budget is smaller.
    ok = client.chat.completions.create(
        model="o3-mini", messages=user(text), max_completion_tokens=1000
    )
    assert ok.usage is not None
    assert ok.usage.prompt_tokens == prompt_tokens


@pytest.mark.parametrize(
    ("messages", "param", "code"),
    [
        ([], "messages", "empty_array"),
        ("hello", "messages", "invalid_type"),
        ([{"content": "hi"}], "messages[0].role", "missing_required_parameter"),
        ([{"role": "wizard", "content": "hi"}], "messages[0].role", "invalid_value"),
        ([{"role": "user"}], "messages[0].content", "missing_required_parameter"),
        (
            [
                {"role": "system", "content": "a"},
                {"role": "developer", "content": "b"},
                {"role": "user", "content": "c"},
            ],
            "messages",
            "invalid_value",
        ),
        (
            [
                {"role": "user", "content": "hi"},
                {"role": "tool", "tool_call_id": "x", "content": "1"},
            ],
            "messages.[1].role",
            None,
        ),
        (
            [
                {
                    "role": "user",
                    "content": [{"type": "image_url", "image_url": {"url": "https://x/y.png"}}],
                }
            ],
            "messages[0].content[0].type",
            "invalid_value",
        ),
    ],
)
def test_message_validation(
    client: openai.OpenAI, messages: Any, param: str, code: str | None
) -> None:
    error = error_of(lambda: client.chat.completions.create(model="o3-mini", messages=messages))
    assert isinstance(error, openai.BadRequestError)
    assert (error.param, error.code) == (param, code)


def test_missing_messages_and_unknown_argument(emu: EmulatorHandle) -> None:
    headers = {"authorization": "Bearer x"}
    url = emu.url + "/v1/chat/completions"
    missing = httpx2.post(url, json={"model": "o3-mini"}, headers=headers)
    assert missing.status_code == 400
    assert missing.json()["error"]["message"] == "Missing required parameter: 'messages'."
    unknown = httpx2.post(
        url, json={"model": "o3-mini", "messages": user("hi"), "temprature": 1}, headers=headers
    )
    assert (
        unknown.json()["error"]["message"] == "Unrecognized request argument supplied: temprature"
    )
    broken = httpx2.post(
        url, content=b"{not json", headers={**headers, "content-type": "application/json"}
    )
    assert (
        broken.status_code == 400
        and "could not parse the JSON body" in broken.json()["error"]["message"]
    )
    no_model = httpx2.post(url, json={"messages": user("hi")}, headers=headers)
    assert no_model.json()["error"]["message"] == "you must provide a model parameter"


def test_unknown_model(client: openai.OpenAI) -> None:
    error = error_of(lambda: client.chat.completions.create(model="o9-ultra", messages=user("hi")))
    assert isinstance(error, openai.NotFoundError)
    assert error.body == {
        "message": "The model `o9-ultra` does not exist or you do not have access to it.",
        "type": "invalid_request_error",
        "param": None,
        "code": "model_not_found",
    }


def test_retired_model_is_not_found(client: openai.OpenAI, emu: EmulatorHandle) -> None:
    emu.emulator.update_config({"retired_models": ["o3-mini"]})
    for name in ("o3-mini", "o3-mini-2025-01-31"):
        error = error_of(
            lambda n=name: client.chat.completions.create(model=n, messages=user("hi"))
        )
        assert isinstance(error, openai.NotFoundError) and error.code == "model_not_found"
    assert client.chat.completions.create(model="gpt-5.6-sol", messages=user("hi")).choices


def test_missing_or_empty_bearer_token(emu: EmulatorHandle) -> None:
    url = emu.url + "/v1/chat/completions"
    body = {"model": "o3-mini", "messages": user("hi")}
    for headers in (
        {},
        {"authorization": "Bearer"},
        {"authorization": "Basic abc"},
        {"api-key": "only-azure-uses-this"},
    ):
        response = httpx2.post(url, json=body, headers=headers)
        assert response.status_code == 401
        error = response.json()["error"]
        assert error["code"] == "invalid_api_key" and error["type"] == "invalid_request_error"
    client = openai.OpenAI(base_url=emu.url + "/v1", api_key="x", max_retries=0)
    assert client.chat.completions.create(model="o3-mini", messages=user("hi")).choices
