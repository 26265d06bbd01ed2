"""The streaming loop without Celery: ``run_generation`` against the emulator over HTTP.

Turns are started with ``start_turn`` inside the test transaction (its enqueue-on-commit
never fires), then answered in this thread by calling ``run_generation`` directly.
"""

from __future__ import annotations

import json
import threading
import time
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from answers import lifecycle
from answers.draft import AnswerDraft
from answers.engine import run_generation
from answers.lifecycle import Abandoned, claim
from answers.relay import Relay
from answers.replies import reap_stale_replies, start_turn
from billing.models import Reservation, UsagePeriod
from conversations.models import Message
from emulator.replies import split_text
from emulator.scenarios import DEFAULT_REFUSAL
from llm.tools import tool_schemas
from llm.types import Usage
from realtime.publishing import wait_until_sent
from realtime.replay import get_replay_store

pytestmark = pytest.mark.django_db

QUESTION = "Explain Euler's identity"


@pytest.fixture(autouse=True)
def offline_demo_provider(settings: Any, emulator: Any) -> None:
    """No key configured: the OpenAI profiles are served by the emulator."""
    settings.OPENAI_API_KEY = ""
    settings.LLM_MAX_ATTEMPTS = 3
    settings.LLM_MAX_RETRY_WAIT = 30


def begin(user: Any, content: str = QUESTION, effort: str | None = "medium") -> Message:
    turn = start_turn(
        user=user, organization_id=None, conversation_id=None, content=content,
        reasoning_effort=effort,
    )
    return turn.assistant_message


def answer(message: Message) -> Message:
    run_generation(message.pk)
    return Message.objects.get(pk=message.pk)


def upstream_calls(emulator: Any) -> list[dict[str, Any]]:
    return emulator.requests_to("/chat/completions")


def frames(message: Message) -> list[dict[str, Any]]:
    """Every delta and terminal frame published for the message (publishing is queued)."""
    assert wait_until_sent()
    return get_replay_store().read_sync(message.pk)


def deltas(message: Message) -> list[dict[str, Any]]:
    return [f for f in frames(message) if f["type"] == "delta" and not f.get("refusal")]


def streamed_text(message: Message) -> str:
    return "".join(f["text"] for f in deltas(message))


def message_writes(queries: CaptureQueriesContext) -> list[str]:
    """Statements that write a message row (the claim's and the ending's carry other work
    in the same statement, after a WITH)."""
    return [
        q["sql"] for q in queries.captured_queries
        if any(write in q["sql"] for write in ('UPDATE "conversations_message"',
                                               'INSERT INTO "conversations_message"'))
    ]


# --- The request ----------------------------------------------------------------------


def test_the_request_is_built_from_the_model_profile(alice: Any, org_a: Any, o3_mini: Any,
                                                     emulator: Any) -> None:
    org_a.developer_message = "Answer in British English."
    org_a.save(update_fields=["developer_message"])
    message = answer(begin(alice, effort="high"))

    assert message.status == Message.Status.DONE
    [call] = upstream_calls(emulator)
    assert call["method"] == "POST" and call["path"] == "/v1/chat/completions"
    assert call["headers"]["authorization"] == "Bearer offline-demo"
    assert call["body"] == {
        "model": "o3-mini",
        "messages": [
            {"role": "developer",
             "content": "Formatting re-enabled\n\nAnswer in British English."},
            {"role": "user", "content": QUESTION},
        ],
        "stream": True,
        "stream_options": {"include_usage": True},
        "reasoning_effort": "high",
        "max_completion_tokens": o3_mini.max_completion_tokens_by_effort["high"],
        "tools": tool_schemas(),
    }
    assert call["body"]["max_completion_tokens"] == 50_000 == message.max_completion_tokens


def test_the_request_offers_the_built_in_tools_with_their_schemas(alice: Any, o3_mini: Any,
                                                                  emulator: Any) -> None:
    answer(begin(alice))

    tools = {t["function"]["name"]: t for t in upstream_calls(emulator)[0]["body"]["tools"]}
    assert set(tools) == {"calculate", "convert_units"}
    assert all(t["type"] == "function" for t in tools.values())
    assert tools["calculate"]["function"]["parameters"]["required"] == ["expression"]
    assert tools["convert_units"]["function"]["parameters"]["required"] == [
        "value", "from_unit", "to_unit"
    ]


def test_the_request_never_carries_parameters_reasoning_models_reject(alice: Any, o3_mini: Any,
                                                                       emulator: Any) -> None:
    answer(begin(alice, effort="low"))

    body = upstream_calls(emulator)[0]["body"]
    for rejected in ("temperature", "top_p", "max_tokens", "parallel_tool_calls"):
        assert rejected not in body
    assert body["reasoning_effort"] == "low"
    assert body["max_completion_tokens"] == o3_mini.max_completion_tokens_by_effort["low"]


# --- Usage and cost -------------------------------------------------------------------


def test_usage_and_cost_bill_reasoning_once_and_cached_input_at_the_cached_price(
    alice: Any, o3_mini: Any, emulator: Any
) -> None:
    emulator.push({"cached_tokens": 1024, "reasoning_tokens": 512, "reply_tokens": 100})
    long_question = "Summarise this: " + "tokens " * 1500
    message = answer(begin(alice, content=long_question))

    assert message.status == Message.Status.DONE
    assert message.cached_tokens == 1024
    assert message.reasoning_tokens == 512
    assert message.completion_tokens == 512 + 100  # reasoning is already inside
    assert message.prompt_tokens > 1024
    assert not message.usage_estimated
    uncached = message.prompt_tokens - 1024
    expected = (
        (uncached * Decimal("1.10") + 1024 * Decimal("0.55") + 612 * Decimal("4.40"))
        / Decimal(1_000_000)
    ).quantize(Decimal("0.000001"))
    assert message.cost_usd == expected
    reservation = Reservation.objects.get(message=message)
    assert reservation.settled_at is not None and not reservation.estimated
    assert reservation.charged_usd == expected
    for period in UsagePeriod.objects.all():
        assert period.spent_usd == expected
        assert period.reserved_usd == 0
    done = frames(message)[-1]
    assert done["type"] == "done"
    # The emulator reports the prefix this request wrote to the cache; o3-mini has no
    # cache-write price, so those tokens are billed as input (in ``uncached`` above).
    assert message.cache_write_tokens > 0
    assert done["usage"] == {"prompt_tokens": message.prompt_tokens, "cached_tokens": 1024,
                             "completion_tokens": 612, "reasoning_tokens": 512,
                             "cache_write_tokens": message.cache_write_tokens}
    assert done["cost_usd"] == str(expected)


def test_a_redelivered_task_makes_one_upstream_call(alice: Any, o3_mini: Any,
                                                    emulator: Any) -> None:
    message = begin(alice)
    run_generation(message.pk)
    run_generation(message.pk)

    assert len(upstream_calls(emulator)) == 1
    message.refresh_from_db()
    assert message.status == Message.Status.DONE
    assert Reservation.objects.get(message=message).charged_usd == message.cost_usd
    assert UsagePeriod.objects.filter(user=alice).get().spent_usd == message.cost_usd
    assert [f["type"] for f in frames(message)].count("done") == 1


# --- Bounded writes and frames ------------------------------------------------------------


def _writes_for_answer(user: Any, emulator: Any, tokens: int) -> int:
    emulator.push({"reply_tokens": tokens})
    message = begin(user, content=f"Answer in {tokens} tokens")
    with CaptureQueriesContext(connection) as queries:
        run_generation(message.pk)
    message.refresh_from_db()
    assert message.status == Message.Status.DONE
    assert message.completion_tokens - message.reasoning_tokens == tokens
    return len(message_writes(queries))


def test_database_writes_per_answer_do_not_grow_with_its_length(alice: Any, o3_mini: Any,
                                                                emulator: Any) -> None:
    emulator.config.tokens_per_second = 50_000

    short = _writes_for_answer(alice, emulator, 20)
    long = _writes_for_answer(alice, emulator, 2000)

    assert short == long == 2  # the claim and the final state


def test_text_checkpoints_stop_at_the_configured_maximum(alice: Any, o3_mini: Any, emulator: Any,
                                                         settings: Any) -> None:
    settings.STREAM_CHECKPOINT_SECONDS = 0  # a checkpoint is due after every chunk
    settings.STREAM_MAX_CHECKPOINTS = 4
    emulator.config.tokens_per_second = 50_000

    short = _writes_for_answer(alice, emulator, 20)
    long = _writes_for_answer(alice, emulator, 2000)

    assert short == long == 2 + 4


def test_a_long_flush_window_sends_the_first_token_at_once_and_the_rest_in_one_frame(
    alice: Any, o3_mini: Any, emulator: Any, settings: Any
) -> None:
    settings.STREAM_FLUSH_MS = 10**9
    emulator.push({"reply_tokens": 500, "chunk_tokens": 1})
    message = answer(begin(alice))

    sent = deltas(message)
    assert [f["seq"] for f in sent] == [1, 2]
    assert sent[0]["text"] == message.content[: len(sent[0]["text"])]
    assert "".join(f["text"] for f in sent) == message.content
    done = frames(message)[-1]
    assert done["type"] == "done" and done["seq"] == 3


def test_a_zero_flush_window_sends_one_frame_per_upstream_chunk(alice: Any, o3_mini: Any,
                                                                emulator: Any,
                                                                settings: Any) -> None:
    settings.STREAM_FLUSH_MS = 0
    reply = "One small step for a model, one giant leap for the test suite."
    pieces = [text for text, _ in split_text(reply, 2)]
    emulator.push({"reply": reply, "chunk_tokens": 2})
    message = answer(begin(alice))

    sent = deltas(message)
    assert [f["text"] for f in sent] == pieces
    assert [f["seq"] for f in sent] == list(range(1, len(pieces) + 1))
    assert message.content == reply


# --- Faults: what the user is told, and how often we called upstream --------------------------


def test_a_rate_limit_with_a_short_retry_after_is_retried_and_the_answer_completes(
    alice: Any, o3_mini: Any, emulator: Any
) -> None:
    emulator.push({"fault": "rate_limit", "retry_after": 0})
    message = answer(begin(alice))

    assert len(upstream_calls(emulator)) == 2
    assert message.status == Message.Status.DONE
    assert message.error_code == ""
    assert message.content == streamed_text(message) != ""


def test_a_rate_limit_asking_to_wait_too_long_fails_at_once_and_says_when_to_try_again(
    alice: Any, o3_mini: Any, emulator: Any, settings: Any
) -> None:
    settings.LLM_MAX_RETRY_WAIT = 5
    emulator.push({"fault": "rate_limit", "retry_after": 42})
    message = answer(begin(alice))

    assert len(upstream_calls(emulator)) == 1
    assert message.status == Message.Status.FAILED
    assert message.error_code == "rate_limited"
    assert "Try again in about 42 seconds" in message.error_detail
    error = frames(message)[-1]
    assert error["type"] == "error" and error["code"] == "rate_limited"
    assert error["detail"] == message.error_detail


def test_an_exhausted_provider_quota_is_not_retried(alice: Any, o3_mini: Any,
                                                    emulator: Any) -> None:
    emulator.push({"fault": "insufficient_quota"})
    message = answer(begin(alice))

    assert len(upstream_calls(emulator)) == 1
    assert message.status == Message.Status.FAILED
    assert message.error_code == "provider_quota"
    assert "admin" in message.error_detail


def test_a_server_error_is_retried_up_to_the_attempt_limit_then_fails(alice: Any, o3_mini: Any,
                                                                      emulator: Any,
                                                                      settings: Any) -> None:
    emulator.push({"fault": "server_error", "times": 3})
    message = answer(begin(alice))

    assert len(upstream_calls(emulator)) == settings.LLM_MAX_ATTEMPTS == 3
    assert message.status == Message.Status.FAILED
    assert message.error_code == "upstream_error"
    assert message.content == ""


def test_a_missing_model_is_reported_as_unavailable_naming_the_profile(alice: Any, o3_mini: Any,
                                                                       emulator: Any) -> None:
    o3_mini.display_name = "Reasoner (o3-mini)"
    o3_mini.save(update_fields=["display_name"])
    emulator.push({"fault": "model_not_found"})
    message = answer(begin(alice))

    assert len(upstream_calls(emulator)) == 1
    assert message.status == Message.Status.FAILED
    assert message.error_code == "model_unavailable"
    assert "Reasoner (o3-mini)" in message.error_detail


@pytest.mark.parametrize(
    ("fault", "code"),
    [
        pytest.param("context_length_exceeded", "context_too_long", id="context too long"),
        pytest.param("prompt_filter", "content_filtered", id="azure prompt filter"),
    ],
)
def test_a_rejected_prompt_fails_with_a_specific_code_after_one_attempt(
    alice: Any, o3_mini: Any, emulator: Any, fault: str, code: str
) -> None:
    emulator.push({"fault": fault})
    message = answer(begin(alice))

    assert len(upstream_calls(emulator)) == 1
    assert message.status == Message.Status.FAILED
    assert message.error_code == code
    assert message.error_detail and "HTTP" not in message.error_detail


def test_a_content_filter_stop_mid_answer_fails_but_keeps_the_text_shown(alice: Any, o3_mini: Any,
                                                                         emulator: Any) -> None:
    emulator.push({"fault": "content_filter", "after_tokens": 8})
    message = answer(begin(alice))

    assert len(upstream_calls(emulator)) == 1
    assert message.status == Message.Status.FAILED
    assert message.error_code == "content_filtered"
    assert message.finish_reason == "content_filter"
    assert message.content != "" and message.content == streamed_text(message)
    assert not message.usage_estimated  # the usage chunk still came


def test_a_refusal_is_a_finished_answer_not_an_error(alice: Any, o3_mini: Any,
                                                     emulator: Any) -> None:
    emulator.push({"fault": "refusal"})
    message = answer(begin(alice))

    assert message.status == Message.Status.DONE
    assert message.refusal == DEFAULT_REFUSAL
    assert message.content == ""
    assert message.error_code == ""
    done = frames(message)[-1]
    assert done["type"] == "done" and done["refusal"] == DEFAULT_REFUSAL


def test_a_budget_spent_on_reasoning_finishes_with_a_notice_about_reasoning_effort(
    alice: Any, o3_mini: Any, emulator: Any
) -> None:
    emulator.push({"fault": "length_empty"})
    message = answer(begin(alice))

    assert message.status == Message.Status.DONE
    assert message.finish_reason == "length"
    assert message.content == ""
    assert message.error_code == ""
    assert "reasoning effort" in message.error_detail
    assert frames(message)[-1]["notice"] == message.error_detail


def test_a_connection_dropped_after_text_fails_keeps_the_text_and_is_not_rerun(
    alice: Any, o3_mini: Any, emulator: Any
) -> None:
    emulator.push({"fault": "drop", "after_tokens": 6})
    message = answer(begin(alice))

    assert len(upstream_calls(emulator)) == 1
    assert message.status == Message.Status.FAILED
    assert message.error_code == "upstream_error"
    assert message.content != "" and message.content == streamed_text(message)
    assert message.usage_estimated  # no usage chunk arrived


def test_an_error_event_mid_stream_fails_and_keeps_the_text(alice: Any, o3_mini: Any,
                                                            emulator: Any) -> None:
    emulator.push({"fault": "error_event", "after_tokens": 6})
    message = answer(begin(alice))

    assert len(upstream_calls(emulator)) == 1
    assert message.status == Message.Status.FAILED
    assert message.error_code == "upstream_error"
    assert message.content != "" and message.content == streamed_text(message)


def test_refused_credentials_tell_an_admin_what_to_fix_without_the_provider_body(
    alice: Any, o3_mini: Any, emulator: Any
) -> None:
    emulator.push({"fault": "unauthorized"})
    message = answer(begin(alice))

    assert len(upstream_calls(emulator)) == 1
    assert message.status == Message.Status.FAILED
    assert message.error_code == "upstream_error"
    assert "admin" in message.error_detail and "API key" in message.error_detail
    for leaked in ("Incorrect API key provided", "sk-", "offline-demo", "platform.openai.com"):
        assert leaked not in message.error_detail


# --- Tools -------------------------------------------------------------------------------


def test_a_calculate_tool_call_is_run_and_its_exact_result_sent_back(alice: Any, o3_mini: Any,
                                                                     emulator: Any) -> None:
    arguments = {"expression": "12*(3+4)/5"}
    emulator.push({"tool_call": {"name": "calculate", "arguments": arguments}})
    message = answer(begin(alice, content="What is 12*(3+4)/5?"))

    first, second = upstream_calls(emulator)
    assistant, tool = second["body"]["messages"][-2:]
    assert assistant["role"] == "assistant"
    [call] = assistant["tool_calls"]
    assert call["type"] == "function"
    assert call["function"] == {"name": "calculate",
                                "arguments": json.dumps(arguments, separators=(",", ":"))}
    result = {"expression": "12*(3+4)/5", "exact": "84/5", "decimal": "16.8"}
    assert tool == {"role": "tool", "tool_call_id": call["id"], "content": json.dumps(result)}
    assert second["body"]["messages"][:-2] == first["body"]["messages"]
    # The second call is reserved before it is sent (the budget has room): its own whole cap.
    assert second["body"]["max_completion_tokens"] == first["body"]["max_completion_tokens"]

    assert message.status == Message.Status.DONE
    assert message.tool_calls == [
        {"name": "calculate", "arguments": call["function"]["arguments"], "result": result,
         "ok": True}
    ]
    assert message.content != ""
    assert [f for f in frames(message) if f["type"] == "done"]
    reservation = Reservation.objects.get(message=message)
    assert reservation.charged_usd == message.cost_usd <= reservation.amount_usd


# --- The reaper ------------------------------------------------------------------------------


def test_the_reaper_interrupts_an_answer_whose_worker_died_and_a_late_finish_changes_nothing(
    alice: Any, o3_mini: Any, emulator: Any
) -> None:
    message = claim(begin(alice).pk)
    assert message is not None
    worker = Relay(AnswerDraft(message.pk))
    worker.add_text("The answer so far")
    worker.add_text(" is partial.")
    worker.flush()
    assert wait_until_sent()
    Message.objects.filter(pk=message.pk).update(
        lease_expires_at=timezone.now() - timedelta(seconds=1)
    )

    assert reap_stale_replies() == 1

    reaped = Message.objects.get(pk=message.pk)
    assert reaped.status == Message.Status.INTERRUPTED
    assert reaped.content == "The answer so far is partial."
    assert reaped.error_code == "interrupted"
    assert reaped.usage_estimated
    assert reaped.cost_usd > 0
    reservation = Reservation.objects.get(message=message)
    assert reservation.settled_at is not None and reservation.estimated
    assert reservation.charged_usd == reaped.cost_usd
    assert frames(message)[-1]["code"] == "interrupted"

    worker.add_text(" And then the worker came back.")
    late = worker.draft
    late.prompt_tokens = 20
    late.usage = Usage(prompt_tokens=20, completion_tokens=400, reasoning_tokens=300)
    late.end(Message.Status.DONE, finish_reason="stop")
    with pytest.raises(Abandoned):
        lifecycle.finish(message, late)

    after = Message.objects.get(pk=message.pk)
    assert (after.status, after.content, after.cost_usd) == (
        Message.Status.INTERRUPTED, reaped.content, reaped.cost_usd
    )
    assert Reservation.objects.get(message=message).charged_usd == reaped.cost_usd
    for period in UsagePeriod.objects.all():
        assert period.spent_usd == reaped.cost_usd
        assert period.reserved_usd == 0
    assert [f["type"] for f in frames(message)].count("done") == 0
    assert reap_stale_replies() == 0


@pytest.mark.django_db(transaction=True)
def test_a_worker_still_streaming_when_reaped_neither_saves_nor_charges_again(
    alice: Any, o3_mini: Any, emulator: Any, settings: Any
) -> None:
    settings.STREAM_CHECKPOINT_SECONDS = 1  # the worker notices at its next checkpoint
    settings.STREAM_LEASE_SECONDS = 3600  # keep the monitor from renewing the lease we expire
    emulator.config.tokens_per_second = 40
    emulator.config.reply_tokens = 200  # about five seconds
    message = begin(alice)
    worker = threading.Thread(target=run_generation, args=(message.pk,), daemon=True)
    worker.start()
    deadline = time.monotonic() + 20
    while len(deltas(message)) < 3:
        assert time.monotonic() < deadline, "the answer never started streaming"
        time.sleep(0.05)

    reaped = 0
    while not reaped:  # the monitor thread may renew a lease once; expire it again
        assert time.monotonic() < deadline
        Message.objects.filter(pk=message.pk).update(
            lease_expires_at=timezone.now() - timedelta(seconds=1)
        )
        reaped = reap_stale_replies()
    interrupted = Message.objects.get(pk=message.pk)
    worker.join(timeout=30)

    assert not worker.is_alive()
    after = Message.objects.get(pk=message.pk)
    assert after.status == Message.Status.INTERRUPTED
    assert after.content == interrupted.content != ""
    assert after.cost_usd == interrupted.cost_usd > 0
    assert after.completion_tokens - after.reasoning_tokens < 200  # the rest was never saved
    reservation = Reservation.objects.get(message=message)
    assert reservation.estimated and reservation.charged_usd == after.cost_usd
    for period in UsagePeriod.objects.all():
        assert period.spent_usd == after.cost_usd
        assert period.reserved_usd == 0
    assert [f["type"] for f in frames(message)].count("done") == 0
    assert len(upstream_calls(emulator)) == 1
