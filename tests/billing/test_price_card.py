"""Answers billed by the provider's price card, end to end through the emulator: what the
done frame says, the Message, the ledger (the reservation and both budget rows) and the
usage page all hold the published formula to the micro-dollar.

gpt-6.2-sol (shared/reference/todays-models.md §1): $2.00 input, $0.10 cached input,
$2.50 cache writes, $10.00 output per 1M; above 272,000 input tokens the whole request
at 2x the input-side rates and 1.5x the output rate.
"""

from __future__ import annotations

import csv
import io
from decimal import Decimal
from typing import Any

import pytest
from django.test import Client

from accounts.models import Organization, User
from answers.engine import run_generation
from answers.replies import start_turn
from billing.models import Reservation, UsagePeriod
from conversations.models import Message
from emulator.tokens import count_tokens
from llm.catalog.sync import sync_catalog
from llm.models import ModelProfile
from realtime.publishing import wait_until_sent
from realtime.replay import get_replay_store
from tests.accounts.factories import as_text

pytestmark = [pytest.mark.django_db, pytest.mark.urls("tests.accounts.urls")]

M = Decimal(1_000_000)
REPLY = "Forty-two, once the units are right."
REASONING = 100


@pytest.fixture
def sol(settings: Any, emulator: Any) -> ModelProfile:
    """gpt-6.2-sol as sync_models writes it from the catalog, answered by the emulator."""
    settings.OPENAI_API_KEY = ""
    settings.LLM_MAX_ATTEMPTS = 1
    sync_catalog(listing=None)
    profile = ModelProfile.objects.get(catalog_key="openai:gpt-6.2-sol")
    # A completion cap whose worst case holds a 272,001-token request's whole bill.
    ModelProfile.objects.filter(pk=profile.pk).update(
        max_completion_tokens=120_000, max_completion_tokens_by_effort={},
        reasoning_summaries=False,
    )
    profile.refresh_from_db()
    return profile


def answer(user: User, profile: ModelProfile, scenario: dict[str, Any], emulator: Any) -> Message:
    emulator.push({"reply": REPLY, "reasoning_tokens": REASONING, **scenario})
    turn = start_turn(user=user, organization_id=None, conversation_id=None,
                      content="What is six times seven?", reasoning_effort="low",
                      profile_name=profile.name)
    run_generation(turn.assistant_message.pk)
    return Message.objects.get(pk=turn.assistant_message.pk)


def done_frame(message: Message) -> dict[str, Any]:
    assert wait_until_sent()
    [frame] = [f for f in get_replay_store().read_sync(message.pk) if f["type"] == "done"]
    return frame


def assert_billed_everywhere(message: Message, cost: Decimal, client: Client, user: User) -> None:
    """The frame, the Message, the reservation, both budget rows and the usage export."""
    assert message.status == Message.Status.DONE
    assert done_frame(message)["cost_usd"] == f"{cost:.6f}"
    assert message.cost_usd == cost
    reservation = Reservation.objects.get(message=message)
    assert reservation.charged_usd == cost and not reservation.estimated
    assert reservation.amount_usd >= cost
    rows = UsagePeriod.objects.filter(organization=message.conversation.organization)
    assert sorted((r.user_id or 0, r.spent_usd, r.reserved_usd) for r in rows) == [
        (0, cost, Decimal(0)), (user.pk, cost, Decimal(0))]
    client.force_login(user)
    lines = list(csv.reader(io.StringIO(as_text(client.get("/org/usage.csv")))))
    header, [row] = lines[0], lines[1:]
    values = dict(zip(header, row, strict=True))
    assert values["cost_usd"] == f"{cost:.6f}"
    assert values["cache_write_tokens"] == str(message.cache_write_tokens)
    # The page's tables show each answer's bill to the micro-dollar too.
    assert f'<td class="org-num">${cost:.6f}</td>' in as_text(client.get("/org/usage/"))


COMPLETION = REASONING + count_tokens(REPLY)


def test_a_cache_write_answer_costs_the_published_formula(
    client: Client, alice: User, org_a: Organization, sol: ModelProfile, emulator: Any
) -> None:
    message = answer(alice, sol, {"input_tokens": 5_000, "cached_tokens": 2_048,
                                  "cache_write_tokens": 1_200}, emulator)

    assert (message.prompt_tokens, message.cached_tokens, message.cache_write_tokens,
            message.completion_tokens) == (5_000, 2_048, 1_200, COMPLETION)
    # 1,752 uncached at $2.00, 2,048 cached at $0.10, 1,200 written at $2.50, output at $10.
    cost = ((1_752 * 2 + 2_048 * Decimal("0.1") + 1_200 * Decimal("2.5") + COMPLETION * 10)
            / M).quantize(Decimal("0.000001"))
    assert cost == Decimal("0.006709") + COMPLETION * 10 / M
    assert done_frame(message)["usage"] == {
        "prompt_tokens": 5_000, "cached_tokens": 2_048, "completion_tokens": COMPLETION,
        "reasoning_tokens": REASONING, "cache_write_tokens": 1_200}
    assert_billed_everywhere(message, cost, client, alice)
    html = as_text(client.get("/org/usage/"))
    assert '<th scope="col" class="org-num">Cache writes</th>' in html
    assert '<td class="org-num">1200</td>' in html


@pytest.mark.parametrize(("input_tokens", "multipliers"), [
    (272_000, (Decimal(1), Decimal(1))),  # exactly the threshold: the short rates
    (272_001, (Decimal(2), Decimal("1.5"))),  # above it: the whole request at the long rates
])
def test_a_long_context_answer_costs_the_published_formula(
    client: Client, alice: User, org_a: Organization, sol: ModelProfile, emulator: Any,
    input_tokens: int, multipliers: tuple[Decimal, Decimal],
) -> None:
    message = answer(alice, sol, {"input_tokens": input_tokens, "cached_tokens": 0,
                                  "cache_write_tokens": 0}, emulator)

    assert (message.prompt_tokens, message.completion_tokens) == (input_tokens, COMPLETION)
    into, out = multipliers
    cost = ((input_tokens * 2 * into + COMPLETION * 10 * out) / M).quantize(Decimal("0.000001"))
    assert_billed_everywhere(message, cost, client, alice)


def test_a_chat_completions_answer_bills_its_reported_cache_writes(
    client: Client, alice: User, org_a: Organization, o3_mini: ModelProfile, emulator: Any,
    settings: Any,
) -> None:
    settings.OPENAI_API_KEY = ""
    settings.LLM_MAX_ATTEMPTS = 1
    ModelProfile.objects.filter(pk=o3_mini.pk).update(cache_write_price=Decimal("1.375"))
    o3_mini.refresh_from_db()
    message = answer(alice, o3_mini, {"cache_write_tokens": 10, "cached_tokens": 0}, emulator)

    assert message.cache_write_tokens == 10
    cost = (((message.prompt_tokens - 10) * Decimal("1.10") + 10 * Decimal("1.375")
             + message.completion_tokens * Decimal("4.40")) / M).quantize(Decimal("0.000001"))
    assert_billed_everywhere(message, cost, client, alice)


def test_another_orgs_usage_page_shows_none_of_the_cache_writes(
    client: Client, alice: User, org_a: Organization, charlie: User, sol: ModelProfile,
    emulator: Any,
) -> None:
    answer(alice, sol, {"input_tokens": 5_000, "cached_tokens": 0, "cache_write_tokens": 1_200},
           emulator)
    client.force_login(charlie)

    lines = list(csv.reader(io.StringIO(as_text(client.get("/org/usage.csv")))))
    assert lines[1:] == []
    assert '<td class="org-num">1200</td>' not in as_text(client.get("/org/usage/"))


def test_a_tool_round_after_a_long_context_request_is_billed_at_its_own_short_rates(
    client: Client, alice: User, org_a: Organization, sol: ModelProfile, emulator: Any
) -> None:
    """The long-context rule is per request: the turn's second request (the tool round's
    answer) stays at the short rates although the turn's input adds up past 272,000."""
    emulator.push({"input_tokens": 272_001, "cached_tokens": 0, "cache_write_tokens": 0,
                   "reasoning_tokens": 10,
                   "tool_call": {"name": "calculate", "arguments": {"expression": "6*7"}}})
    message = answer(alice, sol, {"cached_tokens": 0, "cache_write_tokens": 0}, emulator)

    assert len(emulator.requests_to("/v1/responses")) == 2
    assert message.tool_calls and message.tool_calls[0]["ok"]
    second_input = message.prompt_tokens - 272_001
    first_output = message.completion_tokens - COMPLETION
    assert 0 < second_input < 272_000 and first_output > 10
    cost = ((272_001 * 2 * 2 + first_output * 10 * Decimal("1.5")
             + second_input * 2 + COMPLETION * 10) / M).quantize(Decimal("0.000001"))
    assert_billed_everywhere(message, cost, client, alice)
