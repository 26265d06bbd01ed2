"""Budgets that never overspend: reserve the worst case, settle to the actual cost.

Money is Decimal throughout. A turn may start only if its worst case (prompt tokens
at the input price plus the turn's whole completion cap at the output price) fits
both the org's and the member's remaining monthly budget, and that of each of the
member's groups with a budget (``billing.group_budgets``). A request of the turn that
the worst case did not include (a tool round, a retry) extends the reservation first, on
the same terms (``extend``), and settlement never charges more than is reserved.
"""

from __future__ import annotations

import calendar
import datetime as dt
import logging
import zoneinfo
from dataclasses import dataclass
from decimal import ROUND_CEILING, Decimal
from typing import TYPE_CHECKING, Any, Protocol

from django.db import transaction
from django.db.models import DecimalField, F, Value
from django.db.models.expressions import CombinedExpression
from django.db.models.functions import Round
from django.utils import timezone

from accounts.models import Membership
from billing import group_budgets
from billing.alerts import due_sql as alert_due_sql
from billing.alerts import send_threshold_alerts
from billing.models import ZERO, Reservation, UsagePeriod
from chatsite import metrics
from chatsite.errors import Refused
from llm import pricing
from llm.pricing import PriceSource
from llm.types import Usage

if TYPE_CHECKING:
    from accounts.models import Organization
    from llm.models import ModelProfile

logger = logging.getLogger(__name__)

CENT = Decimal("0.000001")
PLACES = 6  # micro-dollars: every money column has decimal_places=6
MONEY: DecimalField[Decimal, Decimal] = DecimalField(max_digits=14, decimal_places=PLACES)


def exact(expression: CombinedExpression) -> Round:
    """Money arithmetic in the database, rounded to the micro-dollar.

    PostgreSQL computes ``numeric`` exactly, so this is a no-op there. SQLite (embedded
    mode) computes in binary floating point: 0.1 + 0.2 - 0.3 leaves 5.6e-17, and repeated
    holds and releases leave ``reserved_usd`` a hair below zero, which fails its check
    constraint inside finish(). Rounding each result to six places stores the double
    nearest the exact decimal, so the error never accumulates and a full release lands
    on exactly zero.
    """
    return Round(expression, PLACES)


def period_start(organization: Organization, when: dt.datetime | None = None) -> dt.date:
    tz = zoneinfo.ZoneInfo(organization.time_zone or "UTC")
    local = timezone.localtime(when or timezone.now(), tz)
    return local.date().replace(day=1)


def next_period_start(start: dt.date) -> dt.date:
    days = calendar.monthrange(start.year, start.month)[1]
    return start + dt.timedelta(days=days)


def member_limit(membership: Membership) -> Decimal | None:
    if membership.monthly_budget_usd is not None:
        return membership.monthly_budget_usd
    return membership.organization.member_budget_usd


def worst_case_cost(prices: PriceSource, *, prompt_tokens: int, completion_cap: int) -> Decimal:
    """Every prompt token uncached, and the whole cap spent (reasoning included)."""
    return pricing.worst_case_cost(prices, prompt_tokens=prompt_tokens, completion_cap=completion_cap)


def _hold_sql(organization: Organization, user_id: int | None, start: dt.date, amount: Decimal,
              limit: Decimal | None) -> tuple[str, list[object]]:
    """Add ``amount`` to the period row's reservation if it still fits ``limit``, creating
    the row on the month's first turn, in one upsert that returns the row's id, or no row
    when the hold would pass the limit (nothing changed). The caller refuses an amount
    over the limit itself: a fresh row (nothing spent) is inserted whatever the limit.

    Race: the first turns of a month insert the row concurrently; ON CONFLICT turns the
    loser's INSERT into the UPDATE, which PostgreSQL evaluates (WHERE included) on the
    locked, latest row version, so at most the turns that fit get through. PostgreSQL and
    SQLite (embedded mode) both speak this upsert, partial-index target included.
    """
    table = UsagePeriod._meta.db_table
    target = ("(organization_id, period_start) WHERE user_id IS NULL" if user_id is None
              else "(organization_id, user_id, period_start) WHERE user_id IS NOT NULL")
    fits = ""
    params: list[object] = [organization.pk, user_id, start, ZERO, amount, False, False]
    if limit is not None:
        # The same test as before the upsert existed: spent <= (limit - amount) - reserved,
        # rounded like every money expression (see ``exact``).
        fits = f" WHERE {table}.spent_usd <= ROUND(%s - {table}.reserved_usd, {PLACES})"
        params.append(limit - amount)
    sql = (
        f"INSERT INTO {table} (organization_id, user_id, period_start, spent_usd, reserved_usd,"
        f" alerted_80, alerted_100) VALUES (%s, %s, %s, %s, %s, %s, %s)"
        f" ON CONFLICT {target} DO UPDATE"
        f" SET reserved_usd = ROUND({table}.reserved_usd + excluded.reserved_usd, {PLACES})"
        f"{fits} RETURNING id"
    )
    return sql, params


def _refusal(which: str, limit: Decimal, start: dt.date) -> Refused:
    resets = next_period_start(start)
    if which == "org":
        text = (f"Your organization's monthly budget of ${limit:,.2f} is used up; it resets on "
                f"{resets:%-d %b}. Ask an admin to raise it.")
    else:
        text = (f"Your monthly budget of ${limit:,.2f} is used up (or this turn's worst case "
                f"would pass it); it resets on {resets:%-d %b}. Use “Request more” to ask an admin.")
    return Refused("quota_exceeded", text)


class PendingAnswer(Protocol):
    """What a turn's reservation reads of its answer, just saved as pending (the
    conversations app's assistant message): the ledger row keeps these facts."""

    @property
    def pk(self) -> Any: ...
    @property
    def created_at(self) -> dt.datetime: ...
    @property
    def model_name(self) -> str: ...
    @property
    def reasoning_effort(self) -> str: ...
    @property
    def max_completion_tokens(self) -> int | None: ...
    @property
    def price_snapshot(self) -> Any: ...


def reserve(*, membership: Membership, message: PendingAnswer, profile: ModelProfile,
            prompt_tokens: int) -> Reservation:
    """Hold the turn's worst case on both rows. Call inside the turn's transaction:
    a refusal raises, and the rollback also undoes the first row's hold."""
    assert transaction.get_connection().in_atomic_block
    # The answer's snapshotted prices (taken when the turn started), so the reservation
    # and the settlement price the turn alike even if an admin edits the profile between.
    prices = pricing.prices_for_answer(snapshot=message.price_snapshot, profile=profile)
    amount = worst_case_cost(
        prices, prompt_tokens=prompt_tokens,
        completion_cap=message.max_completion_tokens or profile.max_completion_tokens,
    )
    return _hold_and_save(membership, Reservation(
        message_id=message.pk, user_id=membership.user_id, amount_usd=amount,
        prompt_tokens_estimate=prompt_tokens, profile=profile, model_name=message.model_name,
        reasoning_effort=message.reasoning_effort, created_at=message.created_at,
    ))


def reserve_title(*, membership: Membership, prices: PriceSource, model_name: str,
                  prompt_tokens: int, completion_cap: int) -> Reservation:
    """Hold a title request's worst case on both rows, like a turn's. Call inside a
    transaction; a refusal raises and nothing is held."""
    assert transaction.get_connection().in_atomic_block
    amount = worst_case_cost(prices, prompt_tokens=prompt_tokens, completion_cap=completion_cap)
    return _hold_and_save(membership, Reservation(
        kind=Reservation.Kind.TITLE, user_id=membership.user_id, model_name=model_name,
        amount_usd=amount, prompt_tokens_estimate=prompt_tokens,
    ))


def _hold_and_save(membership: Membership, reservation: Reservation) -> Reservation:
    """Hold the reservation's amount on the org's and the member's rows and save it
    with their ids, or refuse (the caller's transaction rolls back whatever was held).

    On PostgreSQL the two holds and the INSERT are one statement (a turn starts in a
    fixed handful, see conversations/tests: test_turn_query_budget): the INSERT takes
    its rows from the holds, so it inserts nothing unless both held. SQLite (embedded
    mode) cannot put an INSERT in a WITH clause and runs the three in turn.
    """
    organization, amount = membership.organization, reservation.amount_usd
    start = period_start(organization)
    org_limit, limit = organization.monthly_budget_usd, member_limit(membership)
    if org_limit is not None and amount > org_limit:
        raise _refusal("org", org_limit, start)
    if limit is not None and amount > limit:
        raise _refusal("member", limit, start)
    org_sql, org_params = _hold_sql(organization, None, start, amount, org_limit)
    member_sql, member_params = _hold_sql(organization, membership.user_id, start, amount, limit)
    group_holds: list[int] = []
    connection = transaction.get_connection()
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            insert_sql, insert_params = _insert_from_holds(reservation)
            groups_sql, groups_params = group_budgets.hold_ctes(
                organization_id=organization.pk, user_id=membership.user_id, start=start,
                amount=amount)
            cursor.execute(
                f"WITH org AS ({org_sql}), member AS ({member_sql}), {groups_sql},"
                f" saved AS ({insert_sql}{group_budgets.SAVED_ONLY_IF_GROUPS_HELD}"
                f" RETURNING id){group_budgets.HELD_CTE}"
                " SELECT (SELECT id FROM org), (SELECT id FROM member), (SELECT id FROM saved),"
                f" {group_budgets.SHORT_SELECT}",
                [*org_params, *member_params, *groups_params, *insert_params],
            )
            org_row, member_row, saved, groups_short = cursor.fetchone()
        else:
            org_row, member_row, saved = (
                _returned_id(cursor, org_sql, org_params),
                _returned_id(cursor, member_sql, member_params),
                None,
            )
            group_holds, all_held = group_budgets.hold_one_by_one(
                cursor, organization_id=organization.pk, user_id=membership.user_id,
                start=start, amount=amount)
            groups_short = 0 if all_held else 1
    if org_row is None:
        raise _refusal("org", org_limit or ZERO, start)
    if member_row is None:
        raise _refusal("member", limit or ZERO, start)
    if groups_short:
        raise group_budgets.refusal(membership, start, amount, next_period_start(start))
    reservation.org_period_id, reservation.member_period_id = org_row, member_row
    if saved is None:
        reservation.save(force_insert=True)
        group_budgets.record_holds(reservation.pk, group_holds)
    else:
        reservation.pk = saved
        reservation._state.adding = False
        reservation._state.db = "default"
    return reservation


def _returned_id(cursor: Any, sql: str, params: list[object]) -> int | None:
    cursor.execute(sql, params)
    row = cursor.fetchone()
    return None if row is None else int(row[0])


def _insert_from_holds(reservation: Reservation) -> tuple[str, list[object]]:
    """``INSERT INTO billing_reservation ... SELECT ... FROM org, member``: every field as
    the model would save it, the period ids from the holds' rows."""
    connection = transaction.get_connection()
    quote = connection.ops.quote_name
    columns, values, params = [], [], []
    for field in Reservation._meta.concrete_fields:
        if field.primary_key:
            continue
        columns.append(quote(field.column))
        if field.attname == "org_period_id":
            values.append("org.id")
        elif field.attname == "member_period_id":
            values.append("member.id")
        else:
            values.append("%s")
            params.append(field.get_db_prep_save(field.pre_save(reservation, add=True), connection))
    table = quote(Reservation._meta.db_table)
    # WHERE TRUE: the caller may add conditions (group budgets) before RETURNING.
    return (f"INSERT INTO {table} ({', '.join(columns)}) SELECT {', '.join(values)}"
            f" FROM org, member WHERE TRUE", params)


def extend(*, message_id: int, amount: Decimal) -> Decimal | None:
    """Add ``amount`` to a live turn's reservation, held on the org's and the member's
    rows only if it fits both budgets (a tool round or a retry the turn's worst case
    did not include). Returns the reservation's new amount, or None when it does not fit
    or the turn has settled (nothing changed)."""
    amount = amount.quantize(CENT, rounding=ROUND_CEILING)
    with transaction.atomic():
        reservation = (
            Reservation.objects.select_for_update()
            .filter(message_id=message_id, settled_at=None).first()
        )
        if reservation is None:
            return None
        if amount <= 0:
            return reservation.amount_usd
        rows = [row for row in (reservation.org_period_id, reservation.member_period_id) if row]
        periods = {
            # of=("self",): lock the budget rows, not the organization read along.
            period.pk: period for period in UsagePeriod.objects.select_for_update(of=("self",))
            .select_related("organization").filter(pk__in=rows).order_by("pk")
        }
        # Race: other turns' holds and settlements change the same rows; with the rows
        # locked in id order (as ``_charge`` and the holds take them) each conditional
        # update below sees the latest spent and reserved, and no two of them deadlock.
        for row in sorted(periods):
            limit = _limit_of(periods[row])
            held = UsagePeriod.objects.filter(pk=row)
            if limit is not None:
                held = held.filter(spent_usd__lte=exact(Value(limit - amount, output_field=MONEY)
                                                        - F("reserved_usd")))
            if not held.update(reserved_usd=exact(F("reserved_usd") + amount)):
                transaction.set_rollback(True)
                return None
        # The group months the turn holds, after the org's and member's (the holds' order).
        group_months = group_budgets.held_periods(reservation.pk)
        if group_months and not group_budgets.extend_holds(group_months, amount):
            transaction.set_rollback(True)
            return None
        reservation.amount_usd += amount
        reservation.save(update_fields=["amount_usd"])
    return reservation.amount_usd


def _limit_of(period: UsagePeriod) -> Decimal | None:
    """The budget a period row enforces: the org's, or its member's (a row whose user has
    left the org enforces nothing more: that member spends no more)."""
    if period.user_id is None:
        return period.organization.monthly_budget_usd
    membership = (Membership.objects.select_related("organization")
                  .filter(organization_id=period.organization_id, user_id=period.user_id).first())
    return ZERO if membership is None else member_limit(membership)


def settle(*, message_id: int, cost: Decimal, estimated: bool, outcome: str = "",
           usage: Usage | None = None) -> bool:
    """Charge the actual cost and release the rest, once per message.

    ``outcome`` (the answer's final status) and ``usage`` (the token counts saved on it)
    go on the ledger row for the usage report and the estimates; every answer's ending
    passes them. Returns False when there was nothing to settle (already settled, or no
    reservation). Must run in the same transaction as the message's final state.
    """
    connection = transaction.get_connection()
    assert connection.in_atomic_block
    usage = usage or Usage()
    if connection.vendor == "postgresql":
        return _settle_in_one_statement("message_id = %s", message_id, cost, estimated,
                                        outcome, usage, what=f"message {message_id}")
    # Race: a redelivered task, a late worker and the reaper may all try to settle one
    # turn; the row lock serialises them and settled_at makes every later one a no-op.
    reservation = (
        Reservation.objects.select_for_update().filter(message_id=message_id, settled_at=None).first()
    )
    if reservation is None:
        return False
    _record(reservation, cost, outcome, usage)
    _charge(reservation, cost, estimated, recorded=[*LEDGER_FIELDS, "cost_usd", "outcome"])
    return True


# The token counts an answer's ledger row records when it settles (a title's, too).
LEDGER_FIELDS = ("prompt_tokens", "cached_tokens", "cache_write_tokens", "completion_tokens",
                 "reasoning_tokens")


def _record(reservation: Reservation, cost: Decimal, outcome: str, usage: Usage) -> None:
    reservation.cost_usd = cost.quantize(CENT)
    reservation.outcome = outcome
    for name in LEDGER_FIELDS:
        setattr(reservation, name, getattr(usage, name))


def _settle_in_one_statement(which: str, key: int, cost: Decimal, estimated: bool, outcome: str,
                             usage: Usage, *, what: str, billed: bool = True) -> bool:
    """``_charge`` as one statement (PostgreSQL): mark the reservation settled and move
    its amount from reserved to spent on both period rows, at the end of every answer and
    title.

    Race: as in ``settle``. The UPDATE's ``settled_at IS NULL`` is re-checked on the
    locked, latest row version, so of two settlements of one turn the second changes
    nothing, the period rows included (they are updated only from the first's RETURNING).
    The period rows are locked in id order (the org's row, made with or before any
    member's row of its month, first), the order a turn's holds take them in, so a
    settlement and another turn's holds cannot deadlock.

    ``which`` picks the reservation (``key``, its one parameter): an answer's by its
    message, a title's by its id. ``billed``: the row records the cost billed to it (an
    answer's "message cost"; a title's stays empty, as before).
    """
    reservations, periods = Reservation._meta.db_table, UsagePeriod._meta.db_table
    charge = cost.quantize(CENT)
    ledger = "".join(f", {name} = %s" for name in LEDGER_FIELDS)
    with transaction.get_connection().cursor() as cursor:
        cursor.execute(
            f"WITH settled AS (UPDATE {reservations} SET charged_usd = LEAST(%s, amount_usd),"
            f" cost_usd = %s, outcome = %s{ledger},"
            f" estimated = %s, settled_at = %s WHERE {which} AND settled_at IS NULL"
            f" RETURNING id, amount_usd, org_period_id, member_period_id),"
            f" locked AS (SELECT period.id FROM {periods} AS period, settled"
            f" WHERE period.id IN (settled.org_period_id, settled.member_period_id)"
            f" ORDER BY period.id FOR UPDATE OF period),"
            f" charged AS (UPDATE {periods} AS period"
            f" SET reserved_usd = ROUND(period.reserved_usd - settled.amount_usd, {PLACES}),"
            f" spent_usd = ROUND(period.spent_usd + LEAST(%s, settled.amount_usd), {PLACES})"
            f" FROM settled WHERE period.id IN (SELECT id FROM locked)"
            f" RETURNING period.user_id, period.organization_id, period.spent_usd,"
            f" period.alerted_80, period.alerted_100)"
            f"{group_budgets.settle_cte('%s')}"
            f" SELECT org_period_id, member_period_id, amount_usd,"
            f" (SELECT organization_id FROM {periods} WHERE id = settled.org_period_id),"
            f" {alert_due_sql('charged')}"
            f" FROM settled",
            [charge, charge if billed else None, outcome,
             *(getattr(usage, name) for name in LEDGER_FIELDS),
             estimated, timezone.now(), key, charge, charge],
        )
        row = cursor.fetchone()
    if row is None:
        return False
    _over_reservation(what, charge, row[2])
    if row[4]:  # a budget line was crossed: the alerts read their rows and send
        _alerts_after_commit([period for period in row[:2] if period])
    metrics.spent_on_commit(row[3], min(charge, row[2]))
    return True


def settle_title(*, reservation_id: int, cost: Decimal, usage: dict[str, int]) -> bool:
    """Charge a title request what the provider reported (``usage``: the four token
    counts) and release the rest, once. Call inside a transaction."""
    connection = transaction.get_connection()
    assert connection.in_atomic_block
    if connection.vendor == "postgresql":
        # One statement, as an answer's: the org's row is locked only for the statement
        # and the commit, not across the round trips of the row-by-row path.
        # The ledger's token columns, as the reaper builds them: a count not given is 0.
        counts: dict[str, Any] = {name: usage.get(name, 0) for name in LEDGER_FIELDS}
        recorded = Usage(**counts)
        return _settle_in_one_statement(
            f"id = %s AND kind = '{Reservation.Kind.TITLE.value}'", reservation_id, cost,
            False, "", recorded, what=f"reservation {reservation_id}", billed=False)
    # Race: none expected (one task per title), but a redelivered task must not charge
    # twice; the row lock and settled_at make a second settlement a no-op.
    reservation = (
        Reservation.objects.select_for_update()
        .filter(pk=reservation_id, kind=Reservation.Kind.TITLE, settled_at=None).first()
    )
    if reservation is None:
        return False
    if usage:
        for name, value in usage.items():
            setattr(reservation, name, value)
        reservation.save(update_fields=list(usage))
    _charge(reservation, cost, False)
    return True


def _charge(reservation: Reservation, cost: Decimal, estimated: bool, *,
            recorded: list[str] | None = None) -> None:
    """Call with the reservation row locked and unsettled; ``recorded``: ledger fields
    set on it to save along."""
    charge = min(cost.quantize(CENT), reservation.amount_usd)
    _over_reservation(f"reservation {reservation.pk}", cost.quantize(CENT), reservation.amount_usd)
    # A deleted member's row is gone (SET_NULL); the org's row still takes the charge.
    rows = [row for row in (reservation.org_period_id, reservation.member_period_id) if row]
    # Race: turns' holds and other settlements change the same two rows at once. All of
    # them lock the rows in id order (the org's row first), or two of them could each hold
    # one row and wait for the other: an UPDATE's own lock order is the table's physical
    # order, which changes as rows are rewritten. See docs/decisions.md#0032.
    orgs = dict(UsagePeriod.objects.select_for_update().filter(pk__in=rows).order_by("pk")
                .values_list("pk", "organization_id"))
    UsagePeriod.objects.filter(pk__in=rows).update(
        reserved_usd=exact(F("reserved_usd") - reservation.amount_usd),
        spent_usd=exact(F("spent_usd") + charge),
    )
    group_budgets.charge(reservation.pk, reservation.amount_usd, charge)
    reservation.charged_usd = charge
    reservation.estimated = estimated
    reservation.settled_at = timezone.now()
    reservation.save(update_fields=["charged_usd", "estimated", "settled_at", *(recorded or [])])
    _alerts_after_commit(rows)
    metrics.spent_on_commit(orgs[reservation.org_period_id], charge)


def _over_reservation(what: str, charge: Decimal, reserved: Decimal) -> None:
    """The guard behind "charged <= reserved": every request of a turn is reserved before
    it is sent, so a charge over the reservation is a bug. The charge is capped at the
    reservation (the budget is never overspent) and the bug reported loudly."""
    if charge > reserved:
        logger.error("%s: cost $%s is over its reservation of $%s; charged $%s (a request "
                     "was sent without reserving its worst case)", what, charge, reserved, reserved)


def _alerts_after_commit(rows: list[int]) -> None:
    """Check the settled usage rows' alert thresholds once the settlement commits.
    Robust: an alert that cannot be sent must not stop the answer's final frame (sent
    after this transaction commits) or the other after-commit hooks."""
    transaction.on_commit(lambda: _check_alerts(*rows), robust=True)


def _check_alerts(*row_ids: int) -> None:
    send_threshold_alerts(row_ids)


@dataclass(frozen=True)
class BudgetStatus:
    limit: Decimal | None
    spent: Decimal
    reserved: Decimal
    resets_on: dt.date

    @property
    def remaining(self) -> Decimal | None:
        if self.limit is None:
            return None
        return max(self.limit - self.spent - self.reserved, ZERO)

    @property
    def used_up(self) -> bool:
        return self.remaining is not None and self.remaining <= 0

    def as_dict(self) -> dict[str, str | None]:
        return {
            "limit": None if self.limit is None else f"{self.limit:.2f}",
            "spent": f"{self.spent:.6f}",
            "reserved": f"{self.reserved:.6f}",
            "remaining": None if self.remaining is None else f"{self.remaining:.6f}",
            "resets_on": self.resets_on.isoformat(),
        }


def budget_status(membership: Membership) -> dict[str, BudgetStatus]:
    organization = membership.organization
    start = period_start(organization)
    rows = {
        row.user_id: row
        for row in UsagePeriod.objects.filter(
            organization=organization, period_start=start, user_id__in=[membership.user_id]
        ) | UsagePeriod.objects.filter(organization=organization, period_start=start, user=None)
    }

    def status(user_id: int | None, limit: Decimal | None) -> BudgetStatus:
        row = rows.get(user_id)
        return BudgetStatus(
            limit=limit,
            spent=row.spent_usd if row else ZERO,
            reserved=row.reserved_usd if row else ZERO,
            resets_on=next_period_start(start),
        )

    return {
        "org": status(None, organization.monthly_budget_usd),
        "member": status(membership.user_id, member_limit(membership)),
    }
