"""Budget alerts at 80 % and 100 % (billing.alerts): sent once per line and month, to the
org's admins (and the member, for a member's own budget), and looked for only when the
settlement's own statement says a line was crossed (``alerts.due_sql``)."""

from __future__ import annotations

import itertools
from decimal import Decimal
from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from accounts.models import Membership, Organization, User
from answers.replies import start_turn
from billing import alerts, quotas
from billing.models import Notification, UsagePeriod

pytestmark = [pytest.mark.django_db]


def _turn(user: User) -> Any:
    return start_turn(user=user, organization_id=None, conversation_id=None, content="hello",
                      reasoning_effort="low").assistant_message


def _settle(message: Any, cost: str, capture: Any) -> list[str]:
    """Settle ``message`` at ``cost`` and run what its commit runs; the statements the
    after-commit hooks sent."""
    with capture() as hooks:
        assert quotas.settle(message_id=message.pk, cost=Decimal(cost), estimated=False)
    with CaptureQueriesContext(connection) as after_commit:
        for hook in hooks:
            hook()
    return [query["sql"] for query in after_commit.captured_queries]


def _spent_before(org: Organization, user: User | None, amount: str) -> None:
    """What the row had spent before this settlement (earlier answers this month)."""
    UsagePeriod.objects.filter(organization=org, user=user).update(spent_usd=Decimal(amount))


def _texts() -> list[tuple[str, str]]:
    return sorted(Notification.objects.values_list("user__email", "text"))


def test_a_settlement_that_crosses_no_line_sends_no_alert_query(
    alice: User, org_a: Organization, o3_mini: Any, django_capture_on_commit_callbacks: Any
) -> None:
    org_a.monthly_budget_usd = Decimal("10.00")
    org_a.save()
    message = _turn(alice)

    statements = _settle(message, "0.001000", django_capture_on_commit_callbacks)

    assert not [sql for sql in statements if "billing_usageperiod" in sql], statements
    assert _texts() == []


def test_the_org_budget_alerts_once_at_80_and_once_at_100_percent(
    alice: User, bob: User, org_a: Organization, o3_mini: Any,
    django_capture_on_commit_callbacks: Any, settings: Any,
) -> None:
    settings.MAX_LIVE_ANSWERS_PER_USER = 4
    org_a.monthly_budget_usd = Decimal("1.00")
    org_a.save()
    first, second, third, fourth = (_turn(bob) for _ in range(4))
    _spent_before(org_a, None, "0.790000")

    _settle(first, "0.020000", django_capture_on_commit_callbacks)  # 81 %
    assert _texts() == [("alice@example.com",
                         "The organization has used 80% of its $1.00 monthly budget ($0.81 spent in "
                         f"{UsagePeriod.objects.get(organization=org_a, user=None).period_start:%B %Y}).")]
    quiet = _settle(second, "0.010000", django_capture_on_commit_callbacks)  # 82 %: said already
    assert not [sql for sql in quiet if "billing_usageperiod" in sql]
    assert len(_texts()) == 1

    _spent_before(org_a, None, "0.990000")
    _settle(third, "0.020000", django_capture_on_commit_callbacks)  # 101 %
    assert [text for _, text in _texts() if "100%" in text]
    assert len(_texts()) == 2
    _settle(fourth, "0.020000", django_capture_on_commit_callbacks)
    assert len(_texts()) == 2
    row = UsagePeriod.objects.get(organization=org_a, user=None)
    assert (row.alerted_80, row.alerted_100) == (True, True)


def test_a_member_budget_alerts_the_member_and_the_admins_but_not_after_they_left(
    alice: User, bob: User, org_a: Organization, o3_mini: Any,
    django_capture_on_commit_callbacks: Any,
) -> None:
    Membership.objects.filter(user=bob, organization=org_a).update(monthly_budget_usd=Decimal("0.50"))
    crossing, after_leaving = _turn(bob), _turn(bob)
    _spent_before(org_a, bob, "0.390000")

    _settle(crossing, "0.020000", django_capture_on_commit_callbacks)  # 82 % of bob's $0.50
    assert {email for email, _ in _texts()} == {"alice@example.com", "bob@example.com"}
    assert all("80%" in text for _, text in _texts())

    Membership.objects.filter(user=bob, organization=org_a).delete()
    _spent_before(org_a, bob, "0.600000")
    statements = _settle(after_leaving, "0.020000", django_capture_on_commit_callbacks)
    assert not [sql for sql in statements if "billing_usageperiod" in sql]
    assert len(_texts()) == 2


def _python_rule(spent: Decimal, limit: Decimal | None, alerted_80: bool, alerted_100: bool) -> bool:
    """``send_threshold_alerts``' rule for one row: whether it would flip a flag."""
    if not limit:
        return False
    flags = {"alerted_80": alerted_80, "alerted_100": alerted_100}
    for ratio, flag, _label in alerts.THRESHOLDS:
        if spent < limit * ratio:
            continue
        return not flags[flag]
    return False


SPENT = ("0", "0.79", "0.80", "0.99", "1.00", "1.50")
LIMITS = (None, "0", "1.00")


@pytest.mark.parametrize(("spent", "limit", "alerted_80", "alerted_100"),
                         list(itertools.product(SPENT, LIMITS, (False, True), (False, True))))
def test_the_statement_reads_the_lines_as_the_alerts_do(
    org_a: Organization, spent: str, limit: str | None, alerted_80: bool, alerted_100: bool
) -> None:
    org_a.monthly_budget_usd = None if limit is None else Decimal(limit)
    org_a.save()
    with connection.cursor() as cursor:
        cursor.execute(
            "WITH r (user_id, organization_id, spent_usd, alerted_80, alerted_100) AS"
            " (SELECT CAST(NULL AS integer), %s, CAST(%s AS numeric), %s, %s)"
            f" SELECT {alerts.due_sql('r')}",
            [org_a.pk, spent, alerted_80, alerted_100],
        )
        (due,) = cursor.fetchone()

    expected = _python_rule(Decimal(spent), None if limit is None else Decimal(limit), alerted_80, alerted_100)
    assert bool(due) is expected
