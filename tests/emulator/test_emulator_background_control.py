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


def test_a_dropped_connection_leaves_a_background_response_running_to_its_end(
    client: openai.OpenAI, emu: EmulatorHandle,
) -> None:
    """A background response runs on server-side whatever happens to the client's
    connection (developers.openai.com/api/docs/guides/background), so a ``drop`` cuts the
    creating stream only and a resume after the last sequence number read gets the rest."""
    emu.emulator.push({"fault": "drop", "after_tokens": 4, "reply": "One two three four five six."})
    stream = background(client, stream=True)
    seen: list[Any] = []
    with pytest.raises(openai.APIConnectionError):
        for event in stream:
            seen.append(event)
    response_id = seen[0].response.id
    head = "".join(e.delta for e in seen if e.type == "response.output_text.delta")

    rest = list(client.responses.retrieve(
        response_id, stream=True, starting_after=seen[-1].sequence_number))

    assert head and rest[-1].type == "response.completed"
    assert [e.sequence_number for e in seen + rest] == list(range(len(seen) + len(rest)))
    tail = "".join(e.delta for e in rest if e.type == "response.output_text.delta")
    assert head + tail == rest[-1].response.output_text == "One two three four five six."


def test_a_response_stuck_in_queued_stays_queued_until_cancelled(
    client: openai.OpenAI, emu: EmulatorHandle,
) -> None:
    """The provider bug of community.openai.com thread 1382584: a client that disconnects
    right at ``response.created`` can leave the background response ``queued`` for good,
    so a client must poll with a deadline and cancel it."""
    emu.emulator.push({"fault": "stuck_queued"})
    stream = background(client, stream=True)
    seen: list[Any] = []
    with pytest.raises(openai.APIConnectionError):
        for event in stream:
            seen.append(event)
    assert [(e.type, e.response.status) for e in seen] == [
        ("response.created", "queued"), ("response.queued", "queued")]
    response_id = seen[0].response.id

    polls = [client.responses.retrieve(response_id).status for _ in range(3)]

    assert polls == ["queued"] * 3
    assert client.responses.cancel(response_id).status == "cancelled"
    # A resumed stream replays the queued events and ends once the response is cancelled.
    replay = list(client.responses.retrieve(response_id, stream=True, starting_after=-1))
    assert [e.type for e in replay] == ["response.created", "response.queued"]
