"""A worker process killed (SIGKILL) or stopped (SIGTERM, a deploy whose drain runs out)
mid-answer on a high-effort Responses profile, and killed mid-answer at xhigh effort.

The answer runs as a background response at the provider, so it is not interrupted:
after a SIGKILL, once the dead worker's lease lapses, the reaper (run here, as beat would
run it) hands it back; after a SIGTERM the worker hands it back itself at its drain
deadline and exits. A second worker resumes the provider's stream right after the last
checkpoint, and a tab that followed the answer throughout ends with exactly the
provider's text.
The provider sees one create (the only ``POST /v1/responses``), a status poll and one
resume, and the answer is billed once, to the micro-dollar, at the usage the provider
reports for that request: the message, its reservation and the org's month agree.
"""

from __future__ import annotations

import asyncio
import signal
import threading
import time
from decimal import Decimal
from typing import Any, cast

import openai
import pytest
from django.conf import settings

from accounts.models import User
from answers import reaper
from answers.lifecycle import answer_prices
from answers.replies import start_turn
from billing.models import Reservation, UsagePeriod
from conversations.models import Message
from llm.pricing import usage_cost
from llm.types import Usage
from realtime.replay import read_tail
from tests.chaos.conftest import Processes, tab_for, wait_for
from tests.chaos.tabs import Tab
from tests.llm.test_responses_api import make_responses_profile

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

TAG = "resume-after-kill"
REPLY = " ".join(f"Point {n}: blue light scatters more than red." for n in range(1, 25))
REASONING_TOKENS = 400
BEYOND_CHECKPOINT = 5  # deltas the tab must have been shown past the checkpoint


def follow_in_thread(tab: Tab, message_id: int) -> threading.Thread:
    """A tab reloaded onto the answer: it resumes from seq 0 and follows it to the end."""

    async def follow() -> None:
        tab.answer.message_id = message_id
        await tab.connect()
        await tab.resume()
        await tab.follow()
        await tab.close()

    thread = threading.Thread(target=asyncio.run, args=(follow(),), daemon=True)
    thread.start()
    return thread


def reported_usage(create: dict[str, Any]) -> Usage:
    """What the provider reports for this request: the same body sent again in the
    foreground, with the same scripted reply."""
    body = {k: v for k, v in create["body"].items() if k not in ("background", "stream")}
    client = openai.OpenAI(base_url=settings.EMULATOR_URL + "/v1", api_key="x", max_retries=0)
    usage = client.responses.create(**{**body, "store": False}).usage
    assert usage is not None
    return Usage(prompt_tokens=usage.input_tokens,
                 cached_tokens=usage.input_tokens_details.cached_tokens,
                 completion_tokens=usage.output_tokens,
                 reasoning_tokens=usage.output_tokens_details.reasoning_tokens)


@pytest.mark.parametrize(("stop", "effort"), [
    pytest.param(signal.SIGKILL, "high", id="SIGKILL"),
    pytest.param(signal.SIGTERM, "high", id="SIGTERM"),
    pytest.param(signal.SIGKILL, "xhigh", id="SIGKILL-xhigh"),
])
def test_a_worker_stopped_mid_answer_is_replaced_by_one_that_resumes_its_background_response(
    alice: User, emulator: Any, processes: Processes, private_task_queue: str,
    many_sends: None, stop: signal.Signals, effort: str,
) -> None:
    started = time.monotonic()
    profile = make_responses_profile() if effort == "high" else make_responses_profile(
        "gpt-6-sol-responses", model="gpt-6-sol",
        reasoning_efforts=["low", "medium", "high", "xhigh"])
    _, base = processes.web()
    # One checkpoint only: the deltas after it are all in the replay buffer, none saved.
    # A one-second drain: a SIGTERM'd worker hands the answer back long before it ends.
    first = processes.worker(queue=private_task_queue, STREAM_MAX_CHECKPOINTS="1",
                             WORKER_DRAIN_SECONDS="1", BACKGROUND_EFFORTS="high,xhigh")
    script = {"match": TAG, "reply": REPLY, "reasoning_tokens": REASONING_TOKENS}
    emulator.push({**script, "tokens_per_second": 40})
    message = start_turn(user=alice, organization_id=None, conversation_id=None,
                         content=f"Chaos question {TAG}", reasoning_effort=effort,
                         profile_name=profile.name).assistant_message
    tab = tab_for(alice, base)
    following = follow_in_thread(tab, message.pk)

    def shown_past_checkpoint() -> bool:
        saved = Message.objects.get(pk=message.pk)
        return (saved.provider_seq is not None
                and tab.answer.last_seq >= saved.stream_seq + BEYOND_CHECKPOINT)

    wait_for(shown_past_checkpoint, timeout=60, what="text shown beyond the first checkpoint")
    processes.signal(first, stop)
    assert first.process.wait(timeout=30) == (-signal.SIGKILL if stop == signal.SIGKILL else 0)
    killed = Message.objects.get(pk=message.pk)
    assert killed.status == Message.Status.STREAMING and killed.claims == 1
    assert read_tail(message.pk, after_seq=killed.stream_seq).seq >= (
        killed.stream_seq + BEYOND_CHECKPOINT
    )

    # Another worker, once the killed one's task is past the visibility timeout (2 s);
    # its redelivery finds the lease still running and does nothing, and the reaper
    # hands the answer back once the lease lapsed.
    time.sleep(3)
    processes.worker(queue=private_task_queue)

    def resumed_and_ended() -> bool:
        reaper.reap_stale_replies()
        return not Message.objects.filter(pk=message.pk, status__in=Message.LIVE_STATUSES).exists()

    wait_for(resumed_and_ended, timeout=90, what="the answer to be resumed and end", every=1.0)
    following.join(timeout=60)
    assert not following.is_alive(), "the tab never saw the answer end"

    done = Message.objects.get(pk=message.pk)
    assert (done.status, done.claims, done.content) == (Message.Status.DONE, 2, REPLY)
    answer = tab.answer
    assert answer.final is not None and answer.final["type"] == "done"
    assert answer.text == REPLY and tab.snapshots == 0
    assert sorted(answer.parts) == list(range(1, answer.last_seq + 1)) and answer.last_seq == (
        done.stream_seq
    )

    response_id = killed.provider_response_id
    journal = emulator.journal_snapshot()
    # Exactly one upstream response: the resume never sent the request again.
    creates = [e for e in journal if e["method"] == "POST" and e["path"] == "/v1/responses"]
    assert len(creates) == 1 and creates[0]["body"]["background"] is True
    assert creates[0]["body"]["reasoning"]["effort"] == effort
    follows = [e for e in journal if response_id in e["path"]]
    # Its status (not stuck in the queue), one resume after the checkpoint, the delete.
    assert [(e["method"], e["query"]) for e in follows] == [
        ("GET", {}),
        ("GET", {"stream": "true", "starting_after": str(killed.provider_seq)}),
        ("DELETE", {}),
    ]

    logs = "".join(child.log.read_text(errors="replace") for child in processes.children)
    assert "differs from the text shown" not in logs

    emulator.push(script)
    usage = reported_usage(creates[0])
    assert Usage(**cast("dict[str, Any]", done.usage_dict())) == usage and not done.usage_estimated
    assert usage.reasoning_tokens == REASONING_TOKENS
    cost = usage_cost(answer_prices(done).at_tier(done.service_tier), usage)
    reservation = Reservation.objects.get(message=done)
    assert reservation.charged_usd == done.cost_usd == cost > 0 and not reservation.estimated
    rows = list(UsagePeriod.objects.filter(user__isnull=True))
    charged = sum((r.charged_usd or Decimal(0) for r in Reservation.objects.all()), Decimal(0))
    assert sum((r.reserved_usd for r in rows), Decimal(0)) == 0
    assert sum((r.spent_usd for r in rows), Decimal(0)) == charged == cost
    print(f"\nchaos: 1 {stop.name} mid-answer at {effort}, resumed after provider event {killed.provider_seq} "
          f"(frame {killed.stream_seq}, tab at {killed.stream_seq + BEYOND_CHECKPOINT}+), "
          f"{answer.last_seq} frames, ${done.cost_usd}, {time.monotonic() - started:.0f}s")
