"""The chat page's budget meter shows bob's group budgets, and "Request more" is offered
only when his own budget is what refused his turn, in headless Chromium against the real
stack.

bob, in the group Research whose monthly budget is used up, sees the group's line at its
limit, sends, is refused with the group's explanation and is offered no budget request
(it would raise only his own budget). The same goes for a refusal by the org's budget.
When his own budget is used up, he is still offered "Request more" and can send one.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import Any

import pytest

from tests.browser.conftest import Watch, read_db
from tests.browser.test_budgets import send, sign_in
from tests.browser.test_groups import money_and_messages

playwright_api = pytest.importorskip("playwright.sync_api")
expect = playwright_api.expect

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

QUESTION = "Plan the field study for the research team [group-meter]"


# --- helpers ------------------------------------------------------------------------------


def bobs_budgets(bob: Any, *, group_spent: str, own_limit: str | None = None,
                 own_spent: str = "0", org_limit: str | None = None,
                 org_spent: str = "0") -> dict[str, Any]:
    """bob in Research ($0.50 a month, ``group_spent`` of it spent) and in Open (no
    budget), with his own and the org's months as earlier turns left them."""
    from accounts.models import Group, GroupMembership, Membership, Organization
    from billing.models import GroupUsagePeriod, UsagePeriod
    from billing.quotas import next_period_start, period_start

    def set_up() -> dict[str, Any]:
        organization = Organization.objects.get(memberships__user=bob)
        start = period_start(organization)
        research = Group.objects.create(organization=organization, name="Research",
                                        monthly_budget_usd=Decimal("0.50"))
        GroupMembership.objects.create(group=research, user=bob)
        GroupUsagePeriod.objects.create(group=research, period_start=start,
                                        spent_usd=Decimal(group_spent))
        unbudgeted = Group.objects.create(organization=organization, name="Open")
        GroupMembership.objects.create(group=unbudgeted, user=bob)
        if own_limit is not None:
            Membership.objects.filter(user=bob).update(monthly_budget_usd=Decimal(own_limit))
        if org_limit is not None:
            Organization.objects.filter(pk=organization.pk).update(
                monthly_budget_usd=Decimal(org_limit))
        UsagePeriod.objects.create(organization=organization, user=None, period_start=start,
                                   spent_usd=Decimal(org_spent) + Decimal(own_spent))
        UsagePeriod.objects.create(organization=organization, user=bob, period_start=start,
                                   spent_usd=Decimal(own_spent))
        return {"org": organization.pk, "membership": Membership.objects.get(user=bob).pk,
                "resets": next_period_start(start)}

    return read_db(set_up)


def refused_after_the_meter_refreshes(page: Any, send_it: Callable[[], None]) -> Any:
    """Send, and return the composer's refusal once budget.js has read /budget/ again and
    drawn the meter anew: it decides about "Request more" right after, in the same task,
    so what it offers is settled when this returns."""
    drawn = page.get_by_test_id("budget-meter").locator("p").first.element_handle()
    send_it()
    error = page.get_by_test_id("composer-error")
    expect(error).to_be_visible()
    expect(error).to_have_attribute("data-code", "quota_exceeded")
    page.wait_for_function("line => !line.isConnected", arg=drawn)
    return error


def budget_requests(membership_id: int) -> list[Mapping[str, Any]]:
    from billing.models import BudgetRequest

    return read_db(lambda: list(
        BudgetRequest.objects.filter(membership_id=membership_id).values("status", "note")))


# --- the tests ------------------------------------------------------------------------------


def test_a_used_up_group_budget_is_on_the_meter_and_its_refusal_offers_no_request(
    alice: Any, bob: Any, page: Any, emulator: Any, watch: Watch
) -> None:
    setup = bobs_budgets(bob, group_spent="0.50")
    before = money_and_messages(setup["org"])
    assert before["group_periods"] == [("Research", Decimal("0.50"), Decimal(0))]

    sign_in(page, "bob@example.com")
    meter = page.get_by_test_id("budget-meter")
    expect(meter).to_contain_text(
        f"Group Research: $0.5000 spent, $0.0000 reserved, $0.0000 left of $0.50 · resets "
        f"{setup['resets'].isoformat()}"
    )
    expect(meter).to_contain_text("Your budget: $0.0000 spent this month, no limit")
    expect(meter).not_to_contain_text("Open")
    group_meter = meter.get_by_role("meter", name="Group Research used")
    expect(group_meter).to_have_js_property("value", 0.5)
    expect(group_meter).to_have_js_property("max", 0.5)
    expect(meter.get_by_role("meter")).to_have_count(1)  # bob's and the org's have no limit

    error = refused_after_the_meter_refreshes(page, lambda: send(page, QUESTION))
    expect(error).to_contain_text("Budget used up")
    expect(error).to_contain_text(
        f"Your group Research's monthly budget of $0.50 is used up (or this turn's worst case "
        f"would pass it); it resets on {setup['resets']:%-d %b}. Ask an admin to raise it."
    )
    # A budget request would raise bob's own budget, which has no limit: none is offered.
    expect(error.get_by_role("button", name="Request more")).to_have_count(0)
    expect(error.get_by_label("Note to your admins")).to_have_count(0)
    expect(page.get_by_label("Message", exact=True)).to_have_value(QUESTION)

    assert money_and_messages(setup["org"]) == before
    assert budget_requests(setup["membership"]) == []
    assert not [e for e in emulator.journal if e["path"].endswith("/chat/completions")]
    assert watch.page_errors == [] and watch.dialogs == [] and watch.remote_requests == []


def test_an_org_budget_refusal_offers_no_request_while_bobs_own_budget_has_room(
    alice: Any, bob: Any, page: Any, emulator: Any, watch: Watch
) -> None:
    setup = bobs_budgets(bob, group_spent="0.10", own_limit="5.00", org_limit="1.00",
                         org_spent="1.00")
    before = money_and_messages(setup["org"])

    sign_in(page, "bob@example.com")
    meter = page.get_by_test_id("budget-meter")
    expect(meter).to_contain_text("Your budget: $0.0000 spent, $0.0000 reserved, $5.0000 left of $5.00")
    expect(meter).to_contain_text("Organization: $1.0000 spent, $0.0000 reserved, $0.0000 left of $1.00")
    expect(meter).to_contain_text("Group Research: $0.1000 spent, $0.0000 reserved, $0.4000 left of $0.50")

    error = refused_after_the_meter_refreshes(page, lambda: send(page, QUESTION))
    expect(error).to_contain_text(
        f"Your organization's monthly budget of $1.00 is used up; it resets on "
        f"{setup['resets']:%-d %b}. Ask an admin to raise it."
    )
    expect(error.get_by_role("button", name="Request more")).to_have_count(0)

    assert money_and_messages(setup["org"]) == before
    assert budget_requests(setup["membership"]) == []
    assert watch.page_errors == [] and watch.dialogs == [] and watch.remote_requests == []


def test_a_member_whose_own_budget_is_used_up_is_still_offered_request_more(
    alice: Any, bob: Any, page: Any, emulator: Any, watch: Watch
) -> None:
    from billing.models import BudgetRequest

    setup = bobs_budgets(bob, group_spent="0.10", own_limit="0.05", own_spent="0.05")
    before = money_and_messages(setup["org"])

    sign_in(page, "bob@example.com")
    meter = page.get_by_test_id("budget-meter")
    expect(meter).to_contain_text("Your budget: $0.0500 spent, $0.0000 reserved, $0.0000 left of $0.05")
    expect(meter).to_contain_text("Group Research: $0.1000 spent, $0.0000 reserved, $0.4000 left of $0.50")

    error = refused_after_the_meter_refreshes(page, lambda: send(page, QUESTION))
    expect(error).to_contain_text(
        f"Your monthly budget of $0.05 is used up (or this turn's worst case would pass it); "
        f"it resets on {setup['resets']:%-d %b}."
    )
    request_more = error.get_by_role("button", name="Request more")
    expect(request_more).to_be_visible()
    assert money_and_messages(setup["org"]) == before

    error.get_by_label("Note to your admins").fill("Field study this week.")
    request_more.click()
    expect(error.get_by_role("status")).to_have_text("Sent. Your admins have been notified.")
    expect(request_more).to_be_disabled()
    assert budget_requests(setup["membership"]) == [
        {"status": BudgetRequest.Status.PENDING, "note": "Field study this week."}]
    assert watch.page_errors == [] and watch.dialogs == [] and watch.remote_requests == []
