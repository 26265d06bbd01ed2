"""Who is in an organization, with which role and budget.

Every function takes the acting admin's membership (``by``) and the target fetched
through ``get_member_for_admin``; permission rules live here, not in views.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from decimal import Decimal
from typing import TYPE_CHECKING, Protocol

from django.core.exceptions import ImproperlyConfigured
from django.db import transaction
from django.db.models import Case, Value, When

from accounts.models import MAX_RETENTION_DAYS, Membership, Organization
from chatsite.errors import NotFound

if TYPE_CHECKING:
    from django.db.models import QuerySet

    from accounts.models import User

ADMIN_ROLES = (Membership.Role.OWNER, Membership.Role.ADMIN)


class MemberChangeRefused(Exception):
    """A change an admin asked for that the rules do not allow; the text says why."""


def get_own_membership(user: User, organization_id: int | None, *, admin: bool = False) -> Membership:
    """The user's membership in exactly this org (an owner's or admin's when ``admin``).

    For an org id that came from the request; NotFound otherwise, which views answer with
    404. (``get_membership`` is the lenient one for the session's choice.)
    """
    if organization_id is None or getattr(user, "pk", None) is None:
        raise NotFound("organization")
    memberships = Membership.objects.select_related("organization").filter(
        user_id=user.pk, organization_id=organization_id
    )
    if admin:
        memberships = memberships.filter(role__in=ADMIN_ROLES)
    membership = memberships.first()
    if membership is None:
        raise NotFound("organization")
    return membership


def get_membership(user: User, organization_id: int | None) -> Membership:
    """The user's membership in the given org, or their first one when none is chosen
    (one query either way)."""
    membership = memberships_in_order(
        Membership.objects.select_related("organization"),
        user_id=user.pk, organization_id=organization_id,
    ).first()
    if membership is None:
        raise NotFound("organization")
    return membership


def memberships_in_order(rows: QuerySet[Membership], *, user_id: int,
                         organization_id: int | None) -> QuerySet[Membership]:
    """The user's memberships among ``rows`` in the order ``get_membership`` picks from:
    the chosen org first, else the oldest membership."""
    memberships = rows.filter(user_id=user_id)
    if organization_id is None:
        return memberships.order_by("joined_at", "id")
    return memberships.annotate(
        chosen=Case(When(organization_id=organization_id, then=Value(0)), default=Value(1))
    ).order_by("chosen", "joined_at", "id")


def get_membership_in(user: User, organization_id: int) -> Membership:
    """The user's membership in exactly this org (no fallback to another one)."""
    try:
        return Membership.objects.select_related("organization").get(
            user=user, organization_id=organization_id
        )
    except Membership.DoesNotExist as exc:
        raise NotFound("organization") from exc


def get_member_for_admin(user: User, membership_id: int | str) -> Membership:
    """A membership in an org where ``user`` is an owner or admin, else NotFound."""
    try:
        return Membership.objects.select_related("user", "organization").get(
            pk=int(membership_id),
            organization__memberships__user=user,
            organization__memberships__role__in=ADMIN_ROLES,
        )
    except (Membership.DoesNotExist, ValueError, TypeError) as exc:
        raise NotFound("member") from exc


def acting_membership(*, user: User, organization: Organization) -> Membership:
    """The actor's own membership in ``organization`` (used after fetching a target)."""
    membership = Membership.objects.filter(user=user, organization=organization).first()
    if membership is None or not membership.is_admin:
        raise NotFound("organization")
    membership.organization = organization
    return membership


def _lock_organization(organization: Organization) -> None:
    # Race: two owners demoting (or removing) each other at once would both see "another
    # owner remains" and leave the org with none. Locking the org row serialises every
    # role change and removal in one org, so the second one counts the first one's result.
    Organization.objects.select_for_update().filter(pk=organization.pk).first()


def _refuse_owner_changes_by_admins(by: Membership, target: Membership, role: str | None) -> None:
    if by.role == Membership.Role.OWNER:
        return
    if target.role == Membership.Role.OWNER:
        raise MemberChangeRefused(f"Only an owner can change or remove {target.user}, who is an owner.")
    if role == Membership.Role.OWNER:
        raise MemberChangeRefused("Only an owner can make someone an owner.")


def _another_owner_remains(target: Membership) -> bool:
    return Membership.objects.filter(
        organization_id=target.organization_id, role=Membership.Role.OWNER
    ).exclude(pk=target.pk).exists()


def _refuse_losing_the_last_owner(target: Membership) -> None:
    if not _another_owner_remains(target):
        raise MemberChangeRefused(
            f"{target.user} is the only owner of {target.organization}. "
            "Make someone else an owner first."
        )


def orgs_left_without_an_owner(user: User) -> list[Organization]:
    """The orgs that would keep members but lose their last owner were ``user`` gone:
    deleting the account is refused until someone else owns them."""
    owned = Membership.objects.filter(user=user, role=Membership.Role.OWNER)
    return [
        membership.organization
        for membership in owned.select_related("organization")
        if not _another_owner_remains(membership)
        and Membership.objects.filter(organization_id=membership.organization_id)
        .exclude(pk=membership.pk).exists()
    ]


def change_role(*, by: Membership, target: Membership, role: str) -> Membership:
    if by.organization_id != target.organization_id or not by.is_admin:
        raise NotFound("member")
    if role not in Membership.Role.values:
        raise MemberChangeRefused("Choose a role: owner, admin or member.")
    _refuse_owner_changes_by_admins(by, target, role)
    with transaction.atomic():
        _lock_organization(target.organization)
        target.refresh_from_db(fields=["role"])
        if target.role == role:
            return target
        if target.role == Membership.Role.OWNER:
            _refuse_losing_the_last_owner(target)
        target.role = role
        target.save(update_fields=["role"])
    return target


def remove_member(*, by: Membership, target: Membership) -> None:
    """Remove someone from the org. Their conversations stay theirs but become unreachable
    through this org, since every fetch also requires a membership."""
    if by.organization_id != target.organization_id or not by.is_admin:
        raise NotFound("member")
    _refuse_owner_changes_by_admins(by, target, None)
    with transaction.atomic():
        _lock_organization(target.organization)
        target.refresh_from_db(fields=["role"])
        if target.role == Membership.Role.OWNER:
            _refuse_losing_the_last_owner(target)
        target.delete()


def set_member_budget(*, by: Membership, target: Membership, amount: Decimal | None) -> Membership:
    """Override one member's monthly budget; None falls back to the org's member budget."""
    if by.organization_id != target.organization_id or not by.is_admin:
        raise NotFound("member")
    if amount is not None and amount < 0:
        raise MemberChangeRefused("A budget cannot be negative. Leave it empty for no limit.")
    target.monthly_budget_usd = amount
    target.save(update_fields=["monthly_budget_usd"])
    return target


def set_zero_data_retention(*, by: Membership, enabled: bool) -> Organization:
    """Switch the org's Zero Data Retention: on, no answer runs as a background response
    stored at the provider (answers.generation.runs_in_background)."""
    if not by.is_admin:
        raise NotFound("organization")
    organization = by.organization
    organization.zero_data_retention = enabled
    organization.save(update_fields=["zero_data_retention"])
    return organization


def set_retention(*, by: Membership, days: int | None, keep_shares: bool) -> Organization:
    """The org's retention: conversations untouched for ``days`` are deleted by the daily
    job (conversations.retention), their share links kept or deleted with them; None
    turns it off."""
    if not by.is_admin:
        raise NotFound("organization")
    if days is not None and not 1 <= days <= MAX_RETENTION_DAYS:
        raise MemberChangeRefused(
            f"Keep conversations from 1 to {MAX_RETENTION_DAYS:,} days, or leave it empty.")
    organization = by.organization
    organization.retention_days = days
    organization.retention_keep_shares = keep_shares
    organization.save(update_fields=["retention_days", "retention_keep_shares"])
    return organization


def set_org_budgets(
    *, by: Membership, monthly_budget_usd: Decimal | None, member_budget_usd: Decimal | None
) -> Organization:
    """The org's monthly cap and the default cap for each member; None means no limit."""
    if not by.is_admin:
        raise NotFound("organization")
    if any(value is not None and value < 0 for value in (monthly_budget_usd, member_budget_usd)):
        raise MemberChangeRefused("A budget cannot be negative. Leave it empty for no limit.")
    organization = by.organization
    organization.monthly_budget_usd = monthly_budget_usd
    organization.member_budget_usd = member_budget_usd
    organization.save(update_fields=["monthly_budget_usd", "member_budget_usd"])
    return organization


# --- What each member spent this month (the Members page) ----------------------------------


class MonthSpend(Protocol):
    """One member's month as the Members page shows it. Budgets are the billing app's
    (above accounts): it answers through ``register_spend_source``."""

    @property
    def limit(self) -> Decimal | None: ...
    @property
    def spent(self) -> Decimal: ...
    @property
    def reserved(self) -> Decimal: ...
    @property
    def remaining(self) -> Decimal | None: ...


# Memberships of one org (their organization loaded) to each one's month, by membership id.
SpendSource = Callable[[Organization, Sequence[Membership]], Mapping[int, MonthSpend]]
_spend_source: SpendSource | None = None


def register_spend_source(source: SpendSource) -> None:
    """Called once per process by the billing app, when Django loads its models."""
    global _spend_source
    _spend_source = source


def members_with_spend(organization: Organization) -> list[tuple[Membership, MonthSpend]]:
    """The org's members by address, each with this month's spend: two queries."""
    if _spend_source is None:
        raise ImproperlyConfigured("No app reports members' spend: is billing installed?")
    memberships = list(Membership.objects.filter(organization=organization)
                       .select_related("user").order_by("user__email"))
    for membership in memberships:
        membership.organization = organization  # spare the limits a query per row
    spend = _spend_source(organization, memberships)
    return [(membership, spend[membership.pk]) for membership in memberships]
