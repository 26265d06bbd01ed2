"""Budgets as an admin and a member meet them, in headless Chromium against the real stack.

alice (owner of org A) gives bob a monthly budget that fits one worst-case turn at low
effort; bob's first answer costs enough that the next turn's worst case no longer fits,
so his second send is refused with the budget explanation. He asks for more from the
composer, alice approves on Usage & budgets, and bob's next send is answered.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from decimal import ROUND_CEILING, Decimal
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.browser.conftest import Watch, read_db

playwright_api = pytest.importorskip("playwright.sync_api")
expect = playwright_api.expect

PASSWORD = "correct horse battery staple"
ANSWER_TIMEOUT_MS = 30_000
BOB_BUDGET = Decimal("0.05")
# Reasoning tokens of bob's first answer: enough that its actual cost leaves less than a
# low-effort worst case of his $0.05 (about $0.0088 of output at $4.40/M).
FIRST_REASONING_TOKENS = 2000

FIRST_QUESTION = "Summarise the quarterly budget memo [budget-first]"
SECOND_QUESTION = "Now draft the reply to finance [budget-second]"
NOTE = "Preparing the finance review this week; I need a few more turns."

# Groups: prompt, cached, output, reasoning, cost (as in test_chat.py).
USAGE_LINE = re.compile(
    r"^([\d,]+) prompt tokens? \(([\d,]+) cached\)"
    r" · ([\d,]+) output tokens? \(of which ([\d,]+) reasoning\)"
    r" · \$(\d+(?:\.\d+)?)$"
)


# --- helpers ------------------------------------------------------------------------------


def sign_in(page: Any, email: str) -> None:
    page.goto("/accounts/login/")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(lambda url: urlsplit(url).path == "/")
    expect(page.get_by_test_id("connection-status")).to_have_attribute("data-state", "open")


def send(page: Any, text: str) -> None:
    page.get_by_label("Message", exact=True).fill(text)
    page.get_by_role("button", name="Send", exact=True).click()


def open_context(browser: Any, base_url: str, watch: Watch) -> Any:
    """A second, separate browser context (own cookies) with the same rules as `page`."""
    context = browser.new_context(base_url=base_url)
    context.set_default_timeout(15_000)

    def on_route(route: Any) -> None:
        if urlsplit(route.request.url).hostname in ("127.0.0.1", None):
            route.continue_()
        else:
            watch.remote_requests.append(route.request.url)
            route.abort()

    context.route("**/*", on_route)
    return context


def watch_page(page: Any, watch: Watch) -> None:
    def on_dialog(dialog: Any) -> None:
        watch.dialogs.append(f"{dialog.type}: {dialog.message}")
        dialog.dismiss()

    page.on("dialog", on_dialog)
    page.on("pageerror", lambda exc: watch.page_errors.append(str(exc)))


def worst_case_for(membership_id: int, content: str, conversation_id: int | None,
                   effort: str) -> dict[str, Any]:
    """The reservation start_turn would make for ``content``, from the product's own code."""
    from accounts.models import Membership
    from answers.prompts import estimate_prompt_tokens
    from billing.quotas import next_period_start, period_start, worst_case_cost
    from llm.models import ModelProfile

    def compute() -> dict[str, Any]:
        membership = Membership.objects.select_related("organization").get(pk=membership_id)
        organization = membership.organization
        profile = ModelProfile.objects.get(name="o3-mini")
        cap = profile.completion_cap(effort)
        prompt_tokens = estimate_prompt_tokens(
            conversation_id=conversation_id, content=content, profile=profile,
            org_message=organization.developer_message, custom="", completion_cap=cap,
        )
        return {
            "cap": cap,
            "prompt_tokens": prompt_tokens,
            "worst": worst_case_cost(profile, prompt_tokens=prompt_tokens, completion_cap=cap),
            "input_price": profile.input_price,
            "output_price": profile.output_price,
            "resets_on": next_period_start(period_start(organization)),
        }

    return read_db(compute)


def settled_title_cost(user_id: int) -> Decimal:
    """What the person's conversation title was charged, once its request settled."""
    from billing.models import Reservation

    deadline = time.monotonic() + 20
    while True:
        charged = read_db(lambda: list(
            Reservation.objects.filter(kind=Reservation.Kind.TITLE, member_period__user_id=user_id)
            .values_list("settled_at", "charged_usd")
        ))
        if charged and all(settled for settled, _ in charged):
            total = Decimal(0)
            for _, cost in charged:
                assert cost is not None, "a settled title request has a charge"
                total += cost
            return total
        assert time.monotonic() < deadline, "the title request never settled"
        time.sleep(0.1)


def member_period(org_id: int, user_id: int) -> Mapping[str, Any]:
    from accounts.models import Organization
    from billing.models import UsagePeriod
    from billing.quotas import period_start

    def fetch() -> Mapping[str, Any]:
        organization = Organization.objects.get(pk=org_id)
        return UsagePeriod.objects.values("spent_usd", "reserved_usd").get(
            organization=organization, user_id=user_id, period_start=period_start(organization)
        )

    return read_db(fetch)


def notifications_for(user_id: int) -> list[Mapping[str, Any]]:
    from billing.models import Notification

    return read_db(lambda: list(Notification.objects.filter(user_id=user_id).values("text", "link")))


# --- the test ---------------------------------------------------------------------------------


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_member_budget_refuses_a_turn_then_request_more_is_approved(
    alice: Any, bob: Any, page: Any, live_server_url: str, emulator: Any, watch: Watch
) -> None:
    from accounts.models import Membership
    from billing.models import BudgetRequest
    from conversations.models import Message

    ids = read_db(lambda: {
        "org": alice.memberships.get().organization_id,
        "bob_membership": bob.memberships.get().pk,
        "alice": alice.pk,
        "bob": bob.pk,
    })

    # The budget fits one low-effort worst case (prompt at $1.10/M + the 10,000-token low
    # cap at $4.40/M), and only one: medium effort would not fit at all.
    first = worst_case_for(ids["bob_membership"], FIRST_QUESTION, None, "low")
    assert first["cap"] == 10_000
    assert (first["input_price"], first["output_price"]) == (Decimal("1.10"), Decimal("4.40"))
    assert first["worst"] == (
        (first["prompt_tokens"] * Decimal("1.10") + 10_000 * Decimal("4.40")) / 1_000_000
    ).quantize(Decimal("0.000001"), rounding=ROUND_CEILING)
    assert Decimal("0.044") < first["worst"] <= BOB_BUDGET
    assert worst_case_for(ids["bob_membership"], FIRST_QUESTION, None, "medium")["worst"] > BOB_BUDGET
    resets = first["resets_on"]

    # --- alice gives bob $0.05 a month on the Members page -------------------------------------
    alice_page = page
    sign_in(alice_page, "alice@example.com")
    alice_page.goto("/org/")
    bob_row = alice_page.locator(f"#member-{ids['bob_membership']}")
    expect(bob_row).to_contain_text("bob@example.com")
    bob_row.get_by_label("Member monthly budget (USD)").fill("0.05")
    bob_row.get_by_role("button", name="Save budget of bob@example.com").click()
    expect(alice_page.locator(".flash-messages")).to_contain_text(
        "bob@example.com's budget is now $0.05 a month."
    )
    bob_row = alice_page.locator(f"#member-{ids['bob_membership']}")
    expect(bob_row.get_by_label("Member monthly budget (USD)")).to_have_value("0.05")
    expect(bob_row).to_contain_text("$0.05 left of $0.05")
    assert read_db(
        lambda: Membership.objects.get(pk=ids["bob_membership"]).monthly_budget_usd
    ) == BOB_BUDGET

    # --- bob, in his own browser context, sees his meter and sends one low-effort turn ---------
    bob_context = open_context(page.context.browser, live_server_url, watch)
    try:
        bob_page = bob_context.new_page()
        watch_page(bob_page, watch)
        sign_in(bob_page, "bob@example.com")

        meter = bob_page.get_by_test_id("budget-meter")
        expect(meter).to_be_visible()
        expect(meter).to_contain_text(
            f"Your budget: $0.0000 spent, $0.0000 reserved, $0.0500 left of $0.05 · resets {resets.isoformat()}"
        )
        effort = bob_page.get_by_label("Reasoning effort")
        effort.select_option("low")
        expect(effort).to_have_value("low")
        expect(bob_page.get_by_test_id("cost-estimate")).to_have_text(
            re.compile(r"^This turn: about \$\d+\.\d{4}–\$\d+\.\d{4} \(.+\)\.$")
        )

        emulator.push({"match": "[budget-first]", "reasoning_tokens": FIRST_REASONING_TOKENS})
        send(bob_page, FIRST_QUESTION)
        answers = bob_page.get_by_test_id("assistant-message")
        expect(answers).to_have_count(1)
        first_answer = answers.nth(0)
        expect(first_answer).to_contain_text("low effort")
        expect(first_answer).to_have_attribute("data-status", "done", timeout=ANSWER_TIMEOUT_MS)
        usage = first_answer.get_by_test_id("usage")
        expect(usage).to_have_text(USAGE_LINE)
        parts = USAGE_LINE.match(usage.text_content())
        assert parts is not None
        assert int(parts.group(4).replace(",", "")) == FIRST_REASONING_TOKENS
        first_id = int(first_answer.get_attribute("data-message-id"))
        saved = read_db(lambda: Message.objects.values("cost_usd", "conversation_id").get(pk=first_id))
        first_cost = saved["cost_usd"]
        assert Decimal(parts.group(5)) == first_cost
        assert first_cost > Decimal("0.006")

        # Settled at its actual cost: the worst-case hold is released. The conversation's
        # title is reserved and billed like a turn too; once it is, the meter (read again
        # on reload) shows both.
        title_cost = settled_title_cost(ids["bob"])
        assert title_cost > 0
        spent = first_cost + title_cost
        period = member_period(ids["org"], ids["bob"])
        assert period == {"spent_usd": spent, "reserved_usd": Decimal(0)}
        remaining = BOB_BUDGET - spent
        bob_page.reload()
        expect(bob_page.get_by_test_id("connection-status")).to_have_attribute("data-state", "open")
        expect(meter).to_contain_text(
            f"Your budget: ${spent:.4f} spent, $0.0000 reserved, ${remaining:.4f} left of $0.05"
        )
        effort.select_option("low")

        # The next turn's worst case no longer fits what is left (though it would fit an
        # untouched $0.05 budget): the send is refused before anything is generated.
        bob_page.wait_for_url(re.compile(r"/c/\d+/$"))
        second = worst_case_for(ids["bob_membership"], SECOND_QUESTION, saved["conversation_id"], "low")
        assert remaining < second["worst"] <= BOB_BUDGET

        expect(effort).to_have_value("low")
        send(bob_page, SECOND_QUESTION)
        error = bob_page.get_by_test_id("composer-error")
        expect(error).to_be_visible()
        expect(error).to_have_attribute("data-code", "quota_exceeded")
        expect(error).to_contain_text("Budget used up")
        expect(error).to_contain_text(
            f"Your monthly budget of $0.05 is used up (or this turn's worst case would pass it); "
            f"it resets on {resets:%-d %b}."
        )
        expect(bob_page.get_by_label("Message", exact=True)).to_have_value(SECOND_QUESTION)
        expect(answers).to_have_count(1)
        expect(bob_page.get_by_test_id("user-message")).to_have_count(1)
        assert member_period(ids["org"], ids["bob"]) == period  # nothing held or spent

        # --- bob asks for more from the composer --------------------------------------------
        error.get_by_label("Note to your admins").fill(NOTE)
        request_more = error.get_by_role("button", name="Request more")
        request_more.click()
        expect(error.get_by_role("status")).to_have_text("Sent. Your admins have been notified.")
        expect(request_more).to_be_disabled()

        pending = read_db(lambda: list(
            BudgetRequest.objects.filter(membership_id=ids["bob_membership"]).values("status", "note")
        ))
        assert pending == [{"status": BudgetRequest.Status.PENDING, "note": NOTE}]
        alice_notes = notifications_for(ids["alice"])
        assert any(
            "bob@example.com asks for more budget" in n["text"] and NOTE in n["text"]
            and n["link"] == f"/org/usage/?org={ids['org']}#requests"
            for n in alice_notes
        ), alice_notes

        # --- alice approves with the suggested budget on Usage & budgets ----------------------
        alice_page.goto("/org/usage/")
        request_card = alice_page.locator("article.org-request").filter(has_text="bob@example.com")
        expect(request_card).to_have_count(1)
        expect(request_card.locator("blockquote")).to_have_text(NOTE)
        expect(request_card).to_contain_text("now $0.05 a month")
        new_budget = request_card.get_by_label("New member monthly budget (USD)")
        expect(new_budget).to_have_value("0.10")
        request_card.get_by_role("button", name="Approve the request from bob@example.com").click()
        expect(alice_page.locator(".flash-messages")).to_contain_text(
            "Approved: bob@example.com now has $0.10 a month."
        )
        expect(alice_page.locator("article.org-request")).to_have_count(0)
        expect(alice_page.get_by_text("No pending requests.")).to_be_visible()

        approved = read_db(lambda: (
            Membership.objects.get(pk=ids["bob_membership"]).monthly_budget_usd,
            list(BudgetRequest.objects.filter(membership_id=ids["bob_membership"])
                 .values_list("status", "new_budget_usd")),
        ))
        assert approved == (Decimal("0.10"), [(BudgetRequest.Status.APPROVED, Decimal("0.10"))])
        bob_notes = notifications_for(ids["bob"])
        assert any(
            "approved your budget request" in n["text"] and "$0.10" in n["text"] for n in bob_notes
        ), bob_notes
        assert Decimal("0.10") - spent >= second["worst"]

        # --- bob reloads and the same question is answered ---------------------------------
        bob_page.reload()
        expect(bob_page.get_by_test_id("connection-status")).to_have_attribute("data-state", "open")
        expect(meter).to_contain_text(f"${Decimal('0.10') - spent:.4f} left of $0.10")
        expect(bob_page.get_by_test_id("composer-error")).to_be_hidden()
        effort.select_option("low")
        expect(effort).to_have_value("low")
        send(bob_page, SECOND_QUESTION)
        expect(answers).to_have_count(2)
        second_answer = answers.nth(1)
        expect(second_answer).to_have_attribute("data-status", "done", timeout=ANSWER_TIMEOUT_MS)
        expect(second_answer.get_by_test_id("usage")).to_have_text(USAGE_LINE)
        expect(bob_page.get_by_test_id("composer-error")).to_be_hidden()
        expect(bob_page.get_by_test_id("user-message")).to_have_count(2)
        expect(bob_page.get_by_test_id("user-message").nth(1)).to_contain_text(SECOND_QUESTION)
    finally:
        bob_context.close()

    assert watch.page_errors == []
    assert watch.dialogs == []
    assert watch.remote_requests == []


# Each round reasons this much: the first two rounds fit what bob's turn reserved (a
# low-effort worst case, his $0.05 leaving no room for a second one), a third would not.
TOOL_ROUND_REASONING = 4800
TOOLS_QUESTION = "Work out the budget split step by step [budget-tools]"


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_a_tight_budget_stops_tool_rounds_and_the_answer_says_so(
    alice: Any, bob: Any, page: Any, emulator: Any, watch: Watch
) -> None:
    from accounts.models import Membership
    from answers.generation import BUDGET_STOP_NOTICE
    from billing.models import Reservation
    from conversations.models import Message

    ids = read_db(lambda: {"org": bob.memberships.get().organization_id, "bob": bob.pk})
    read_db(lambda: Membership.objects.filter(user=bob).update(monthly_budget_usd=BOB_BUDGET))
    # A model that keeps calling the calculator, thinking hard before each call.
    emulator.push({"match": "[budget-tools]", "times": 10, "reasoning_tokens": TOOL_ROUND_REASONING,
                   "tool_call": {"name": "calculate", "arguments": {"expression": "50/3"}}})

    sign_in(page, "bob@example.com")
    effort = page.get_by_label("Reasoning effort")
    effort.select_option("low")
    expect(effort).to_have_value("low")
    send(page, TOOLS_QUESTION)

    answer = page.get_by_test_id("assistant-message")
    expect(answer).to_have_count(1)
    expect(answer).to_have_attribute("data-status", "done", timeout=ANSWER_TIMEOUT_MS)
    expect(answer.get_by_test_id("tool-call")).to_have_count(2)
    notice = answer.get_by_test_id("message-notice")
    expect(notice).to_be_visible()
    expect(notice).to_have_text(BUDGET_STOP_NOTICE)
    expect(answer.get_by_test_id("usage")).to_have_text(USAGE_LINE)
    # The line sits under what the answer has: its tool calls.
    tools_box, notice_box = answer.get_by_test_id("tool-calls").bounding_box(), notice.bounding_box()
    assert tools_box and notice_box and notice_box["y"] >= tools_box["y"] + tools_box["height"]

    # What bob's budget shows: charged no more than reserved, never past $0.05.
    message_id = int(answer.get_attribute("data-message-id"))
    cost, held = read_db(lambda: (Message.objects.get(pk=message_id).cost_usd,
                                  Reservation.objects.get(message_id=message_id).amount_usd))
    assert Decimal("0.04") < cost <= held <= BOB_BUDGET
    # A title is reserved and billed like a turn, if what is left still covers one.
    deadline = time.monotonic() + 20
    while read_db(lambda: Reservation.objects.filter(member_period__user_id=ids["bob"],
                                                     settled_at=None).exists()):
        assert time.monotonic() < deadline, "a reservation never settled"
        time.sleep(0.1)
    charged = read_db(lambda: [value for value in Reservation.objects.filter(
        member_period__user_id=ids["bob"]).values_list("charged_usd", flat=True) if value is not None])
    assert member_period(ids["org"], ids["bob"]) == {"spent_usd": sum(charged, Decimal(0)),
                                                      "reserved_usd": Decimal(0)}
    assert cost in charged and sum(charged, Decimal(0)) <= BOB_BUDGET
    assert len([e for e in emulator.journal if e["path"].endswith("/chat/completions")
                and (e["body"] or {}).get("tools")]) == 2
    assert watch.page_errors == [] and watch.remote_requests == []
