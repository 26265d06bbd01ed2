"""Overlapping turns in embedded SQLite mode, and every class of provider failure
through a real worker process: budgets end exact to the micro-dollar."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from accounts.models import User
from answers.replies import start_turn
from billing.models import Reservation, UsagePeriod
from conversations.models import Message
from llm.models import ModelProfile
from tests.chaos.conftest import ROOT, Processes, wait_for

pytestmark = [pytest.mark.slow]


def test_overlapping_turns_in_embedded_sqlite_mode_all_end_with_nothing_reserved(
    tmp_path: Path,
) -> None:
    turns = 20
    env = {key: value for key, value in os.environ.items()
           if key not in {"DATABASE_URL", "REDIS_URL", "OPENAI_API_KEY", "OPENAI_BASE_URL",
                          "DJANGO_SETTINGS_MODULE"}}
    env.update(VAR_DIR=str(tmp_path), SECRET_KEY="chaos-embedded-secret-key",
               MAX_LIVE_ANSWERS_PER_USER="1000", SENDS_PER_MINUTE="10000", LOG_LEVEL="ERROR")
    done = subprocess.run([sys.executable, "-m", "tests.chaos.embedded_turns", str(turns)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    assert lines, done.stdout[-3000:] + done.stderr[-3000:]
    result = json.loads(lines[-1].removeprefix("RESULT "))

    assert result["waves"] == 2
    assert result["live"] == 0
    assert result["statuses"] == {"done": 2 * turns}, result
    assert result["refused"] == {}
    assert result["reserved_is_zero"], result["reserved"]
    assert result["open_reservations"] == 0
    assert Decimal(result["org_spent"]) == Decimal(result["charged_sum"]) > 0
    assert Decimal(result["charged_sum"]) >= Decimal(result["cost_sum"]) > 0
    print(f"\nchaos: embedded SQLite, 2 waves of {turns} overlapping turns: {result}")


# Every way the provider refuses a request before any output: (fault, upstream attempts).
REJECTIONS = [
    ("rate_limit", 3),
    ("insufficient_quota", 1),
    ("server_error", 3),
    ("overloaded", 3),
    ("model_not_found", 1),
    ("unauthorized", 1),
    ("forbidden", 1),
    ("context_length_exceeded", 1),
    ("prompt_filter", 1),
]


def answer_calls(emulator: Any) -> list[dict[str, Any]]:
    """Streamed chat requests: answers, not the warm-up's title request."""
    return [e for e in emulator.requests_to("/chat/completions") if (e["body"] or {}).get("stream")]


def money() -> dict[tuple[int, int | None], tuple[Decimal, Decimal]]:
    return {(r.organization_id, r.user_id): (r.spent_usd, r.reserved_usd)
            for r in UsagePeriod.objects.all()}


@pytest.mark.django_db(transaction=True)
def test_every_provider_failure_class_costs_nothing_and_leaves_the_budget_untouched(
    alice: User, o3_mini: ModelProfile, emulator: Any, processes: Processes,
    private_task_queue: str, many_sends: None,
) -> None:
    processes.worker(queue=private_task_queue, LLM_MAX_ATTEMPTS="3")

    def answer(content: str) -> Message:
        message = start_turn(user=alice, organization_id=None, conversation_id=None,
                             content=content, reasoning_effort="low").assistant_message
        return wait_for(
            lambda: Message.objects.filter(pk=message.pk, status__in=Message.FINAL_STATUSES).first(),
            timeout=60, what=f"the answer to {content!r} to end")

    warm_up = answer("Warm up the budget")
    assert warm_up.status == Message.Status.DONE and warm_up.cost_usd > 0
    # Its title is billed too, after the answer: let that settle before measuring.
    wait_for(lambda: len(emulator.requests_to("/chat/completions")) > len(answer_calls(emulator))
             and not Reservation.objects.filter(settled_at=None).exists(),
             timeout=60, what="the warm-up's title to be billed")
    codes = {}
    for fault, attempts in REJECTIONS:
        before = money()
        calls = len(answer_calls(emulator))
        emulator.push({"fault": fault, "match": fault, "times": attempts, "retry_after": 0})

        message = answer(f"Provoke {fault}")

        assert message.status == Message.Status.FAILED, (fault, message.status)
        assert message.cost_usd == 0 and not message.usage_estimated, fault
        reservation = Reservation.objects.get(message=message)
        assert reservation.settled_at is not None and reservation.charged_usd == 0
        assert money() == before, fault  # to the micro-dollar, reservation released
        assert len(answer_calls(emulator)) - calls == attempts, fault
        codes[fault] = message.error_code
    assert all(codes.values())
    print(f"\nchaos: provider failures, each $0 with the budget untouched: {codes}")
