"""The stall clock of an answer in progress (answers.live).

Until a request's first content only the first-content allowance (``LLM_READ_TIMEOUT``)
bounds the silence: a Responses stream sends ``response.created`` at once and then
nothing while the model reasons, minutes at high effort. After content, silence longer
than ``STREAM_IDLE_TIMEOUT`` is a stall. Answers run for real against the emulator over
HTTP in this thread, as in ``test_lifecycle_faults.py``.
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator, Iterator
from typing import Any, cast

import pytest

from accounts.models import User
from answers.engine import engine, run_generation
from answers.lifecycle import answer_prices
from answers.live import LiveReply, Monitor
from answers.replies import start_turn
from conversations.models import Message
from llm import client as llm
from llm.models import ModelProfile
from llm.pricing import usage_cost
from llm.stream import AsyncChatStream, open_stream_async
from llm.types import (
    ChatRequest,
    Finished,
    ReasoningSummaryDelta,
    ResponseStarted,
    TextDelta,
    Usage,
    UsageReport,
)
from tests.llm.test_responses_api import make_responses_profile

pytestmark = pytest.mark.django_db

REPLY = "Rayleigh scattering sends the short blue wavelengths all over the sky."


@pytest.fixture
def responses_profile(settings: Any, emulator: Any) -> ModelProfile:
    settings.OPENAI_API_KEY = ""  # the offline demo model answers OpenAI profiles
    # Below the least the environment may set (5), as in test_lifecycle_faults.py: the
    # silences these answers sit through stay a few seconds long.
    settings.STREAM_IDLE_TIMEOUT = 1
    return make_responses_profile()


def answer(user: User, effort: str = "medium") -> Message:
    turn = start_turn(user=user, organization_id=None, conversation_id=None,
                      content="Why is the sky blue?", reasoning_effort=effort,
                      profile_name="o3-mini-responses")
    run_generation(turn.assistant_message.pk)
    return Message.objects.get(pk=turn.assistant_message.pk)


def billed_as_reported(message: Message) -> bool:
    cost = usage_cost(answer_prices(message).at_tier(message.service_tier),
                      Usage(**cast("dict[str, Any]", message.usage_dict())))
    return not message.usage_estimated and message.cost_usd == cost > 0


# --- Phases of one request ----------------------------------------------------------------


def test_a_lifecycle_event_does_not_end_the_first_content_phase(settings: Any) -> None:
    settings.STREAM_IDLE_TIMEOUT = 5
    settings.LLM_READ_TIMEOUT = 600
    live = LiveReply(1)
    live.begin_round()

    live.heard(ResponseStarted("resp_1"))
    later = time.monotonic() + 60  # a minute of silent reasoning after response.created

    assert live.awaiting_content
    assert not live.stalled_at(later) and live.making_progress(later)
    assert live.stalled_at(time.monotonic() + 601) and not live.making_progress(
        time.monotonic() + 601
    )


@pytest.mark.parametrize(
    "content",
    [TextDelta("Hi"), ReasoningSummaryDelta("Thinking about light"), Finished("stop"),
     UsageReport(Usage(prompt_tokens=10, completion_tokens=5))],
    ids=["text", "reasoning summary", "finish", "usage"],
)
def test_content_ends_the_first_content_phase_and_starts_the_stall_clock(
    settings: Any, content: object
) -> None:
    settings.STREAM_IDLE_TIMEOUT = 5
    settings.LLM_READ_TIMEOUT = 600
    live = LiveReply(1)
    live.begin_round()
    live.heard(ResponseStarted("resp_1"))

    live.heard(content)

    assert not live.awaiting_content
    assert not live.stalled_at(time.monotonic() + 4)
    assert live.stalled_at(time.monotonic() + 6) and not live.making_progress(
        time.monotonic() + 6
    )


def test_each_tool_round_or_retry_starts_a_new_first_content_phase(settings: Any) -> None:
    settings.STREAM_IDLE_TIMEOUT = 5
    settings.LLM_READ_TIMEOUT = 600
    live = LiveReply(1)
    live.begin_round()
    live.heard(TextDelta("first round"))

    live.begin_round()

    assert live.awaiting_content
    assert not live.stalled_at(time.monotonic() + 60)


def test_a_stall_before_any_content_says_nothing_came(settings: Any) -> None:
    live = LiveReply(1)
    live.begin_round()
    live.stall()
    assert live.stalled and live.stalled_waiting

    after_content = LiveReply(2)
    after_content.heard(TextDelta("Hi"))
    after_content.stall()
    assert after_content.stalled and not after_content.stalled_waiting


def test_a_background_response_is_asked_about_and_waited_on_while_in_progress() -> None:
    live = LiveReply(1)
    live.begin_round()
    live.last_activity -= 1000  # the first-content allowance ran out

    assert live.keeps_waiting("in_progress")
    assert live.silence(time.monotonic()) < 5  # a fresh allowance
    assert live.keeps_waiting("in_progress")


def test_a_background_response_stuck_in_queued_gets_one_more_allowance_only() -> None:
    live = LiveReply(1)
    live.begin_round()

    assert live.keeps_waiting("queued")
    assert not live.keeps_waiting("queued")
    assert not live.keeps_waiting("failed") and not live.keeps_waiting("")


@pytest.fixture
def reasoning_in_background(
    emulator: Any, responses_profile: ModelProfile
) -> Iterator[AsyncChatStream]:
    """A background response the emulator keeps reasoning for a minute, read on the
    worker's loop up to its ``response.created``; its connection is closed at the end."""
    emulator.push({"think_ms": 60_000})
    request = ChatRequest(messages=[{"role": "user", "content": "Why is the sky blue?"}],
                          reasoning_effort="high", max_completion_tokens=1000, background=True)
    reading: list[AsyncGenerator[Any, None]] = []

    async def open_and_read_the_start(_: Any) -> AsyncChatStream:
        stream = await open_stream_async(responses_profile, request)
        reading.append(aiter(stream))
        assert isinstance(await anext(reading[0]), ResponseStarted)
        return stream

    stream = engine.run_here(open_and_read_the_start)
    yield stream
    stream.close()
    engine.run_here(lambda _: reading[0].aclose())


def _monitor_tick_on(live: LiveReply) -> None:
    monitor = Monitor()
    monitor._replies = {live.message_id: live}
    monitor.tick()
    for _ in range(400):  # the provider is asked off the monitor thread
        if not live.checking:
            return
        time.sleep(0.025)
    raise AssertionError("the status check did not end")


def test_the_monitor_asks_the_provider_and_keeps_a_background_answer_reasoning_alive(
    responses_profile: ModelProfile, emulator: Any, reasoning_in_background: AsyncChatStream,
) -> None:
    stream = reasoning_in_background
    live = LiveReply(0)
    live.attach(stream)
    live.last_activity -= 10_000  # its first-content allowance ran out long ago

    _monitor_tick_on(live)

    assert not live.stalled and live.awaiting_content
    assert live.making_progress(time.monotonic())
    [status] = [e for e in emulator.journal_snapshot()
                if e["method"] == "GET" and e["path"] == f"/v1/responses/{stream.response_id}"]
    assert status["query"] == {}
    llm.cancel_response(responses_profile, stream.response_id)


def test_the_monitor_stalls_a_background_answer_its_provider_no_longer_works_on(
    responses_profile: ModelProfile, emulator: Any, reasoning_in_background: AsyncChatStream,
) -> None:
    stream = reasoning_in_background
    llm.cancel_response(responses_profile, stream.response_id)
    live = LiveReply(0)
    live.attach(stream)
    live.last_activity -= 10_000

    _monitor_tick_on(live)

    assert live.stalled and live.stalled_waiting and stream.closed


# --- Real answers through the emulator ------------------------------------------------------


def test_a_model_silent_after_response_created_for_longer_than_the_idle_timeout_is_not_a_stall(
    alice: User, responses_profile: ModelProfile, emulator: Any,
) -> None:
    emulator.push({"think_ms": 2500, "reply": REPLY})  # 2.5 s of silence, idle timeout 1 s

    message = answer(alice)

    assert message.status == Message.Status.DONE, message.error_detail
    assert message.content == REPLY
    assert billed_as_reported(message)
    [call] = emulator.requests_to("/responses")
    assert call["status"] == 200


def test_a_background_answer_reasoning_past_the_first_content_allowance_is_kept_alive(
    alice: User, responses_profile: ModelProfile, emulator: Any, settings: Any,
) -> None:
    """No byte for longer than the read timeout: the provider, asked, says the response
    is in progress, so it is followed again from its last event rather than failed or
    sent afresh, and billed once."""
    settings.LLM_READ_TIMEOUT = 2  # the clients of this test are built after this
    emulator.push({"think_ms": 3500, "reply": REPLY})

    message = answer(alice, effort="high")

    assert message.status == Message.Status.DONE, message.error_detail
    assert message.content == REPLY
    assert billed_as_reported(message)
    journal = [(e["method"], e["path"], e["query"]) for e in emulator.journal_snapshot()]
    creates = [e for e in journal if e[:2] == ("POST", "/v1/responses")]
    follows = [e for e in journal if e[0] == "GET" and e[2].get("stream") == "true"]
    assert len(creates) == 1
    assert follows and all(e[2]["starting_after"] == "1" for e in follows)
    assert not [e for e in journal if e[1].endswith("/cancel")]


def test_silence_after_content_longer_than_the_idle_timeout_is_still_a_stall(
    alice: User, responses_profile: ModelProfile, emulator: Any,
) -> None:
    emulator.push({"fault": "stall", "after_tokens": 5, "stall_seconds": 30, "reply": REPLY})

    message = answer(alice)

    assert message.status == Message.Status.FAILED
    assert "stopped sending" in message.error_detail
    assert message.content and REPLY.startswith(message.content)
    assert message.usage_estimated and message.cost_usd > 0  # it had produced text
