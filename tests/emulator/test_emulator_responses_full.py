"""The Responses API beyond the basics: encrypted reasoning items for store=false clients,
validated when they come back (tampered or orphaned items get the provider's 400)."""

from __future__ import annotations

import time
from typing import Any

import openai
import pytest
from openai.types.responses import ResponseIncludable

from emulator.server import EmulatorHandle

ENCRYPTED: list[ResponseIncludable] = ["reasoning.encrypted_content"]


def ask(client: openai.OpenAI, input_: Any, **extra: Any) -> Any:
    return client.responses.create(
        model="o3-mini", input=input_, store=False, include=ENCRYPTED,
        reasoning={"effort": "low"}, **extra,
    )


def reasoning_of(response: Any) -> dict[str, Any]:
    [item] = [i for i in response.output if i.type == "reasoning"]
    return item.model_dump(mode="json", exclude_none=True)


def error_of(excinfo: pytest.ExceptionInfo[openai.BadRequestError]) -> dict[str, Any]:
    body = excinfo.value.body
    assert isinstance(body, dict)
    return body


def test_include_encrypted_content_puts_a_sealed_blob_on_the_reasoning_item(
    client: openai.OpenAI,
) -> None:
    response = ask(client, "Why is the sky blue?")

    item = reasoning_of(response)
    assert item["id"].startswith("rs_")
    assert item["encrypted_content"].startswith("gAAAAA")


def test_without_include_the_reasoning_item_has_no_blob(client: openai.OpenAI) -> None:
    response = client.responses.create(
        model="o3-mini", input="Why is the sky blue?", store=False, reasoning={"effort": "low"}
    )

    assert "encrypted_content" not in reasoning_of(response)


def test_the_streamed_item_done_event_carries_the_blob_and_added_does_not(
    client: openai.OpenAI,
) -> None:
    events = list(ask(client, "Why is the sky blue?", stream=True))

    added = next(e for e in events if e.type == "response.output_item.added")
    done = next(e for e in events if e.type == "response.output_item.done"
                and e.item.type == "reasoning")
    assert added.item.type == "reasoning" and added.item.encrypted_content is None
    assert done.item.encrypted_content.startswith("gAAAAA")
    completed = events[-1]
    assert completed.type == "response.completed"
    [final] = [i for i in completed.response.output if i.type == "reasoning"]
    assert final.encrypted_content == done.item.encrypted_content


def test_an_intact_reasoning_item_sent_back_before_its_answer_is_accepted(
    client: openai.OpenAI, emu: EmulatorHandle,
) -> None:
    first = ask(client, "Why is the sky blue?")

    second = ask(client, [
        {"role": "user", "content": "Why is the sky blue?"},
        reasoning_of(first),
        {"role": "assistant", "content": first.output_text},
        {"role": "user", "content": "And why is the sunset red?"},
    ])

    assert second.status == "completed" and second.output_text
    assert [e["status"] for e in emu.emulator.requests_to("/v1/responses")] == [200, 200]


def test_a_tampered_reasoning_item_gets_the_providers_400(
    client: openai.OpenAI, emu: EmulatorHandle,
) -> None:
    first = ask(client, "Why is the sky blue?")
    item = reasoning_of(first)
    blob = item["encrypted_content"]
    item["encrypted_content"] = blob[:-8] + ("A" * 8 if not blob.endswith("A" * 8) else "B" * 8)

    with pytest.raises(openai.BadRequestError) as excinfo:
        ask(client, [
            {"role": "user", "content": "Why is the sky blue?"},
            item,
            {"role": "assistant", "content": first.output_text},
            {"role": "user", "content": "And why is the sunset red?"},
        ])

    error = error_of(excinfo)  # the SDK keeps the body's "error" object
    assert error["type"] == "invalid_request_error"
    assert error["code"] == "invalid_encrypted_content"
    assert error["message"].startswith("The encrypted content gAAAAA")
    assert error["message"].endswith("could not be verified.")
    assert emu.emulator.requests_to("/v1/responses")[-1]["status"] == 400


def test_a_blob_for_another_model_does_not_verify(client: openai.OpenAI) -> None:
    first = ask(client, "Why is the sky blue?")
    other = client.responses.create(
        model="gpt-5.6-sol", input="Why is the sky blue?", store=False, include=ENCRYPTED,
        reasoning={"effort": "low"},
    )
    foreign = reasoning_of(other)

    with pytest.raises(openai.BadRequestError) as excinfo:
        ask(client, [
            {"role": "user", "content": "Why is the sky blue?"},
            foreign,
            {"role": "assistant", "content": first.output_text},
            {"role": "user", "content": "More?"},
        ])

    assert excinfo.value.code == "invalid_encrypted_content"


def test_a_reasoning_item_without_its_following_answer_is_refused(
    client: openai.OpenAI,
) -> None:
    first = ask(client, "Why is the sky blue?")
    item = reasoning_of(first)

    with pytest.raises(openai.BadRequestError) as excinfo:
        # History trimmed between the reasoning and its answer: the item is orphaned.
        ask(client, [item, {"role": "user", "content": "And why is the sunset red?"}])

    assert excinfo.value.message.endswith(
        f"Item '{item['id']}' of type 'reasoning' was provided without its required "
        "following item."
    )
    assert error_of(excinfo)["param"] == "input[0]"


def test_a_reasoning_item_before_a_function_call_is_accepted(client: openai.OpenAI) -> None:
    first = ask(client, "Why is the sky blue?")

    second = ask(client, [
        {"role": "user", "content": "What is 2+2?"},
        reasoning_of(first),
        {"type": "function_call", "call_id": "call_1", "name": "calculator",
         "arguments": '{"expression": "2+2"}'},
        {"type": "function_call_output", "call_id": "call_1", "output": "4"},
    ])

    assert second.status == "completed"


def test_an_unknown_include_value_is_refused(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as excinfo:
        client.responses.create(
            model="o3-mini", input="hi", include=["reasoning.secrets"],  # type: ignore[list-item]
        )

    assert excinfo.value.code == "invalid_value"
    assert error_of(excinfo)["param"] == "include[0]"


# --- verbosity, service_tier, prompt_cache_key ---------------------------------------

LONG = "Describe the water cycle in detail, step by step, with examples. " * 110


def test_the_response_reports_the_tier_that_served_it(client: openai.OpenAI) -> None:
    flex = ask(client, "hi", service_tier="flex")
    auto = ask(client, "hi", service_tier="auto")
    plain = ask(client, "hi")

    assert (flex.service_tier, auto.service_tier, plain.service_tier) == (
        "flex", "default", "default",
    )


def test_the_streamed_completed_event_reports_the_tier(client: openai.OpenAI) -> None:
    events = list(ask(client, "hi", service_tier="flex", stream=True))

    assert events[-1].type == "response.completed"
    assert events[-1].response.service_tier == "flex"


def test_an_unknown_service_tier_is_refused(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as excinfo:
        ask(client, "hi", service_tier="cheap")

    assert excinfo.value.code == "invalid_value"
    assert error_of(excinfo)["param"] == "service_tier"


def test_verbosity_is_echoed_and_a_bad_one_is_refused(client: openai.OpenAI) -> None:
    response = ask(client, "hi", text={"verbosity": "low"})
    assert response.text is not None and response.text.verbosity == "low"

    with pytest.raises(openai.BadRequestError) as excinfo:
        ask(client, "hi", text={"verbosity": "terse"})
    assert error_of(excinfo)["param"] == "text.verbosity"


def test_the_cache_hits_when_the_key_repeats_with_the_same_prefix(client: openai.OpenAI) -> None:
    first = ask(client, LONG, prompt_cache_key="conv-a")
    again = ask(client, LONG, prompt_cache_key="conv-a")
    other_key = ask(client, LONG, prompt_cache_key="conv-b")

    def cached(response: Any) -> int:
        return int(response.usage.input_tokens_details.cached_tokens)

    assert cached(first) == 0
    assert cached(again) >= 1024 and cached(again) % 128 == 0
    assert cached(other_key) == 0


def test_a_prompt_cache_key_over_64_characters_is_refused(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as excinfo:
        ask(client, "hi", prompt_cache_key="k" * 65)

    assert excinfo.value.code == "string_above_max_length"


# --- background responses and resuming their stream --------------------------------


def background(client: openai.OpenAI, **extra: Any) -> Any:
    return client.responses.create(
        model="o3-mini", input="Why is the sky blue?", background=True, store=True,
        reasoning={"effort": "high", "summary": "auto"}, **extra,
    )


def test_a_background_stream_resumes_after_the_last_sequence_number_seen(
    client: openai.OpenAI, emu: EmulatorHandle,
) -> None:
    stream = background(client, stream=True)
    first = [next(stream) for _ in range(5)]
    stream.close()  # the worker died here
    assert first[0].type == "response.created" and first[0].response.background is True
    response_id = first[0].response.id
    last_seen = first[-1].sequence_number

    resumed = list(client.responses.retrieve(
        response_id, stream=True, starting_after=last_seen,
    ))

    numbers = [e.sequence_number for e in resumed]
    assert numbers == list(range(last_seen + 1, last_seen + 1 + len(numbers)))
    assert resumed[-1].type == "response.completed"
    assert resumed[-1].response.usage is not None
    assert resumed[-1].response.usage.output_tokens_details.reasoning_tokens > 0
    text = "".join(e.delta for e in resumed if e.type == "response.output_text.delta")
    assert text == resumed[-1].response.output_text
    [get] = emu.emulator.requests_to(f"/v1/responses/{response_id}")
    assert get["method"] == "GET"
    assert get["query"] == {"stream": "true", "starting_after": str(last_seen)}


def test_a_replay_from_the_start_repeats_every_event_once(client: openai.OpenAI) -> None:
    whole = list(background(client, stream=True))
    response_id = whole[0].response.id

    again = list(client.responses.retrieve(response_id, stream=True, starting_after=-1))

    assert [e.model_dump() for e in again] == [e.model_dump() for e in whole]


def test_a_non_streaming_background_response_can_be_polled_until_completed(
    client: openai.OpenAI,
) -> None:
    queued = background(client)
    assert queued.background is True and queued.status in ("queued", "in_progress")

    final = None
    for _ in range(200):  # a bounded number of polls, not a timing assertion
        final = client.responses.retrieve(queued.id)
        if final.status == "completed":
            break
        time.sleep(0.02)  # between polls only
    assert final is not None and final.status == "completed" and final.output_text


def test_background_with_store_false_is_refused(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as excinfo:
        client.responses.create(model="o3-mini", input="hi", background=True, store=False)

    assert error_of(excinfo)["param"] == "background"


def test_retrieving_an_unknown_response_is_a_404(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as excinfo:
        client.responses.retrieve("resp_missing", stream=True, starting_after=3)

    assert "resp_missing" in excinfo.value.message
