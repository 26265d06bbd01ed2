"""Members ask for more budget; an admin of the same org approves or declines."""

from __future__ import annotations

from decimal import Decimal
from typing import TYPE_CHECKING

from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone

from accounts import audit
from accounts.audit_models import AuditAction
from accounts.models import Membership
from billing.alerts import admin_ids, notify
from billing.models import BudgetRequest
from billing.quotas import member_limit
from chatsite.errors import NotFound

if TYPE_CHECKING:
    from accounts.models import Organization, User

# Suggested when the member's current budget is zero, so "the same again" would be nothing.
FALLBACK_SUGGESTION = Decimal("10.00")
MAX_NOTE = 2000


class BudgetRequestRefused(Exception):
    """The request or decision cannot be made; the text says why and what to do."""


def usage_link(organization_id: int) -> str:
    return f"/org/usage/?org={organization_id}#requests"


def request_more_budget(*, membership: Membership, note: str) -> BudgetRequest:
    """Ask the org's admins for a higher monthly budget; one pending request per member."""
    note = (note or "").strip()[:MAX_NOTE]
    with transaction.atomic():
        # Race: a double-clicked "Request more" sends two requests at once; locking the
        # membership row makes the second wait and then see the first one's pending row.
        if not Membership.objects.select_for_update().filter(pk=membership.pk).exists():
            raise NotFound("organization")
        earlier = BudgetRequest.objects.filter(
            membership=membership, status=BudgetRequest.Status.PENDING
        ).first()
        if earlier is not None:
            raise BudgetRequestRefused(
                f"You already asked for more budget on {earlier.created_at:%-d %b}; an admin "
                "has not answered yet. You will get a notification when they do."
            )
        budget_request = BudgetRequest.objects.create(membership=membership, note=note)
    organization = membership.organization
    limit = member_limit(membership)
    current = "no limit" if limit is None else f"${limit:,.2f} a month"
    text = f"{membership.user} asks for more budget in {organization} (now {current})"
    text = f"{text}: “{note}”" if note else f"{text}."
    notify(organization_id=organization.pk, user_ids=admin_ids(organization.pk),
           text=text[:500], link=usage_link(organization.pk))
    return budget_request


def suggested_budget(membership: Membership) -> Decimal:
    """The default answer to a request: the current budget plus the same again."""
    limit = member_limit(membership)
    if not limit:
        return FALLBACK_SUGGESTION
    return limit * 2


def pending_requests(organization: Organization) -> QuerySet[BudgetRequest]:
    return (
        BudgetRequest.objects.filter(
            membership__organization=organization, status=BudgetRequest.Status.PENDING
        )
        .select_related("membership__user", "membership__organization")
        .order_by("created_at")
    )


def get_budget_request_for_admin(user: User, request_id: int | str) -> BudgetRequest:
    """A budget request from an org where ``user`` is an owner or admin, else NotFound."""
    try:
        return BudgetRequest.objects.select_related(
            "membership__user", "membership__organization"
        ).get(
            pk=int(request_id),
            membership__organization__memberships__user=user,
            membership__organization__memberships__role__in=(
                Membership.Role.OWNER, Membership.Role.ADMIN,
            ),
        )
    except (BudgetRequest.DoesNotExist, ValueError, TypeError) as exc:
        raise NotFound("budget request") from exc


def _decide(*, by: Membership, budget_request: BudgetRequest, status: str,
            new_budget_usd: Decimal | None) -> None:
    membership = budget_request.membership
    if not by.is_admin or by.organization_id != membership.organization_id:
        raise NotFound("budget request")
    now = timezone.now()
    # Race: two admins answering the same request at once; only the update that still
    # finds it pending counts, so a decline can never undo an approval or vice versa.
    decided = BudgetRequest.objects.filter(
        pk=budget_request.pk, status=BudgetRequest.Status.PENDING
    ).update(status=status, decided_at=now, decided_by=by.user, new_budget_usd=new_budget_usd)
    if decided != 1:
        raise BudgetRequestRefused("Another admin has already answered this request.")
    budget_request.status = status
    budget_request.decided_at = now
    budget_request.decided_by = by.user
    budget_request.new_budget_usd = new_budget_usd


def approve_budget_request(*, by: Membership, budget_request: BudgetRequest,
                           new_budget_usd: Decimal) -> BudgetRequest:
    """Set the member's own monthly budget to ``new_budget_usd`` and tell them."""
    if new_budget_usd is None or new_budget_usd < 0:
        raise BudgetRequestRefused("Enter a new budget of $0.00 or more.")
    membership = budget_request.membership
    with transaction.atomic():
        _decide(by=by, budget_request=budget_request, status=BudgetRequest.Status.APPROVED,
                new_budget_usd=new_budget_usd)
        Membership.objects.filter(pk=membership.pk).update(monthly_budget_usd=new_budget_usd)
        audit.record(AuditAction.BUDGET_CHANGED, organization=membership.organization_id,
                     actor=by.user, obj=membership, member=membership.user.email,
                     budget_request=budget_request.pk, changes={"monthly_budget_usd": {
                         "old": membership.monthly_budget_usd, "new": new_budget_usd}})
        membership.monthly_budget_usd = new_budget_usd
    notify(organization_id=membership.organization_id, user_ids=[membership.user_id],
           text=(f"{by.user} approved your budget request in {membership.organization}: your "
                 f"monthly budget is now ${new_budget_usd:,.2f}."),
           link="/")
    return budget_request


def decline_budget_request(*, by: Membership, budget_request: BudgetRequest) -> BudgetRequest:
    membership = budget_request.membership
    with transaction.atomic():
        _decide(by=by, budget_request=budget_request, status=BudgetRequest.Status.DECLINED,
                new_budget_usd=None)
    notify(organization_id=membership.organization_id, user_ids=[membership.user_id],
           text=(f"{by.user} declined your budget request in {membership.organization}. "
                 "Your budget resets at the start of next month."),
           link="/")
    return budget_request
