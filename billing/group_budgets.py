"""Group budgets: a turn of a member of groups with a budget holds its worst case on each
of those groups' months too, and settles there like on the org's and member's months
(``billing.quotas``).

On PostgreSQL the group holds are part of the turn's one hold statement (``hold_ctes``):
a turn starts in the same number of statements whether or not its person is in a
budgeted group. SQLite (embedded mode) runs them one by one (``hold_one_by_one``).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from django.db import transaction
from django.db.models import DecimalField, F, FilteredRelation, Q, Value
from django.db.models.functions import Round

from accounts.models import Group, GroupMembership, Membership
from billing.group_budget_models import ZERO, GroupHold, GroupUsagePeriod
from chatsite.errors import Refused

PLACES = 6
MONEY: DecimalField[Decimal, Decimal] = DecimalField(max_digits=14, decimal_places=PLACES)

PERIODS = GroupUsagePeriod._meta.db_table
HOLDS = GroupHold._meta.db_table
GROUPS = Group._meta.db_table
MEMBERS = GroupMembership._meta.db_table


def _budgeted_sql() -> str:
    """The person's groups in the org that have a budget: (id, lim)."""
    return (f"SELECT g.id, g.monthly_budget_usd AS lim FROM {GROUPS} AS g"
            f" JOIN {MEMBERS} AS gm ON gm.group_id = g.id"
            f" WHERE gm.user_id = %s AND g.organization_id = %s"
            f" AND g.monthly_budget_usd IS NOT NULL")


def _upsert_sql(source: str) -> str:
    """Hold ``amount`` on each group month of ``source`` (rows of id, lim) where it still
    fits the group's budget, creating the month's row on its first turn; RETURNING the
    rows held. A group whose budget is below the amount gets no row: the caller compares
    counts. (``lim - amount >= 0``, not ``lim >= amount``: SQLite is handed the amount as
    text, which compares greater than any number.)

    Race: as for the org's and member's months (``quotas._hold_sql``): ON CONFLICT's
    UPDATE is evaluated, WHERE included, on the locked latest row version."""
    return (
        f"INSERT INTO {PERIODS} AS gp (group_id, period_start, spent_usd, reserved_usd)"
        f" SELECT id, %s, 0, %s FROM {source} WHERE lim - %s >= 0"
        f" ON CONFLICT (group_id, period_start) DO UPDATE"
        f" SET reserved_usd = ROUND(gp.reserved_usd + excluded.reserved_usd, {PLACES})"
        f" WHERE gp.spent_usd <= ROUND((SELECT monthly_budget_usd FROM {GROUPS}"
        f" WHERE id = gp.group_id) - %s - gp.reserved_usd, {PLACES})"
        f" RETURNING id"
    )


def hold_ctes(*, organization_id: int, user_id: int, start: dt.date,
              amount: Decimal) -> tuple[str, list[object]]:
    """Two CTEs for the turn's hold statement: ``budgeted`` (the person's budgeted
    groups) and ``grp`` (the group months held)."""
    return (f"budgeted AS ({_budgeted_sql()}), grp AS ({_upsert_sql('budgeted')})",
            [user_id, organization_id, start, amount, amount, amount])


# Appended to the statement's INSERT of the reservation: it is saved only if every
# budgeted group held (the counts match), and its holds are recorded from the same rows.
SAVED_ONLY_IF_GROUPS_HELD = " AND (SELECT count(*) FROM grp) = (SELECT count(*) FROM budgeted)"
HELD_CTE = (f", held AS (INSERT INTO {HOLDS} (reservation_id, period_id)"
            f" SELECT saved.id, grp.id FROM saved, grp)")
SHORT_SELECT = "(SELECT count(*) FROM budgeted) - (SELECT count(*) FROM grp)"


def hold_one_by_one(cursor: Any, *, organization_id: int, user_id: int, start: dt.date,
                    amount: Decimal) -> tuple[list[int], bool]:
    """SQLite: the same holds as ``hold_ctes``, one group at a time. Returns the months
    held and whether every budgeted group held."""
    cursor.execute(_budgeted_sql(), [user_id, organization_id])
    budgeted = cursor.fetchall()
    held: list[int] = []
    for group_id, limit in budgeted:
        cursor.execute(_upsert_sql("(SELECT %s AS id, %s AS lim) AS one"),
                       [start, amount, group_id, limit, amount, amount])
        row = cursor.fetchone()
        if row is None:
            return held, False
        held.append(int(row[0]))
    return held, True


def record_holds(reservation_id: int, period_ids: list[int]) -> None:
    GroupHold.objects.bulk_create(
        [GroupHold(reservation_id=reservation_id, period_id=pk) for pk in period_ids])


@dataclass(frozen=True)
class GroupMonth:
    """A budgeted group of the person and what its members spent and hold this month."""

    pk: int
    name: str
    limit: Decimal
    spent: Decimal
    reserved: Decimal


def months_of(membership: Membership, start: dt.date) -> list[GroupMonth]:
    """The person's groups in the membership's org that have a budget, with their month
    starting ``start`` (nothing spent or held before its first turn), by name: one query
    however many groups (the chat page's meter reads it on every answer)."""
    rows = (
        Group.objects.filter(organization_id=membership.organization_id,
                             memberships__user_id=membership.user_id,
                             monthly_budget_usd__isnull=False)
        .annotate(month=FilteredRelation("usage_periods",
                                         condition=Q(usage_periods__period_start=start)))
        .order_by("name", "pk")
        .values_list("pk", "name", "monthly_budget_usd", "month__spent_usd",
                     "month__reserved_usd")
    )
    return [GroupMonth(pk=pk, name=name, limit=limit, spent=spent or ZERO,
                       reserved=reserved or ZERO)
            for pk, name, limit, spent, reserved in rows if limit is not None]


def refusal(membership: Membership, start: dt.date, amount: Decimal,
            resets: dt.date) -> Refused:
    """Which of the person's groups has no room, for a refusal that names it (read only
    when a turn was refused: the hold statement said only that one group had none)."""
    for group in sorted(months_of(membership, start), key=lambda month: month.pk):
        if group.spent + group.reserved + amount > group.limit:
            return Refused(
                "quota_exceeded",
                f"Your group {group.name}'s monthly budget of ${group.limit:,.2f} is used up (or "
                f"this turn's worst case would pass it); it resets on {resets:%-d %b}. Ask an "
                "admin to raise it.",
            )
    return Refused("quota_exceeded", "A group budget of yours is used up. Ask an admin.")


def held_periods(reservation_id: int) -> list[int]:
    return list(GroupHold.objects.filter(reservation_id=reservation_id)
                .values_list("period_id", flat=True))


def extend_holds(period_ids: list[int], amount: Decimal) -> bool:
    """Add ``amount`` to the held group months if each still fits its group's budget.
    Call inside the extension's transaction, after the org's and member's months are
    locked (the same order as the holds take them); False when one has no room (the
    caller rolls back)."""
    assert transaction.get_connection().in_atomic_block
    # Race: other members' turns hold and settle on the same months; locked in id order.
    months = list(GroupUsagePeriod.objects.select_for_update(of=("self",))
                  .select_related("group").filter(pk__in=period_ids).order_by("pk"))
    for month in months:
        limit = month.group.monthly_budget_usd
        row = GroupUsagePeriod.objects.filter(pk=month.pk)
        if limit is not None:
            row = row.filter(spent_usd__lte=Round(
                Value(limit - amount, output_field=MONEY) - F("reserved_usd"), PLACES))
        if not row.update(reserved_usd=Round(F("reserved_usd") + amount, PLACES)):
            return False
    return True


def settle_cte(charge_param: str) -> str:
    """A CTE for the settlement statement (``quotas._settle_in_one_statement``): move the
    settled reservation's amount from reserved to spent on its group months. It waits
    for ``locked`` (the org's and member's months) first, so it locks in the holds' order."""
    return (f", grouped AS (UPDATE {PERIODS} AS gp"
            f" SET reserved_usd = ROUND(gp.reserved_usd - settled.amount_usd, {PLACES}),"
            f" spent_usd = ROUND(gp.spent_usd + LEAST({charge_param}, settled.amount_usd), {PLACES})"
            f" FROM settled, {HOLDS} AS h"
            f" WHERE h.reservation_id = settled.id AND gp.id = h.period_id"
            f" AND (SELECT count(*) FROM locked) > 0)")


def charge(reservation_id: int, amount: Decimal, charged: Decimal) -> None:
    """``settle_cte`` one row at a time (SQLite, and title settlements)."""
    period_ids = held_periods(reservation_id)
    if not period_ids:
        return
    # Race: as in ``extend_holds``.
    list(GroupUsagePeriod.objects.select_for_update().filter(pk__in=period_ids).order_by("pk")
         .values_list("pk", flat=True))
    GroupUsagePeriod.objects.filter(pk__in=period_ids).update(
        reserved_usd=Round(F("reserved_usd") - amount, PLACES),
        spent_usd=Round(F("spent_usd") + charged, PLACES))
