"""Tell admins (and the member) when a budget passes 80% and 100%."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from decimal import Decimal

from django.db import transaction
from django.db.models import Exists, OuterRef, QuerySet, Subquery

from accounts.models import Membership, User
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
