"""Helpers shared by the emulator tests."""

from __future__ import annotations

import json
from typing import Any

import httpx2
import openai
import pydantic
from openai.types.chat import ChatCompletionMessageParam

AZURE_VERSION = "2024-12-01-preview"


def user(text: str) -> list[ChatCompletionMessageParam]:
    return [{"role": "user", "content": text}]


def extra(model: pydantic.BaseModel) -> dict[str, Any]:
    """Fields the SDK does not declare (Azure's filter results), kept by pydantic as extras."""
    assert model.model_extra is not None
    return model.model_extra


def body_of(error: openai.APIError) -> dict[str, Any]:
    """The decoded JSON error body; the SDK types it as `object`."""
    assert isinstance(error.body, dict)
    return error.body


def raw_sse(url: str, body: dict[str, Any], headers: dict[str, str] | None = None) -> list[str]:
    """POST and return the `data:` payloads exactly as sent on the wire."""
    merged = {"authorization": "Bearer x", **(headers or {})}
    with httpx2.stream("POST", url, json=body, headers=merged, timeout=30) as response:
        assert response.status_code == 200, response.read()
        return [
            line[len("data: ") :] for line in response.iter_lines() if line.startswith("data: ")
        ]


def raw_chunks(
    url: str, body: dict[str, Any], headers: dict[str, str] | None = None
) -> list[dict[str, Any]]:
    payloads = raw_sse(url, body, headers)
    assert payloads[-1] == "[DONE]"
    return [json.loads(p) for p in payloads[:-1]]
