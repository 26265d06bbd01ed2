"""Charged <= reserved, always: every tool round and every retry is reserved before it is
sent, and settlement never charges more than the turn reserved.

Turns run in this thread (``run_generation``) against the emulator over HTTP, as in
test_generation.py. The last test re-runs this module against SQLite (embedded mode)
when the suite runs on PostgreSQL, as tests/billing/test_exact_money.py does.
"""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from django.db import connection
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from accounts.models import Membership, Organization, User
from answers.engine import run_generation
from answers.generation import BUDGET_STOP_NOTICE, PROMPT_OVER_BUDGET
from answers.prompts import request_tokens
from answers.replies import start_turn
from billing.models import Reservation, UsagePeriod
from conversations.models import Message
from emulator.accounting import PromptItem, account_prompt
from llm.models import ModelProfile
from tests.embedded import run_module_on_sqlite
from tests.llm.test_responses_api import make_responses_profile

pytestmark = pytest.mark.django_db

QUESTION = "Tell me about the weather on Mars"
RESPONSES = "o3-mini-responses"
# A retry after this attempt is billed: the model wrote a reasoning summary (the provider
# worked) and then the stream failed with an error event, before any text.
BILLED_FAILURE = {"fault": "error_event", "after_tokens": 0,
                  "reasoning_summary": "Weighing what the question needs."}
FREE_FAILURE = {"fault": "rate_limit", "retry_after": 0}


@pytest.fixture(autouse=True)
def offline_demo_provider(settings: Any, emulator: Any) -> None:
    settings.OPENAI_API_KEY = ""
    settings.LLM_MAX_ATTEMPTS = 3
    settings.LLM_MAX_RETRY_WAIT = 30


@pytest.fixture
def responses_profile(emulator: Any) -> ModelProfile:
    return make_responses_profile(reasoning_summaries=True)


def tool_step(expression: str, reasoning_tokens: int = 64) -> dict[str, Any]:
    return {"tool_call": {"name": "calculate", "arguments": {"expression": expression}},
            "reasoning_tokens": reasoning_tokens}


def begin(user: User, profile: str | None = None, effort: str = "low") -> Message:
    turn = start_turn(user=user, organization_id=None, conversation_id=None, content=QUESTION,
                      reasoning_effort=effort, profile_name=profile)
    return turn.assistant_message


def member_row(user: User) -> UsagePeriod:
    return UsagePeriod.objects.get(user=user)


def org_row(organization: Organization) -> UsagePeriod:
    return UsagePeriod.objects.get(organization=organization, user=None)


def leave_room(row: UsagePeriod, *, limit: Decimal, room: Decimal) -> None:
    """Spend the row down so that exactly ``room`` is left beyond what it holds now."""
    row.refresh_from_db()
    UsagePeriod.objects.filter(pk=row.pk).update(spent_usd=limit - row.reserved_usd - room)


def tight_member(user: User, room: Decimal = Decimal(0)) -> Decimal:
    """The member's budget leaves ``room`` beyond the live turn's reservation."""
    limit = Decimal("5.00")
    Membership.objects.filter(user=user).update(monthly_budget_usd=limit)
    leave_room(member_row(user), limit=limit, room=room)
    return limit


def upstream(emulator: Any) -> list[dict[str, Any]]:
    return [entry for entry in emulator.journal_snapshot() if entry["method"] == "POST"
            and entry["path"].endswith(("/chat/completions", "/responses"))]


def assert_settled_within_the_reservation(message: Message) -> Reservation:
    """The cost the answer shows is what was charged, never more than was reserved (the
    message's cost is computed before settlement, so a capped charge would differ), and
    nothing stays held."""
    reservation = Reservation.objects.get(message=message)
    assert reservation.settled_at is not None
    assert reservation.charged_usd == message.cost_usd <= reservation.amount_usd
    assert all(row.reserved_usd == 0 for row in UsagePeriod.objects.all())
    return reservation


# --- The reported case ------------------------------------------------------------------


def test_a_member_whose_budget_equals_the_reservation_is_never_charged_past_it_by_tool_rounds(
    alice: User, o3_mini: ModelProfile, emulator: Any
) -> None:
    """A model that keeps calling tools, each round's prompt longer than the last: the
    rounds the reservation covers are sent, the next one is not, and the answer ends
    done with what it has and the line that says why."""
    for step in range(8):
        emulator.push(tool_step(f"{step + 1}*({step}+7)", reasoning_tokens=8000))
    message = begin(alice, effort="medium")
    limit = tight_member(alice)
    initial = Reservation.objects.get(message=message).amount_usd

    run_generation(message.pk)

    message.refresh_from_db()
    calls = upstream(emulator)
    prompts = [len(json.dumps(call["body"]["messages"])) for call in calls]
    assert len(calls) == 3 and prompts == sorted(prompts) and len(set(prompts)) == 3
    assert [call["body"]["max_completion_tokens"] for call in calls][0] == 25_000
    assert (message.status, message.finish_reason) == (Message.Status.DONE, "tool_calls")
    assert message.error_detail == BUDGET_STOP_NOTICE
    assert len(message.tool_calls) == 3
    reservation = assert_settled_within_the_reservation(message)
    assert reservation.amount_usd == initial  # the budget had no room to extend it
    row = member_row(alice)
    assert row.spent_usd + row.reserved_usd <= limit
    assert row.spent_usd == limit - initial + message.cost_usd


def test_a_tool_round_with_room_in_the_budget_reserves_its_own_worst_case_and_releases_it(
    alice: User, org_a: Organization, o3_mini: ModelProfile, emulator: Any
) -> None:
    emulator.push(tool_step("12*(3+4)", reasoning_tokens=6000))
    message = begin(alice, effort="medium")
    initial = Reservation.objects.get(message=message).amount_usd

    run_generation(message.pk)

    message.refresh_from_db()
    first, second = upstream(emulator)
    assert first["body"]["max_completion_tokens"] == second["body"]["max_completion_tokens"]
    assert message.status == Message.Status.DONE and message.error_detail == ""
    reservation = assert_settled_within_the_reservation(message)
    # The second round's worst case was held on top of what the first spent (at least its
    # 6,000 reasoning tokens at $4.40 per million).
    assert reservation.amount_usd - initial > Decimal("0.0264")
    assert member_row(alice).spent_usd == org_row(org_a).spent_usd == message.cost_usd


def test_an_org_budget_with_no_room_stops_tool_rounds_like_a_member_budget(
    alice: User, org_a: Organization, o3_mini: ModelProfile, emulator: Any
) -> None:
    for step in range(8):
        emulator.push(tool_step(f"{step}+1", reasoning_tokens=8000))
    message = begin(alice, effort="medium")
    org_a.monthly_budget_usd = Decimal("3.00")
    org_a.save(update_fields=["monthly_budget_usd"])
    leave_room(org_row(org_a), limit=Decimal("3.00"), room=Decimal(0))

    run_generation(message.pk)

    message.refresh_from_db()
    assert message.status == Message.Status.DONE
    assert message.error_detail == BUDGET_STOP_NOTICE
    assert_settled_within_the_reservation(message)
    row = org_row(org_a)
    assert row.spent_usd <= Decimal("3.00")


def test_a_round_that_spends_its_whole_cap_stays_within_what_was_reserved_for_it(
    alice: User, o3_mini: ModelProfile, emulator: Any
) -> None:
    """The second round gets only what the reservation still covers and reasons to the
    end of it: its prompt (tool schemas, the call and its result included) was counted
    in full, so even then the charge fits."""
    emulator.push(tool_step("12*(3+4)", reasoning_tokens=4000))
    emulator.push({"reasoning_tokens": 100_000})
    message = begin(alice, effort="medium")
    tight_member(alice)

    run_generation(message.pk)

    message.refresh_from_db()
    first, second = upstream(emulator)
    assert second["body"]["max_completion_tokens"] < first["body"]["max_completion_tokens"]
    assert (message.status, message.finish_reason) == (Message.Status.DONE, "length")
    assert message.completion_tokens > second["body"]["max_completion_tokens"]
    reservation = assert_settled_within_the_reservation(message)
    # Near the edge: what was left is the bound's margin over the provider's count.
    assert reservation.amount_usd - message.cost_usd < Decimal("0.0001")


def test_a_first_round_carrying_more_reasoning_than_the_turn_reserved_for_is_not_sent(
    alice: User, responses_profile: ModelProfile, emulator: Any
) -> None:
    """The turn's reservation counted the history's text; its reasoning items are sent
    too. With no room to reserve them the request is not sent and costs nothing."""
    first = begin(alice, RESPONSES)
    run_generation(first.pk)
    first.refresh_from_db()
    assert first.reasoning_items
    first.reasoning_items = [{**item, "summary": [{"type": "summary_text", "text": "step " * 110_000}]}
                             for item in first.reasoning_items]
    first.save(update_fields=["reasoning_items"])
    turn = start_turn(user=alice, organization_id=None, conversation_id=first.conversation_id,
                      content="And on Venus?", reasoning_effort="low", profile_name=RESPONSES)
    second = turn.assistant_message
    tight_member(alice)

    run_generation(second.pk)

    second.refresh_from_db()
    assert len(upstream(emulator)) == 1  # the first turn's request only
    assert (second.status, second.error_code) == (Message.Status.FAILED, "quota_exceeded")
    assert second.error_detail == PROMPT_OVER_BUDGET
    assert second.cost_usd == 0
    assert_settled_within_the_reservation(second)


# --- Retries --------------------------------------------------------------------------


def test_a_retry_after_a_billed_attempt_that_the_budget_cannot_cover_is_not_sent(
    alice: User, responses_profile: ModelProfile, emulator: Any, settings: Any
) -> None:
    emulator.push(BILLED_FAILURE)
    message = begin(alice, RESPONSES)
    limit = tight_member(alice)

    run_generation(message.pk)

    message.refresh_from_db()
    assert len(upstream(emulator)) == 1
    assert message.status == Message.Status.FAILED
    assert message.usage_estimated and message.cost_usd > 0
    assert_settled_within_the_reservation(message)
    row = member_row(alice)
    assert row.spent_usd <= limit
    # It fails with the error the attempt met, as it would with no retries allowed.
    settings.LLM_MAX_ATTEMPTS = 1
    tight_member(alice, room=Decimal("1"))
    emulator.push(BILLED_FAILURE)
    unretried = begin(alice, RESPONSES)
    run_generation(unretried.pk)
    unretried.refresh_from_db()
    assert (message.error_code, message.error_detail) == (unretried.error_code,
                                                          unretried.error_detail)
    assert message.error_code == "upstream_error" and "budget" not in message.error_detail


def test_a_retry_after_a_billed_attempt_is_reserved_before_it_is_sent(
    alice: User, responses_profile: ModelProfile, emulator: Any
) -> None:
    emulator.push(BILLED_FAILURE)
    message = begin(alice, RESPONSES)
    initial = Reservation.objects.get(message=message).amount_usd

    run_generation(message.pk)

    message.refresh_from_db()
    assert len(upstream(emulator)) == 2
    assert message.status == Message.Status.DONE
    reservation = assert_settled_within_the_reservation(message)
    assert reservation.amount_usd > initial  # the retry's worst case was added
    assert reservation.estimated  # the failed attempt reported nothing: a flagged estimate


def test_a_retry_after_a_rejected_request_needs_no_more_budget(
    alice: User, o3_mini: ModelProfile, emulator: Any
) -> None:
    emulator.push(FREE_FAILURE)
    message = begin(alice)
    tight_member(alice)
    initial = Reservation.objects.get(message=message).amount_usd

    run_generation(message.pk)

    message.refresh_from_db()
    assert len(upstream(emulator)) == 2 and message.status == Message.Status.DONE
    assert assert_settled_within_the_reservation(message).amount_usd == initial


# --- The prompt bound -------------------------------------------------------------------


def test_the_prompt_bound_covers_tool_schemas_calls_results_and_reasoning_items(
    alice: User, responses_profile: ModelProfile, o3_mini: ModelProfile, emulator: Any
) -> None:
    """Against the provider's own count (the emulator's, documented in
    emulator/accounting.py) of every request of a turn with two tool rounds."""
    emulator.push(tool_step("2**10", reasoning_tokens=300))
    emulator.push(tool_step("(2**10)*(3**5)", reasoning_tokens=300))
    run_generation(begin(alice, effort="medium").pk)
    calls = upstream(emulator)
    assert len(calls) == 3 and calls[-1]["body"]["messages"][-1]["role"] == "tool"
    for call in calls:
        body = call["body"]
        items = [PromptItem("".join(
            [str(m.get("content") or ""), str(m.get("name") or "")]
            + [c["function"]["name"] + c["function"]["arguments"] for c in m.get("tool_calls") or []]
        ), "") for m in body["messages"]]
        tools_json = json.dumps(body["tools"], sort_keys=True, ensure_ascii=False,
                                separators=(",", ":")) if body.get("tools") else ""
        provider = account_prompt("o3-mini", tools_json, items, overhead=3, priming=3)
        assert request_tokens(body["messages"], body.get("tools")) >= provider.prompt_tokens

    # Reasoning items sent back in a tool round count too.
    reasoning = {"type": "reasoning", "id": "rs_1", "summary": [],
                 "encrypted_content": "gAAAA" + "x9Q" * 400}
    call = {"role": "assistant", "content": None, "reasoning_items": [reasoning],
            "tool_calls": [{"id": "call_1", "type": "function",
                            "function": {"name": "calculate", "arguments": "{}"}}]}
    bare = {**call, "reasoning_items": []}
    assert request_tokens([call]) - request_tokens([bare]) > 400


# --- Random sequences -------------------------------------------------------------------

RETRY = st.sampled_from([BILLED_FAILURE, FREE_FAILURE])
TOOL_ROUND = st.builds(tool_step, st.sampled_from(["1+1", "12*(3+4)/5", "2**100"]),
                       st.sampled_from([64, 2000, 7000]))
ENDING = st.sampled_from([
    {"reply_tokens": 40, "reasoning_tokens": 500},
    {"reply_tokens": 30, "reasoning_tokens": 9000},
    {"reasoning_tokens": 100_000},  # reasons to the end of the round's cap
    {"fault": "drop", "after_tokens": 8, "reply_tokens": 60},  # cut mid-answer: an estimate
])
TURNS = st.tuples(
    st.lists(st.one_of(RETRY, TOOL_ROUND), max_size=6), ENDING,
    st.sampled_from([RESPONSES, "o3-mini"]),
    st.sampled_from(["member", "org"]),
    st.sampled_from([Decimal(0), Decimal("0.004"), Decimal("0.05"), Decimal("1")]),
)


def test_random_retries_tool_rounds_and_stops_never_charge_past_the_reservation(
    alice: User, org_a: Organization, responses_profile: ModelProfile, o3_mini: ModelProfile,
    emulator: Any,
) -> None:
    """Whatever the sequence, and however little room the member's or the org's budget
    leaves: each turn is charged at most what it reserved, the budget is never passed,
    and both rows hold nothing once the turn ended."""
    limit = Decimal("9.00")
    org_a.monthly_budget_usd = limit
    org_a.save(update_fields=["monthly_budget_usd"])
    Membership.objects.filter(user=alice).update(monthly_budget_usd=limit)

    @hypothesis_settings(max_examples=15, deadline=None, database=None)
    @given(TURNS)
    def one_turn(turn: tuple[list[dict[str, Any]], dict[str, Any], str, str, Decimal]) -> None:
        steps, ending, profile, tight, room = turn
        emulator.reset()
        for step in [*steps, ending]:
            emulator.push(dict(step))
        UsagePeriod.objects.update(spent_usd=0)  # a fresh month for each sequence
        message = begin(alice, profile, effort="medium")
        member, org = member_row(alice), org_row(org_a)
        leave_room(member if tight == "member" else org, limit=limit, room=room)

        run_generation(message.pk)

        message.refresh_from_db()
        assert message.status in (Message.Status.DONE, Message.Status.FAILED)
        assert_settled_within_the_reservation(message)
        for row in (member_row(alice), org_row(org_a)):
            assert row.reserved_usd == 0
            assert row.spent_usd <= limit

    one_turn()


@pytest.mark.slow
def test_the_same_holds_in_embedded_sqlite_mode(tmp_path: Path) -> None:
    if connection.vendor == "sqlite":
        pytest.skip("this run is already on SQLite")
    output = run_module_on_sqlite(__file__, tmp_path, timeout=600)
    assert "10 passed" in output
