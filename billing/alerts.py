"""Tell admins (and the member) when a budget passes 80% and 100%."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from decimal import Decimal

from django.db import transaction
from django.db.models import Exists, OuterRef, QuerySet, Subquery

from accounts.models import Membership, Organization, User
from billing.models import Notification, UsagePeriod
from chatsite.compiled import CompiledSelect
from chatsite.mail import absolute_url, send_product_mail

THRESHOLDS = ((Decimal("1.00"), "alerted_100", "100%"), (Decimal("0.80"), "alerted_80", "80%"))


def _limit(row: UsagePeriod) -> Decimal | None:
    """The row's budget; a member row carries its member's own (``send_threshold_alerts``)."""
    organization = row.organization
    if row.user_id is None:
        return organization.monthly_budget_usd
    if not row.is_member:  # type: ignore[attr-defined]
        return None
    if row.member_budget is not None:  # type: ignore[attr-defined]
        return row.member_budget  # type: ignore[attr-defined,no-any-return]
    return organization.member_budget_usd


def due_sql(rows: str) -> str:
    """SQL: whether any of ``rows`` (usage rows as a charge left them, with columns
    ``user_id``, ``organization_id``, ``spent_usd`` and the alert flags) has crossed a
    line it was not alerted for, by ``send_threshold_alerts``' rule (the highest line
    crossed counts; a member row enforces nothing once its member left). A settlement
    reads this in its own statement and calls ``send_threshold_alerts`` (one query more)
    only when it is true, which it is at most twice a month per row."""
    orgs, members = Organization._meta.db_table, Membership._meta.db_table
    crossed: list[str] = []
    above = ""
    for ratio, flag, _label in THRESHOLDS:  # highest line first
        crossed.append(f"(r.spent_usd >= l.amount * {ratio}{above} AND NOT r.{flag})")
        above = f" AND r.spent_usd < l.amount * {ratio}"
    return (f"EXISTS (SELECT 1 FROM {rows} AS r JOIN {orgs} AS o ON o.id = r.organization_id"
            f" LEFT JOIN {members} AS m ON r.user_id IS NOT NULL"
            f" AND m.organization_id = r.organization_id AND m.user_id = r.user_id"
            f" CROSS JOIN LATERAL (SELECT CASE WHEN r.user_id IS NULL THEN o.monthly_budget_usd"
            f" WHEN m.id IS NULL THEN NULL"
            f" ELSE COALESCE(m.monthly_budget_usd, o.member_budget_usd) END AS amount) AS l"
            f" WHERE l.amount > 0 AND ({' OR '.join(crossed)}))")


def notify(*, organization_id: int, user_ids: Iterable[int], text: str, link: str = "") -> None:
    users = list(User.objects.filter(pk__in=set(user_ids)))
    Notification.objects.bulk_create(
        [Notification(user=user, organization_id=organization_id, text=text, link=link) for user in users]
    )
    recipients = [user.email for user in users]
    if recipients:
        body = f"{text}\n\n{absolute_url(link)}\n" if link else text
        send_product_mail(subject=text[:80], body=body, to=recipients, quiet=True)


def admin_ids(organization_id: int) -> list[int]:
    return list(
        Membership.objects.admins().filter(organization_id=organization_id).values_list("user_id", flat=True)
    )


def _usage_rows(*, first: int, second: int | None = None) -> QuerySet[UsagePeriod]:
    """One or two usage rows with what their limits need (see ``_limit``)."""
    membership = Membership.objects.filter(
        organization_id=OuterRef("organization_id"), user_id=OuterRef("user_id")
    )
    return (
        UsagePeriod.objects.select_related("organization", "user")
        .filter(pk__in=[first] if second is None else [first, second])
        .annotate(is_member=Exists(membership),
                  member_budget=Subquery(membership.values("monthly_budget_usd")[:1]))
    )


# Compiled once per process (chatsite.compiled): run after every settlement, with the
# org's row and the member's.
_ONE_ROW = CompiledSelect(_usage_rows, "first")
_TWO_ROWS = CompiledSelect(_usage_rows, "first", "second")


def send_threshold_alerts(row_ids: Sequence[int]) -> None:
    """After every settlement (the org's row and, unless the member was deleted, the
    member's): one query, and mail only when a row crossed a line."""
    if len(row_ids) == 2:
        rows = _TWO_ROWS.fetch(first=row_ids[0], second=row_ids[1])
    else:
        rows = [row for pk in row_ids for row in _ONE_ROW.fetch(first=pk)]
    for row in rows:
        limit = _limit(row)
        if not limit:
            continue
        for ratio, flag, label in THRESHOLDS:
            if row.spent_usd < limit * ratio:
                continue
            with transaction.atomic():
                # Race: two settlements crossing the line together; one flips the flag.
                if not UsagePeriod.objects.filter(pk=row.pk, **{flag: False}).update(**{flag: True}):
                    break
            who = "The organization" if row.user_id is None else str(row.user)
            text = (f"{who} has used {label} of its ${limit:,.2f} monthly budget "
                    f"(${row.spent_usd:,.2f} spent in {row.period_start:%B %Y}).")
            recipients = admin_ids(row.organization_id)
            if row.user_id is not None:
                recipients.append(row.user_id)
            notify(organization_id=row.organization_id, user_ids=recipients, text=text,
                   link="/org/usage/")
            break
