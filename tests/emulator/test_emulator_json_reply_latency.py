"""json_reply_ms: replies in a JSON response format (the shape of title calls) take a set
time, set through the control API, and stay JSON in bench mode; answers keep their pacing."""

from __future__ import annotations

import json
import re
import time
from typing import Any

import httpx2
import openai
from openai.types.chat import ChatCompletionDeveloperMessageParam
from openai.types.shared_params import ResponseFormatJSONSchema

from emulator.server import EmulatorHandle
from tests.emulator.helpers import user

TITLE_FORMAT: ResponseFormatJSONSchema = {
    "type": "json_schema",
    "json_schema": {
        "name": "conversation_title",
        "strict": True,
        "schema": {
            "type": "object",
            "properties": {"title": {"type": "string"}},
            "required": ["title"],
            "additionalProperties": False,
        },
    },
}


def _configure(emu: EmulatorHandle, **changes: Any) -> dict[str, Any]:
    response = httpx2.post(emu.url + "/_emulator/config", json=changes)
    assert response.status_code == 200, response.text
    return response.json()


def _timed(call: Any) -> tuple[Any, float]:
    started = time.monotonic()
    result = call()
    return result, time.monotonic() - started


def test_the_control_api_sets_and_validates_json_reply_ms(emu: EmulatorHandle) -> None:
    assert httpx2.get(emu.url + "/_emulator/config").json()["json_reply_ms"] == 0
    assert _configure(emu, json_reply_ms=250)["json_reply_ms"] == 250
    refused = httpx2.post(emu.url + "/_emulator/config", json={"json_reply_ms": -1})
    assert refused.status_code == 400



def developer(text: str) -> ChatCompletionDeveloperMessageParam:
    return {"role": "developer", "content": text}


def test_a_title_call_takes_json_reply_ms_and_stays_json_in_bench_mode(
    client: openai.OpenAI, emu: EmulatorHandle
) -> None:
    _configure(emu, json_reply_ms=300, timestamps=True, reply_tokens=5)
    completion, elapsed = _timed(lambda: client.chat.completions.create(
        model="o3-mini",
        messages=[developer("Give this conversation a short title."),
                  *user("plan the team offsite")],
        reasoning_effort="low",
        response_format=TITLE_FORMAT,
    ))
    assert elapsed >= 0.3
    content = completion.choices[0].message.content
    assert content is not None and json.loads(content) == {"title": "plan the team offsite"}
    assert completion.choices[0].finish_reason == "stop"


def test_answers_keep_their_own_pacing_and_bench_tokens(
    client: openai.OpenAI, emu: EmulatorHandle
) -> None:
    _configure(emu, json_reply_ms=2000, timestamps=True, reply_tokens=5)
    completion, elapsed = _timed(lambda: client.chat.completions.create(
        model="o3-mini", messages=user("bench"), reasoning_effort="low"
    ))
    assert elapsed < 1.0
    content = completion.choices[0].message.content
    assert content is not None and re.fullmatch(r"( \d+@\d+\.\d{6}){5}", content)


def test_a_json_reply_on_the_responses_api_takes_json_reply_ms_too(
    client: openai.OpenAI, emu: EmulatorHandle
) -> None:
    _configure(emu, json_reply_ms=300)
    schema = TITLE_FORMAT["json_schema"]
    response, elapsed = _timed(lambda: client.responses.create(
        model="o3-mini", input="plan the team offsite", reasoning={"effort": "low"},
        text={"format": {"type": "json_schema", "name": schema["name"], "strict": True,
                         "schema": schema["schema"]}},
    ))
    assert elapsed >= 0.3
    assert json.loads(response.output_text) == {"title": "plan the team offsite"}


def test_a_scenario_timing_still_wins_over_json_reply_ms(
    client: openai.OpenAI, emu: EmulatorHandle
) -> None:
    _configure(emu, json_reply_ms=5000)
    emu.emulator.push({"think_ms": 0})
    completion, elapsed = _timed(lambda: client.chat.completions.create(
        model="o3-mini", messages=user("plan the team offsite"), reasoning_effort="low",
        response_format={"type": "json_object"},
    ))
    assert elapsed < 1.0
    assert json.loads(completion.choices[0].message.content or "") == {"answer": "plan the team offsite"}
