"""Groups of an org's people: who is in them, the role floor they carry, and the sockets
that must re-check when either changes.

A group is managed here (admins add and remove people) or follows the identity provider
(``claim_value`` set): then :func:`sync_provider_groups` re-reads the person's groups claim
at every SSO sign-in. Which models a group opens is read by ``accounts.model_access``; its
budget by ``billing.quotas``.

Any change that can take a model away from someone closes their open sockets with
``ACCESS_CHANGED`` once it commits: the chat page reloads with the models it may now offer,
and a send on a lost model is refused with ``model_unavailable`` (``usable_profile``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from django.db import IntegrityError, transaction
from django.db.models import Count, QuerySet
from django.db.models.signals import post_delete
from django.dispatch import receiver

from accounts import audit
from accounts.audit_models import AuditAction
from accounts.models import Group, GroupMembership, Membership, Organization, RaisedRole, User
from accounts.revocation import ACCESS_CHANGED, revoke_sockets
from chatsite.errors import NotFound
from llm.models import ModelProfile

Role = Membership.Role


class GroupRefused(Exception):
    """A group change that cannot be made; the message says why and what to do."""


def groups_of(organization: Organization) -> QuerySet[Group]:
    """The org's groups with their models and a ``member_count``, in three queries."""
    return (Group.objects.filter(organization=organization).prefetch_related("profiles")
            .annotate(member_count=Count("memberships")))


def get_group_for_admin(admin: Membership, group_id: int | None) -> Group:
    """The permission-checked fetch of a group: one of ``admin``'s org, and ``admin`` is
    an admin there. Anything else is NotFound (a 404 that says nothing about other orgs)."""
    if group_id is None or not admin.is_admin:
        raise NotFound("group")
    group = Group.objects.filter(pk=group_id, organization_id=admin.organization_id).first()
    if group is None:
        raise NotFound("group")
    return group


@dataclass(frozen=True)
class GroupFields:
    name: str
    claim_value: str
    role_floor: str
    profiles: Sequence[ModelProfile]
    monthly_budget_usd: Decimal | None


def _refuse_clash(organization: Organization, fields: GroupFields, *, exclude: int | None) -> None:
    others = Group.objects.filter(organization=organization)
    if exclude is not None:
        others = others.exclude(pk=exclude)
    if others.filter(name__iexact=fields.name).exists():
        raise GroupRefused(f"A group named “{fields.name}” exists already. Pick another name.")
    if fields.claim_value and others.filter(claim_value=fields.claim_value).exists():
        raise GroupRefused(f"Another group follows the provider group {fields.claim_value!r}.")


def _everyone_in(organization_id: int) -> list[int]:
    return list(Membership.objects.filter(organization_id=organization_id)
                .values_list("user_id", flat=True))


def _access_changed(user_ids: Iterable[int], reason: str) -> None:
    for user_id in set(user_ids):
        revoke_sockets(user_id=user_id, code=ACCESS_CHANGED, reason=reason)


def create_group(*, by: Membership, fields: GroupFields) -> Group:
    if not by.is_admin:
        raise NotFound("organization")
    organization = by.organization
    with transaction.atomic():
        _refuse_clash(organization, fields, exclude=None)
        try:
            group = Group.objects.create(
                organization=organization, name=fields.name, claim_value=fields.claim_value,
                role_floor=fields.role_floor, monthly_budget_usd=fields.monthly_budget_usd,
            )
        except IntegrityError as exc:  # a second admin created the same group meanwhile
            raise GroupRefused(f"A group named “{fields.name}” exists already.") from exc
        group.profiles.set(fields.profiles)
        audit.record(AuditAction.GROUP_CHANGED, organization=organization, actor=by.user, obj=group,
                     change="created", group=group.name, **_described(fields))
        if fields.profiles:
            # A model a group lists is closed to everyone outside it from now on.
            _access_changed(_everyone_in(organization.pk), "Who may use which model changed.")
    return group


def update_group(*, by: Membership, group: Group, fields: GroupFields) -> Group:
    if not by.is_admin or group.organization_id != by.organization_id:
        raise NotFound("group")
    with transaction.atomic():
        # Two admins saving the same group: the second waits and diffs against the first.
        group = Group.objects.select_for_update().get(pk=group.pk)
        _refuse_clash(by.organization, fields, exclude=group.pk)
        before_profiles = set(group.profiles.values_list("pk", flat=True))
        before = {"name": group.name, "claim_value": group.claim_value,
                  "role_floor": group.role_floor, "monthly_budget_usd": group.monthly_budget_usd}
        group.name = fields.name
        group.claim_value = fields.claim_value
        group.role_floor = fields.role_floor
        group.monthly_budget_usd = fields.monthly_budget_usd
        group.save(update_fields=["name", "claim_value", "role_floor", "monthly_budget_usd"])
        group.profiles.set(fields.profiles)
        after_profiles = {p.pk for p in fields.profiles}
        changes = {key: {"old": old, "new": getattr(group, key)}
                   for key, old in before.items() if old != getattr(group, key)}
        if before_profiles != after_profiles:
            changes["models"] = {
                "old": sorted(ModelProfile.objects.filter(pk__in=before_profiles)
                              .values_list("name", flat=True)),
                "new": sorted(p.name for p in fields.profiles),
            }
        if changes:
            audit.record(AuditAction.GROUP_CHANGED, organization=group.organization_id,
                         actor=by.user, obj=group, change="updated", group=group.name,
                         changes=changes)
        if before["role_floor"] != group.role_floor:
            for membership in _memberships_in(group):
                apply_role_floor(membership)
        if before_profiles != after_profiles:
            _access_changed(_everyone_in(group.organization_id),
                            "Who may use which model changed.")
    return group


def delete_group(*, by: Membership, group: Group) -> None:
    if not by.is_admin or group.organization_id != by.organization_id:
        raise NotFound("group")
    with transaction.atomic():
        listed_models = group.profiles.exists()
        memberships = list(_memberships_in(group))
        audit.record(AuditAction.GROUP_CHANGED, organization=group.organization_id,
                     actor=by.user, obj=group, change="deleted", group=group.name)
        group.delete()
        for membership in memberships:
            apply_role_floor(membership)
        if listed_models:
            _access_changed(_everyone_in(by.organization_id), "Who may use which model changed.")


def add_member(*, by: Membership, group: Group, email: str) -> GroupMembership:
    """Add an org member to a group managed here, by address."""
    if not by.is_admin or group.organization_id != by.organization_id:
        raise NotFound("group")
    if group.from_provider:
        raise GroupRefused(f"{group.name} follows the identity provider's group "
                           f"{group.claim_value!r}: change its members there.")
    membership = (Membership.objects.select_related("user")
                  .filter(organization_id=group.organization_id, user__email=email.strip().lower())
                  .first())
    if membership is None:
        raise GroupRefused(f"{email} is not a member of {by.organization.name}. Invite them first.")
    with transaction.atomic():
        row, created = GroupMembership.objects.get_or_create(group=group, user=membership.user)
        if created:
            audit.record(AuditAction.GROUP_CHANGED, organization=group.organization_id,
                         actor=by.user, obj=group, change="member_added", group=group.name,
                         member=membership.user.email)
            apply_role_floor(membership)
            _access_changed([membership.user_id], f"You were added to the group {group.name}.")
    return row


def remove_member(*, by: Membership, group: Group, user_id: int) -> str:
    """Take the person out of the group; returns their address, for the page to say who."""
    if not by.is_admin or group.organization_id != by.organization_id:
        raise NotFound("group")
    with transaction.atomic():
        row = (GroupMembership.objects.select_related("user")
               .filter(group=group, user_id=user_id).first())
        if row is None:
            raise NotFound("group member")
        row.delete()
        audit.record(AuditAction.GROUP_CHANGED, organization=group.organization_id,
                     actor=by.user, obj=group, change="member_removed", group=group.name,
                     member=row.user.email)
        membership = Membership.objects.filter(organization_id=group.organization_id,
                                               user_id=user_id).first()
        if membership is not None:
            apply_role_floor(membership)
        # Takes effect at once: live sockets re-check, composers drop the group's models.
        _access_changed([user_id], f"You were removed from the group {group.name}.")
    return row.user.email


@receiver(post_delete, sender=Membership, dispatch_uid="accounts.groups.leave_on_removal")
def leave_groups_on_removal(sender: Any, instance: Membership, **kwargs: Any) -> None:
    """Someone removed from an org leaves its groups: rejoining later gives back none of
    their models or floors. (Their sockets close with the removal, accounts.signals.)"""
    GroupMembership.objects.filter(group__organization_id=instance.organization_id,
                                   user_id=instance.user_id).delete()


def members_of(group: Group) -> QuerySet[GroupMembership]:
    return group.memberships.select_related("user").order_by("user__email")


def _memberships_in(group: Group) -> QuerySet[Membership]:
    return Membership.objects.filter(organization_id=group.organization_id,
                                     user__group_memberships__group=group)


def claim_values(claims: dict[str, Any], claim: str) -> set[str]:
    """The person's groups from an ID token: a list of names (or one name) under
    ``claim``; anything else counts as no groups."""
    value = claims.get(claim)
    if isinstance(value, str):
        return {value}
    if isinstance(value, list):
        return {item for item in value if isinstance(item, str)}
    return set()


@dataclass(frozen=True)
class GroupSync:
    joined: list[str]
    left: list[str]

    @property
    def changed(self) -> bool:
        return bool(self.joined or self.left)


def sync_provider_groups(*, membership: Membership, values: set[str]) -> GroupSync:
    """Make ``membership``'s person a member of exactly the org's provider-following
    groups whose value is in ``values`` (their groups claim at this sign-in). Groups
    managed here are left alone. A change closes the person's other sockets."""
    with transaction.atomic():
        followed = list(Group.objects.filter(organization_id=membership.organization_id)
                        .exclude(claim_value=""))
        current = set(GroupMembership.objects.filter(
            group__in=followed, user_id=membership.user_id).values_list("group_id", flat=True))
        wanted = {group.pk for group in followed if group.claim_value in values}
        joined = [group for group in followed if group.pk in wanted - current]
        left = [group for group in followed if group.pk in current - wanted]
        GroupMembership.objects.bulk_create(
            [GroupMembership(group=group, user_id=membership.user_id) for group in joined],
            ignore_conflicts=True,  # a second sign-in of the same person at the same moment
        )
        GroupMembership.objects.filter(group__in=left, user_id=membership.user_id).delete()
        sync = GroupSync(joined=[g.name for g in joined], left=[g.name for g in left])
        if sync.changed:
            audit.record(AuditAction.GROUP_CHANGED, organization=membership.organization_id,
                         actor=membership.user, change="synced_at_sign_in",
                         joined=sync.joined, left=sync.left)
            _access_changed([membership.user_id], "Your groups changed at sign-in.")
        apply_role_floor(membership)
    return sync


def apply_role_floor(membership: Membership) -> None:
    """Raise the person to the highest role floor of their groups in the org, or give
    back the role a floor raised them from once no group's floor holds it there.
    Owners are never changed."""
    with transaction.atomic():
        # A sign-in's sync and an admin's edit at the same moment: both read the role here.
        membership = Membership.objects.select_for_update().get(pk=membership.pk)
        if membership.role == Role.OWNER:
            return
        floor_admin = Group.objects.filter(
            organization_id=membership.organization_id, role_floor=Group.RoleFloor.ADMIN,
            memberships__user_id=membership.user_id,
        ).exists()
        raised = RaisedRole.objects.filter(membership=membership).first()
        if floor_admin and membership.role == Role.MEMBER:
            RaisedRole.objects.update_or_create(membership=membership,
                                                defaults={"base_role": Role.MEMBER})
            membership.role = Role.ADMIN
            membership.save(update_fields=["role"])
        elif not floor_admin and raised is not None:
            if membership.role == Role.ADMIN:
                membership.role = raised.base_role
                membership.save(update_fields=["role"])
            raised.delete()


def _described(fields: GroupFields) -> dict[str, Any]:
    return {"claim_value": fields.claim_value, "role_floor": fields.role_floor,
            "models": sorted(p.name for p in fields.profiles),
            "monthly_budget_usd": fields.monthly_budget_usd}


def group_ids_of(user: User, organization_id: int) -> list[int]:
    return list(GroupMembership.objects.filter(user=user, group__organization_id=organization_id)
                .values_list("group_id", flat=True))
