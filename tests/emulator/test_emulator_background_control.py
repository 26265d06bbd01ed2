"""Background responses can be cancelled and deleted, as on OpenAI: ``POST
/v1/responses/{id}/cancel`` stops one still running (cancelling a finished one changes
nothing), ``DELETE /v1/responses/{id}`` forgets it."""

from __future__ import annotations

from typing import Any

import openai
import pytest

from emulator.server import EmulatorHandle


def background(client: openai.OpenAI, **extra: Any) -> Any:
    return client.responses.create(
        model="o3-mini", input="Why is the sky blue?", background=True, store=True,
        reasoning={"effort": "high"}, **extra,
    )


def test_cancelling_a_running_response_stops_it_and_ends_its_stream(
    client: openai.OpenAI, emu: EmulatorHandle,
) -> None:
    emu.emulator.push({"think_ms": 60_000})  # still reasoning when the cancel arrives
    stream = background(client, stream=True)
    created = next(stream)
    response_id = created.response.id

    cancelled = client.responses.cancel(response_id)

    assert (cancelled.id, cancelled.status, cancelled.usage) == (response_id, "cancelled", None)
    rest = [event.type for event in stream]
    assert "response.completed" not in rest and "response.output_text.delta" not in rest
    assert client.responses.retrieve(response_id).status == "cancelled"
    [cancel] = emu.emulator.requests_to(f"/v1/responses/{response_id}/cancel")
    assert (cancel["method"], cancel["status"]) == ("POST", 200)


def test_cancelling_a_finished_response_returns_it_unchanged(client: openai.OpenAI) -> None:
    events = list(background(client, stream=True))
    response_id = events[0].response.id
    assert events[-1].type == "response.completed"

    again = client.responses.cancel(response_id)

    assert again.status == "completed"
    assert again.output_text == events[-1].response.output_text


def test_a_deleted_response_can_no_longer_be_retrieved_or_resumed(client: openai.OpenAI) -> None:
    events = list(background(client, stream=True))
    response_id = events[0].response.id

    client.responses.delete(response_id)

    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(response_id)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(response_id, stream=True, starting_after=2)
    with pytest.raises(openai.NotFoundError):
        client.responses.delete(response_id)


def test_cancel_and_delete_answer_on_azures_v1_path_too(emu: EmulatorHandle) -> None:
    azure_v1 = openai.OpenAI(base_url=emu.url + "/openai/v1/", api_key="x", max_retries=0)
    emu.emulator.push({"think_ms": 60_000})
    response = background(azure_v1)

    assert azure_v1.responses.cancel(response.id).status == "cancelled"
    azure_v1.responses.delete(response.id)

    methods = [(e["method"], e["path"]) for e in emu.emulator.requests_to(response.id)
               + emu.emulator.requests_to(f"{response.id}/cancel")]
    assert sorted(methods) == [
        ("DELETE", f"/openai/v1/responses/{response.id}"),
        ("POST", f"/openai/v1/responses/{response.id}/cancel"),
    ]


def test_cancelling_an_unknown_response_is_a_404(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError):
        client.responses.cancel("resp_missing")
