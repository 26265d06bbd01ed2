"""Who is in an organization, with which role and budget.

Every function takes the acting admin's membership (``by``) and the target fetched
through ``get_member_for_admin``; permission rules live here, not in views.
"""

from __future__ import annotations

from decimal import Decimal
from typing import TYPE_CHECKING

from django.db import transaction

from accounts.models import Membership, Organization
from chatsite.errors import NotFound

if TYPE_CHECKING:
    from accounts.models import User

ADMIN_ROLES = (Membership.Role.OWNER, Membership.Role.ADMIN)


class MemberChangeRefused(Exception):
    """A change an admin asked for that the rules do not allow; the text says why."""


def get_own_membership(user: User, organization_id: int | None, *, admin: bool = False) -> Membership:
    """The user's membership in exactly this org (an owner's or admin's when ``admin``).

    For an org id that came from the request; NotFound otherwise, which views answer with
    404. (conversations.access.get_membership is the lenient one for the session's choice.)
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


def _refuse_losing_the_last_owner(target: Membership) -> None:
    owners = Membership.objects.filter(
        organization_id=target.organization_id, role=Membership.Role.OWNER
    ).exclude(pk=target.pk)
    if not owners.exists():
        raise MemberChangeRefused(
            f"{target.user} is the only owner of {target.organization}. "
            "Make someone else an owner first."
        )


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
