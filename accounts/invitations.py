"""Invitation links: single use, expiring, bound to one organization and one address."""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
from dataclasses import dataclass
from typing import TYPE_CHECKING

from django.conf import settings
from django.contrib.auth import password_validation
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.urls import reverse
from django.utils import timezone

from accounts import audit
from accounts.audit_models import AuditAction
from accounts.models import Invitation, Membership, User
from chatsite.errors import NotFound
from chatsite.mail import absolute_url, one_line, send_product_mail
from chatsite.ratelimits import over_limit_for

if TYPE_CHECKING:
    from accounts.models import Organization

INVITATION_LIFETIME = dt.timedelta(days=7)
INVITABLE_ROLES = (Membership.Role.MEMBER, Membership.Role.ADMIN)
REINVITES_PER_HOUR = 5


class InvitationInvalid(Exception):
    """The link cannot be used; ``status`` is the HTTP status a page should answer with."""

    def __init__(self, detail: str, *, status: int = 410) -> None:
        super().__init__(detail)
        self.detail = detail
        self.status = status


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def invitation_path(token: str) -> str:
    return reverse("org:invitation", args=[token])


def create_invitation(*, organization: Organization, email: str, role: str,
                      invited_by: User | None) -> tuple[Invitation, str]:
    """A new pending invitation and its raw token; earlier pending ones for the address die."""
    token = secrets.token_urlsafe(32)
    now = timezone.now()
    with transaction.atomic():
        Invitation.objects.pending().filter(organization=organization, email__iexact=email).update(
            revoked_at=now
        )
        invitation = Invitation.objects.create(
            organization=organization, email=email, role=role, token_hash=hash_token(token),
            invited_by=invited_by, expires_at=now + INVITATION_LIFETIME,
        )
    return invitation, token


@dataclass(frozen=True)
class SentInvitation:
    invitation: Invitation
    link: str  # shown to the admin once; only the token's hash is stored
    emailed: bool


def _refuse_too_many(by: Membership, email: str) -> None:
    """INVITATIONS_PER_HOUR per admin, and a few per address, so an admin account (or a
    stolen session) cannot turn the server into a mail cannon or bomb one inbox."""
    limited, retry_after = over_limit_for(
        str(by.user_id), group="invitations-per-admin", rate=f"{settings.INVITATIONS_PER_HOUR}/h"
    )
    if not limited:
        limited, retry_after = over_limit_for(
            f"{by.organization_id}:{email}", group="invitations-per-address",
            rate=f"{REINVITES_PER_HOUR}/h",
        )
    if limited:
        raise InvitationInvalid(
            f"Too many invitations sent; try again in {retry_after // 60 + 1} minutes.", status=429
        )


def invite(*, by: Membership, email: str, role: str) -> SentInvitation:
    """Create an invitation, email its link and return it with the link.

    Only the token's SHA-256 is stored, so the link is returned here for the admin to see
    once; it is built on SITE_URL, never on the request's Host. Earlier pending invitations
    of the same address to the same org are revoked, so only the newest link works (this
    is also "Resend"). If the email cannot be sent the invitation stands: the admin copies the link instead.
    """
    if not by.is_admin:
        raise NotFound("organization")
    email = User.objects.normalize_email(email).strip().lower()
    if role not in INVITABLE_ROLES:
        raise InvitationInvalid("Invite people as a member or an admin; make owners afterwards.",
                                status=400)
    organization = by.organization
    if Membership.objects.filter(organization=organization, user__email__iexact=email).exists():
        raise InvitationInvalid(f"{email} is already a member of {organization}.", status=400)
    _refuse_too_many(by, email)
    invitation, token = create_invitation(organization=organization, email=email, role=role,
                                          invited_by=by.user)
    link = absolute_url(invitation_path(token))
    emailed = send_product_mail(
        subject=f"{by.user} invited you to {organization}",
        body=(
            f"{by.user} invited you to join {one_line(str(organization))} on Team Chat as "
            f"{invitation.get_role_display().lower()}.\n\n"
            f"Open this link to accept (it works once and expires on "
            f"{invitation.expires_at:%-d %b %Y}):\n{link}\n"
        ),
        to=[email], quiet=True,
    )
    audit.record(AuditAction.INVITATION_SENT, organization=organization, actor=by.user,
                 obj=invitation, email=email, role=role, emailed=emailed)
    return SentInvitation(invitation=invitation, link=link, emailed=emailed)


def resend_invitation(*, by: Membership, invitation: Invitation) -> SentInvitation:
    """A fresh link for the same address and role; the old link stops working."""
    if by.organization_id != invitation.organization_id or not by.is_admin:
        raise NotFound("invitation")
    if invitation.state == "accepted":
        raise InvitationInvalid(f"{invitation.email} already joined.", status=400)
    return invite(by=by, email=invitation.email, role=invitation.role)


def revoke_invitation(*, by: Membership, invitation: Invitation) -> bool:
    if by.organization_id != invitation.organization_id or not by.is_admin:
        raise NotFound("invitation")
    # Race: revoking while the invitee accepts; whichever update runs second finds the
    # row no longer pending and changes nothing.
    revoked = bool(Invitation.objects.pending().filter(pk=invitation.pk).update(revoked_at=timezone.now()))
    if revoked:
        audit.record(AuditAction.INVITATION_REVOKED, organization=invitation.organization_id,
                     actor=by.user, obj=invitation, email=invitation.email)
    return revoked


def get_invitation_for_admin(user: User, invitation_id: int | str) -> Invitation:
    try:
        return Invitation.objects.select_related("organization").get(
            pk=int(invitation_id),
            organization__memberships__user=user,
            organization__memberships__role__in=(Membership.Role.OWNER, Membership.Role.ADMIN),
        )
    except (Invitation.DoesNotExist, ValueError, TypeError) as exc:
        raise NotFound("invitation") from exc


def find_invitation(token: str) -> Invitation:
    """The invitation a link points to, if it can still be used."""
    invitation = (
        Invitation.objects.select_related("organization", "invited_by")
        .filter(token_hash=hash_token(token or ""))
        .first()
    )
    if invitation is None:
        raise InvitationInvalid(
            "This invitation link is not valid. Check that you copied the whole link, "
            "or ask an admin for a new invitation.", status=404,
        )
    state = invitation.state
    if state == "accepted":
        raise InvitationInvalid("This invitation has already been used. Sign in, or ask an "
                                "admin for a new invitation.")
    if state == "revoked":
        raise InvitationInvalid("This invitation was withdrawn. Ask an admin for a new one.")
    if state == "expired":
        raise InvitationInvalid(f"This invitation expired on {invitation.expires_at:%-d %b %Y}. "
                                "Ask an admin for a new one.")
    return invitation


def _claim(invitation: Invitation, user: User) -> None:
    # Race: the same link opened twice (two tabs, a forwarded email) and accepted at once.
    # Only the update that still finds the row pending gets a row count of 1.
    claimed = Invitation.objects.pending().filter(pk=invitation.pk).update(
        accepted_at=timezone.now(), accepted_by=user
    )
    if claimed != 1:
        raise InvitationInvalid("This invitation has already been used. Sign in, or ask an "
                                "admin for a new invitation.")
    audit.record(AuditAction.INVITATION_ACCEPTED, organization=invitation.organization_id,
                 actor=user, obj=invitation, role=invitation.role)


def check_address(invitation: Invitation, user: User) -> None:
    """Only the invited address may accept: the link is not transferable."""
    if user.email.lower() != invitation.email.lower():
        raise InvitationInvalid(
            f"This invitation is for {invitation.email}, but you are signed in as {user.email}. "
            "Sign out and open the link again, or ask an admin to invite this address.",
            status=403,
        )


def accept_invitation(*, token: str, user: User) -> Membership:
    """Join the invitation's organization as ``user`` (already signed in).

    The organization always comes from the invitation itself, so a link for one org can
    never add anyone to another. The signed-in address must be the invited one.
    """
    invitation = find_invitation(token)
    check_address(invitation, user)
    organization: Organization = invitation.organization
    if Membership.objects.filter(organization=organization, user=user).exists():
        raise InvitationInvalid(f"You are already a member of {organization}.", status=400)
    with transaction.atomic():
        _claim(invitation, user)
        try:
            with transaction.atomic():
                membership = Membership.objects.create(
                    user=user, organization=organization, role=invitation.role
                )
        except IntegrityError as exc:
            raise InvitationInvalid(f"You are already a member of {organization}.", status=400) from exc
    membership.organization = organization
    return membership


def has_account(invitation: Invitation) -> bool:
    return User.objects.filter(email__iexact=invitation.email).exists()


def sign_up_with_invitation(*, token: str, password: str) -> Membership:
    """A new person creates an account with the invited address and joins that org,
    instead of getting an organization of their own."""
    invitation = find_invitation(token)
    if has_account(invitation):
        raise InvitationInvalid(
            f"An account for {invitation.email} already exists. Sign in to accept.", status=400
        )
    user = User(email=invitation.email)
    try:
        password_validation.validate_password(password, user)
    except ValidationError as exc:
        raise InvitationInvalid(" ".join(exc.messages), status=400) from exc
    try:
        with transaction.atomic():
            user = User.objects.create_user(email=invitation.email, password=password)
            _claim(invitation, user)
            membership = Membership.objects.create(
                user=user, organization=invitation.organization, role=invitation.role
            )
    except IntegrityError as exc:  # the same address signed up a moment ago
        raise InvitationInvalid(
            f"An account for {invitation.email} already exists. Sign in to accept.", status=400
        ) from exc
    return membership
