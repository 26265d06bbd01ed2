from __future__ import annotations

import csv
import datetime as dt
import io
import re
from decimal import Decimal

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from accounts.models import Membership, Organization, User
from billing import usage
from billing.models import BudgetRequest, UsagePeriod
from billing.quotas import period_start
from conversations.models import Message
from tests.accounts.factories import add_members, as_text, conversation_for, make_answer

pytestmark = [pytest.mark.django_db, pytest.mark.urls("tests.accounts.urls")]

MARCH = dt.date(2026, 3, 1)


def at(day: int, hour: int = 12, month: int = 3) -> dt.datetime:
    return dt.datetime(2026, month, day, hour, tzinfo=dt.UTC)


@pytest.fixture
def march(alice: User, bob: User, charlie: User, org_a: Organization) -> None:
    """alice $0.15 in two answers, bob $0.50 in two (one on another model); noise elsewhere."""
    mine, his = conversation_for(alice, org_a), conversation_for(bob, org_a)
    make_answer(mine, cost="0.10", prompt=1000, cached=200, completion=500, reasoning=300, when=at(2))
    make_answer(mine, cost="0.05", prompt=400, cached=0, completion=100, reasoning=50, when=at(2, 23))
    make_answer(his, cost="0.20", prompt=2000, cached=0, completion=800, reasoning=600,
                when=at(2), model_name="o4-mini")
    make_answer(his, cost="0.30", prompt=3000, cached=1000, completion=900, reasoning=700, when=at(15))
    Message.objects.create(conversation=mine, role="user", content="hi", created_at=at(2))
    make_answer(mine, cost="1.00", when=at(1, month=4))  # next period
    other = charlie.memberships.get().organization
    make_answer(conversation_for(charlie, other), cost="9.99", when=at(2))  # another org


def _login(client: Client, user: User) -> Client:
    client.force_login(user)
    return client


def test_usage_adds_up_by_member_model_and_day(march: None, org_a: Organization) -> None:
    report = usage.usage_report(organization=org_a, period=MARCH)
    assert report.total.cost == Decimal("0.65")
    assert report.total.messages == 4
    assert [(email, t.cost, t.messages) for email, t in report.by_member] == [
        ("bob@example.com", Decimal("0.50"), 2), ("alice@example.com", Decimal("0.15"), 2),
    ]
    assert [(model, t.cost) for model, t in report.by_model] == [
        ("o3-mini", Decimal("0.45")), ("o4-mini", Decimal("0.20")),
    ]
    by_day = dict(report.by_day)
    assert len(by_day) == 31
    assert by_day[dt.date(2026, 3, 2)].cost == Decimal("0.35")
    assert by_day[dt.date(2026, 3, 15)].cost == Decimal("0.30")
    assert by_day[dt.date(2026, 3, 3)].cost == 0
    alice_totals = dict(report.by_member)["alice@example.com"]
    assert (alice_totals.prompt_tokens, alice_totals.cached_tokens,
            alice_totals.completion_tokens, alice_totals.reasoning_tokens) == (1400, 200, 600, 350)


def test_days_and_periods_follow_the_org_time_zone(alice: User, org_a: Organization) -> None:
    org_a.time_zone = "America/Los_Angeles"
    org_a.save(update_fields=["time_zone"])
    # 05:00 UTC on 1 March is still 28 February in Los Angeles.
    make_answer(conversation_for(alice, org_a), cost="0.40", when=at(1, hour=5))
    february = usage.usage_report(organization=org_a, period=dt.date(2026, 2, 1))
    assert dict(february.by_day)[dt.date(2026, 2, 28)].cost == Decimal("0.40")
    assert usage.usage_report(organization=org_a, period=MARCH).total.cost == 0


def test_the_usage_page_shows_the_selected_period(
    client: Client, march: None, alice: User
) -> None:
    html = as_text(_login(client, alice).get("/org/usage/?period=2026-03"))
    assert "<h1>Usage &amp; budgets</h1>" in html
    assert "$0.6500 by message cost" in html and "$0.500000" in html and "o4-mini" in html
    assert '<option value="2026-03" selected>March 2026</option>' in html
    assert "$0.500000" not in as_text(client.get("/org/usage/?period=2026-04"))


@pytest.mark.parametrize("period", ["garbage", "2026-13", "1999-12", "2026-03-01", "2026_03"])
def test_it_refuses_a_garbage_period_with_a_clear_error(
    client: Client, alice: User, period: str
) -> None:
    _login(client, alice)
    response = client.get("/org/usage/", {"period": period})
    assert response.status_code == 400
    assert "Choose a period" in as_text(response)
    csv_response = client.get("/org/usage.csv", {"period": period})
    assert csv_response.status_code == 400
    assert "Choose a period" in as_text(csv_response)


def test_the_chart_is_a_server_rendered_svg_with_a_bar_per_day_and_no_inline_script(
    client: Client, march: None, alice: User
) -> None:
    html = as_text(_login(client, alice).get("/org/usage/?period=2026-03"))
    svg = re.search(r"<svg class=\"org-chart\".*?</svg>", html, re.S)
    assert svg
    bars = re.findall(r'<rect class="org-chart__bar"[^>]*height="([\d.]+)"', svg[0])
    assert len(bars) == 31
    assert float(bars[1]) > float(bars[14]) > 0 == float(bars[2])  # 2 Mar > 15 Mar > 3 Mar
    assert "2 Mar: $0.3500" in svg[0]
    assert not re.search(r"<script(?![^>]*\bsrc=)", html)


def test_the_csv_has_one_row_per_member_model_and_day(
    client: Client, march: None, alice: User
) -> None:
    response = _login(client, alice).get("/org/usage.csv?period=2026-03")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/csv")
    assert "attachment" in response["Content-Disposition"]
    rows = list(csv.reader(io.StringIO(as_text(response))))
    assert rows == [  # by day, then member, then model
        usage.CSV_HEADER,
        ["alice@example.com", "o3-mini", "2026-03-02", "2", "1400", "200", "0", "600", "350",
         "0.150000"],
        ["bob@example.com", "o4-mini", "2026-03-02", "1", "2000", "0", "0", "800", "600", "0.200000"],
        ["bob@example.com", "o3-mini", "2026-03-15", "1", "3000", "1000", "0", "900", "700",
         "0.300000"],
    ]
    assert "secret plan" not in as_text(response)


def test_the_csv_defuses_cells_a_spreadsheet_would_run(
    client: Client, alice: User, org_a: Organization
) -> None:
    make_answer(conversation_for(alice, org_a), model_name="=HYPERLINK(\"x\")", when=at(3))
    rows = list(csv.reader(io.StringIO(as_text(_login(client, alice).get("/org/usage.csv?period=2026-03")))))
    assert rows[1][1] == "'=HYPERLINK(\"x\")"


def test_the_page_shows_spent_reserved_and_remaining_for_the_org_and_each_member(
    client: Client, alice: User, bob: User, org_a: Organization
) -> None:
    org_a.monthly_budget_usd, org_a.member_budget_usd = Decimal("10"), Decimal("3")
    org_a.save(update_fields=["monthly_budget_usd", "member_budget_usd"])
    Membership.objects.filter(user=bob).update(monthly_budget_usd=Decimal("2"))
    start = period_start(org_a)
    UsagePeriod.objects.create(organization=org_a, period_start=start, spent_usd=Decimal("1.5"),
                               reserved_usd=Decimal("0.5"))
    UsagePeriod.objects.create(organization=org_a, user=bob, period_start=start,
                               spent_usd=Decimal("0.5"), reserved_usd=Decimal("0.25"))
    report = usage.budget_overview(organization=org_a, period=start)
    assert report[0].remaining == Decimal("8.0")
    by_email = {item.membership.user.email: item for item in report[1]}
    assert by_email["bob@example.com"].status.remaining == Decimal("1.25")
    assert by_email["alice@example.com"].status.remaining == Decimal("3")
    assert by_email["alice@example.com"].overridden is False
    html = as_text(_login(client, alice).get("/org/usage/"))
    assert "$8.00" in html and "$1.25" in html and "$0.2500" in html and "$3.00" in html


def test_the_budget_form_fields_carry_the_exact_labels(client: Client, alice: User) -> None:
    html = as_text(_login(client, alice).get("/org/usage/"))
    assert '<label for="id_monthly_budget_usd">Org monthly budget (USD)</label>' in html
    assert '<label for="id_member_budget_usd">Member monthly budget (USD)</label>' in html


def test_alice_sets_the_org_budgets_and_empty_means_no_limit(
    client: Client, alice: User, org_a: Organization
) -> None:
    _login(client, alice)
    response = client.post("/org/budgets/", {"monthly_budget_usd": "100", "member_budget_usd": "7.5"})
    assert response.status_code == 302
    org_a.refresh_from_db()
    assert (org_a.monthly_budget_usd, org_a.member_budget_usd) == (Decimal("100"), Decimal("7.5"))
    client.post("/org/budgets/", {"monthly_budget_usd": "", "member_budget_usd": ""})
    org_a.refresh_from_db()
    assert (org_a.monthly_budget_usd, org_a.member_budget_usd) == (None, None)


@pytest.mark.parametrize(("data", "text"), [
    ({"monthly_budget_usd": "-5", "member_budget_usd": "1"}, "A budget cannot be negative"),
    ({"monthly_budget_usd": "5", "member_budget_usd": "lots"}, "Enter an amount in US dollars"),
    ({"monthly_budget_usd": "Infinity", "member_budget_usd": ""}, "Enter an amount in US dollars"),
])
def test_it_refuses_bad_org_budgets_and_changes_nothing(
    client: Client, alice: User, org_a: Organization, data: dict[str, str], text: str
) -> None:
    org_a.monthly_budget_usd = Decimal("50")
    org_a.save(update_fields=["monthly_budget_usd"])
    response = _login(client, alice).post("/org/budgets/", data)
    assert response.status_code == 400
    assert text in as_text(response)
    org_a.refresh_from_db()
    assert (org_a.monthly_budget_usd, org_a.member_budget_usd) == (Decimal("50"), None)


def test_the_usage_page_and_csv_take_the_same_number_of_queries_for_3_and_30_members(
    client: Client, alice: User, org_a: Organization
) -> None:
    def grow(count: int, prefix: str) -> None:
        users = add_members(org_a, count, answers_each=2, prefix=prefix)
        start = period_start(org_a)
        UsagePeriod.objects.bulk_create(
            [UsagePeriod(organization=org_a, user=user, period_start=start) for user in users]
        )
        BudgetRequest.objects.bulk_create([
            BudgetRequest(membership=membership, note="more please")
            for membership in Membership.objects.filter(user__in=users)
        ])

    _login(client, alice)
    grow(2, "few")
    client.get("/org/usage/")
    counts = []
    for extra in (0, 27):
        if extra:
            grow(extra, "many")
        with CaptureQueriesContext(connection) as page:
            html = as_text(client.get("/org/usage/"))
        with CaptureQueriesContext(connection) as export:
            client.get("/org/usage.csv")
        counts.append((len(page), len(export)))
    assert "many26@example.com" in html
    assert counts[0] == counts[1]
