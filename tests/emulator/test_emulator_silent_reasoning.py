"""While the model reasons the wire is silent, after the stream's opening.

On a Responses stream the server sends ``response.created`` and ``response.in_progress`` at
once, then nothing until reasoning-summary or output events
(developers.openai.com/api/docs/guides/background; openai-wire.md §3.8). On Chat
Completions nothing is streamed while the model reasons: the role chunk comes right before
the content (openai-wire.md §3.7). The think pauses here are far longer than any test
waits, and the tests look at which events had arrived when the pause was cut short, not
at the clock.
"""

from __future__ import annotations

import json
from typing import Any

import httpx2
import openai
import pytest

from emulator.server import EmulatorHandle

OPENING = ["response.created", "response.in_progress"]


def background(client: openai.OpenAI, **extra: Any) -> Any:
    return client.responses.create(
        model="o3-mini", input="Why is the sky blue?", background=True, store=True,
        reasoning={"effort": "high", "summary": "auto"}, stream=True, **extra,
    )


@pytest.mark.parametrize("path", ["/v1/", "/openai/v1/"])
def test_a_reasoning_response_sends_its_opening_and_then_nothing_while_it_thinks(
    emu: EmulatorHandle, path: str,
) -> None:
    """Cancelled a minute before its think pause ends, the stream holds exactly the two
    opening events: nothing came between ``response.in_progress`` and the reasoning."""
    client = openai.OpenAI(base_url=emu.url + path, api_key="x", max_retries=0)
    emu.emulator.push({"think_ms": 60_000, "reasoning_summary": "Light scatters."})
    stream = background(client)
    opening = [next(stream), next(stream)]
    response_id = opening[0].response.id

    assert client.responses.retrieve(response_id).status == "in_progress"
    client.responses.cancel(response_id)
    rest = list(stream)

    assert [event.type for event in opening] == OPENING
    assert [event.sequence_number for event in opening] == [0, 1]
    assert rest == []


def test_after_the_pause_the_reasoning_item_and_its_summary_come_before_the_answer(
    client: openai.OpenAI, emu: EmulatorHandle,
) -> None:
    emu.emulator.push({"think_ms": 50, "reasoning_summary": "Light scatters."})
    events: list[Any] = list(client.responses.create(
        model="o3-mini", input="Why is the sky blue?", stream=True,
        reasoning={"effort": "high", "summary": "auto"},
    ))

    types = [event.type for event in events]
    assert types[:5] == [
        *OPENING,
        "response.output_item.added",
        "response.reasoning_summary_part.added",
        "response.reasoning_summary_text.delta",
    ]
    assert events[2].item.type == "reasoning"
    assert types.index("response.reasoning_summary_text.done") < types.index(
        "response.output_text.delta"
    )
    assert [event.sequence_number for event in events] == list(range(len(events)))
    assert types[-1] == "response.completed"


def test_a_chat_completions_stream_sends_no_bytes_while_the_model_thinks(
    emu: EmulatorHandle,
) -> None:
    """The role chunk does not arrive before the pause: a read that gives up long before
    the minute of reasoning ends has received no body at all."""
    emu.emulator.push({"think_ms": 60_000})
    body = {"model": "o3-mini", "messages": [{"role": "user", "content": "hi"}], "stream": True}
    received: list[bytes] = []
    with (
        pytest.raises(httpx2.ReadTimeout),
        httpx2.stream(
            "POST", emu.url + "/v1/chat/completions", json=body,
            headers={"authorization": "Bearer x"}, timeout=httpx2.Timeout(30, read=3),
        ) as response,
    ):
        assert response.status_code == 200
        for chunk in response.iter_raw():
            received.append(chunk)

    assert received == []


def test_a_chat_completions_stream_opens_with_the_role_chunk_after_the_pause(
    emu: EmulatorHandle,
) -> None:
    emu.emulator.push({"think_ms": 50})
    body = {"model": "o3-mini", "messages": [{"role": "user", "content": "hi"}], "stream": True}
    with httpx2.stream("POST", emu.url + "/v1/chat/completions", json=body,
                       headers={"authorization": "Bearer x"}, timeout=30) as response:
        payloads = [line[6:] for line in response.iter_lines() if line.startswith("data: ")]

    first = json.loads(payloads[0])["choices"][0]["delta"]
    second = json.loads(payloads[1])["choices"][0]["delta"]
    assert first == {"role": "assistant", "content": "", "refusal": None}
    assert second["content"]
    assert payloads[-1] == "[DONE]"
