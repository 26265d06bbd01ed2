"""What an organization spent, by member, model and day, for one calendar month.

Spend comes from billing's own ledger (``Reservation``: one row per answer and per title,
with the model, the day, the token counts and the cost each was settled with), never from
the conversations. Every report is one grouped query whatever the number of members or
days; the rollups by member, by model and by day are sums over its rows.
"""

from __future__ import annotations

import datetime as dt
import re
import zoneinfo
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from django.db.models import Count, F, Sum
from django.db.models.functions import TruncDate

from accounts.models import Membership, Organization
from billing.models import ZERO, Reservation, UsagePeriod
from billing.quotas import BudgetStatus, member_limit, next_period_start, period_start

CSV_HEADER = [
    "member", "model", "day", "messages", "prompt_tokens", "cached_tokens",
    "cache_write_tokens", "completion_tokens", "reasoning_tokens", "cost_usd",
]


class BadPeriod(ValueError):
    pass


def parse_period(value: str | None, organization: Organization) -> dt.date:
    """``YYYY-MM`` to the first day of that month; empty means the current period."""
    if not value:
        return period_start(organization)
    match = re.fullmatch(r"([0-9]{4})-([0-9]{1,2})", value.strip())
    if match is None or not 1 <= int(match[2]) <= 12:
        raise BadPeriod(f"“{value[:20]}” is not a month. Choose a period like "
                        f"{period_start(organization):%Y-%m}.")
    if not 2000 <= int(match[1]) <= 2999:
        raise BadPeriod(f"Choose a period between 2000-01 and 2999-12, not {value[:20]}.")
    return dt.date(int(match[1]), int(match[2]), 1)


@dataclass
class Totals:
    messages: int = 0
    prompt_tokens: int = 0
    cached_tokens: int = 0
    cache_write_tokens: int = 0
    completion_tokens: int = 0
    reasoning_tokens: int = 0
    cost: Decimal = ZERO

    def add(self, row: dict) -> None:
        self.messages += row["messages"]
        self.prompt_tokens += row["prompt_tokens"] or 0
        self.cached_tokens += row["cached_tokens"] or 0
        self.cache_write_tokens += row["cache_write_tokens"] or 0
        self.completion_tokens += row["completion_tokens"] or 0
        self.reasoning_tokens += row["reasoning_tokens"] or 0
        self.cost += row["cost"] or ZERO


@dataclass
class UsageReport:
    organization: Organization
    period: dt.date
    rows: list[dict]
    total: Totals = field(default_factory=Totals)
    by_member: list[tuple[str, Totals]] = field(default_factory=list)
    by_model: list[tuple[str, Totals]] = field(default_factory=list)
    by_day: list[tuple[dt.date, Totals]] = field(default_factory=list)

    @property
    def days(self) -> list[dt.date]:
        end = next_period_start(self.period)
        return [self.period + dt.timedelta(days=n) for n in range((end - self.period).days)]


def _bounds(organization: Organization, start: dt.date) -> tuple[dt.datetime, dt.datetime]:
    tz = zoneinfo.ZoneInfo(organization.time_zone or "UTC")
    end = next_period_start(start)
    return (dt.datetime.combine(start, dt.time.min, tzinfo=tz),
            dt.datetime.combine(end, dt.time.min, tzinfo=tz))


# A deleted member's usage stays, without their address (docs/decisions.md#0024).
DELETED_MEMBER = "(deleted member)"
TITLES_SUFFIX = " (titles)"


def usage_rows(*, organization: Organization, period: dt.date) -> list[dict]:
    """One row per member, model and day (in the org's time zone): two queries, one for
    answers and one for title requests, which are billed like turns and shown as their
    own lines (model "<model> (titles)")."""
    rows = _answer_rows(organization, period) + _title_rows(organization, period)
    for row in rows:
        row["email"] = row["email"] or DELETED_MEMBER
    rows.sort(key=lambda row: (row["day"], row["email"], row["model_name"]))
    return rows


def _ledger(organization: Organization, period: dt.date, kind: str) -> Any:
    """The org's ledger rows of ``kind`` made in the period, grouped by member, model and
    day. A deleted member's rows stay without them (SET_NULL): "(deleted member)"."""
    tz = zoneinfo.ZoneInfo(organization.time_zone or "UTC")
    since, until = _bounds(organization, period)
    return (
        Reservation.objects.filter(
            kind=kind,
            org_period__organization=organization,
            created_at__gte=since,
            created_at__lt=until,
        )
        .annotate(day=TruncDate("created_at", tzinfo=tz), email=F("user__email"))
        .values("user_id", "email", "model_name", "day")
    )


def _totals(*, cost: str) -> dict[str, Any]:
    """The same sums for answers and titles."""
    return {
        "messages": Count("id"),
        "prompt_tokens": Sum("prompt_tokens"),
        "cached_tokens": Sum("cached_tokens"),
        "cache_write_tokens": Sum("cache_write_tokens"),
        "completion_tokens": Sum("completion_tokens"),
        "reasoning_tokens": Sum("reasoning_tokens"),
        "cost": Sum(cost),
    }


def _title_rows(organization: Organization, period: dt.date) -> list[dict]:
    rows = (_ledger(organization, period, Reservation.Kind.TITLE)
            .filter(settled_at__isnull=False)
            .annotate(**_totals(cost="charged_usd"))
            .order_by())
    return [{**row, "model_name": (row["model_name"] or "(unknown)") + TITLES_SUFFIX}
            for row in rows]


def _answer_rows(organization: Organization, period: dt.date) -> list[dict]:
    """Every answer made in the period, live ones included (their cost is not known yet)."""
    return list(_ledger(organization, period, Reservation.Kind.ANSWER)
                .annotate(**_totals(cost="cost_usd"))
                .order_by("day", "email", "model_name"))


def _rollup(rows: Iterable[dict], key: str) -> dict:
    groups: dict = defaultdict(Totals)
    for row in rows:
        groups[row[key]].add(row)
    return groups


def usage_report(*, organization: Organization, period: dt.date) -> UsageReport:
    rows = usage_rows(organization=organization, period=period)
    report = UsageReport(organization=organization, period=period, rows=rows)
    for row in rows:
        report.total.add(row)
    by_member = _rollup(rows, "email")
    report.by_member = sorted(by_member.items(), key=lambda item: (-item[1].cost, item[0]))
    by_model = _rollup(rows, "model_name")
    report.by_model = sorted(by_model.items(), key=lambda item: (-item[1].cost, item[0]))
    by_day = _rollup(rows, "day")
    report.by_day = [(day, by_day.get(day, Totals())) for day in report.days]
    return report


def _cell(value: object) -> object:
    # A spreadsheet runs a cell that starts with = + - @ as a formula; model names and
    # addresses are data, so such text is prefixed with a quote.
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@"):
        return "'" + value
    return value


def csv_rows(report: UsageReport) -> Iterator[list[object]]:
    yield list(CSV_HEADER)
    for row in report.rows:
        yield [
            _cell(row["email"]),
            _cell(row["model_name"] or "(unknown)"),
            row["day"].isoformat(),
            row["messages"],
            row["prompt_tokens"] or 0,
            row["cached_tokens"] or 0,
            row["cache_write_tokens"] or 0,
            row["completion_tokens"] or 0,
            row["reasoning_tokens"] or 0,
            f"{(row['cost'] or ZERO):.6f}",
        ]


def known_periods(organization: Organization) -> list[dt.date]:
    """Months with recorded spend, newest first, always including the current one."""
    starts = set(
        UsagePeriod.objects.filter(organization=organization, user=None)
        .values_list("period_start", flat=True)
    )
    starts.add(period_start(organization))
    return sorted(starts, reverse=True)


@dataclass(frozen=True)
class MemberBudget:
    membership: Membership
    status: BudgetStatus
    overridden: bool


def budget_overview(*, organization: Organization, period: dt.date,
                    ) -> tuple[BudgetStatus, list[MemberBudget]]:
    """Spent, reserved and remaining for the org and each current member: two queries.

    Limits are today's settings, also for past periods (budgets are not versioned).
    """
    memberships = list(Membership.objects.filter(organization=organization)
                       .select_related("user").order_by("user__email"))
    for membership in memberships:
        membership.organization = organization  # spare member_limit() a query per row
    org_status, statuses = _statuses(organization, memberships, period)
    members = [MemberBudget(membership, statuses[membership.pk],
                            membership.monthly_budget_usd is not None)
               for membership in memberships]
    return org_status, members


def members_month(organization: Organization, memberships: Sequence[Membership],
                  ) -> dict[int, BudgetStatus]:
    """This month of each of ``memberships`` (of ``organization``, which they carry), by
    membership id: one query. The Members page's column (accounts.members.SpendSource)."""
    return _statuses(organization, memberships, period_start(organization))[1]


def _statuses(organization: Organization, memberships: Sequence[Membership], period: dt.date,
              ) -> tuple[BudgetStatus, dict[int, BudgetStatus]]:
    rows = {
        row.user_id: row
        for row in UsagePeriod.objects.filter(organization=organization, period_start=period)
    }
    resets_on = next_period_start(period)

    def status(user_id: int | None, limit: Decimal | None) -> BudgetStatus:
        row = rows.get(user_id)
        return BudgetStatus(limit=limit, spent=row.spent_usd if row else ZERO,
                            reserved=row.reserved_usd if row else ZERO, resets_on=resets_on)

    return status(None, organization.monthly_budget_usd), {
        membership.pk: status(membership.user_id, member_limit(membership))
        for membership in memberships
    }


@dataclass(frozen=True)
class Bar:
    day: dt.date
    cost: Decimal
    x: float
    y: float
    width: float
    height: float


@dataclass(frozen=True)
class Chart:
    width: int
    height: int
    plot_height: int
    bars: list[Bar]
    max_cost: Decimal
    ticks: list[tuple[float, str]]


def cost_chart(report: UsageReport, *, width: int = 620, height: int = 180) -> Chart:
    """Geometry for a server-rendered SVG bar chart of cost per day (no script needed)."""
    plot_height = height - 20  # room under the bars for day labels
    days = report.by_day
    slot = width / max(len(days), 1)
    peak = max((totals.cost for _, totals in days), default=ZERO)
    bars = []
    for index, (day, totals) in enumerate(days):
        share = float(totals.cost / peak) if peak else 0.0
        bar_height = round(share * (plot_height - 4), 2)
        if totals.cost and bar_height < 1:
            bar_height = 1.0  # a day with any spend stays visible
        bars.append(Bar(day=day, cost=totals.cost, x=round(index * slot + 1, 2),
                        y=round(plot_height - bar_height, 2), width=round(slot - 2, 2),
                        height=bar_height))
    ticks = [(round(index * slot + slot / 2, 2), f"{day.day}")
             for index, (day, _) in enumerate(days) if day.day in (1, 5, 10, 15, 20, 25, 30)]
    return Chart(width=width, height=height, plot_height=plot_height, bars=bars, max_cost=peak,
                 ticks=ticks)
