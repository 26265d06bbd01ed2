"""Invitation links: single use, expiring, bound to one organization and one address."""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
import smtplib
from typing import TYPE_CHECKING

from django.contrib.auth import password_validation
from django.core.exceptions import ValidationError
from django.core.mail import send_mail
from django.db import IntegrityError, transaction
from django.urls import reverse
from django.utils import timezone

from accounts.models import Invitation, Membership, User
from conversations.exceptions import NotFound

if TYPE_CHECKING:
    from accounts.models import Organization

INVITATION_LIFETIME = dt.timedelta(days=7)
INVITABLE_ROLES = (Membership.Role.MEMBER, Membership.Role.ADMIN)


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


def invite(*, by: Membership, email: str, role: str, site_url: str) -> tuple[Invitation, str]:
    """Create an invitation and email its link. Returns the invitation and the raw token,
    which is never stored: only its SHA-256 is.

    ``site_url`` is the scheme and host the link should use (``request.build_absolute_uri("/")``).
    Earlier pending invitations of the same address to the same org are revoked, so only
    the newest link works.
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
    token = secrets.token_urlsafe(32)
    now = timezone.now()
    with transaction.atomic():
        Invitation.objects.pending().filter(organization=organization, email__iexact=email).update(
            revoked_at=now
        )
        invitation = Invitation.objects.create(
            organization=organization, email=email, role=role, token_hash=hash_token(token),
            invited_by=by.user, expires_at=now + INVITATION_LIFETIME,
        )
    link = site_url.rstrip("/") + invitation_path(token)
    try:
        send_mail(
            subject=f"[Team Chat] {by.user} invited you to {organization}",
            message=(
                f"{by.user} invited you to join {organization} on Team Chat as "
                f"{invitation.get_role_display().lower()}.\n\n"
                f"Open this link to accept (it works once and expires on "
                f"{invitation.expires_at:%-d %b %Y}):\n{link}\n"
            ),
            from_email=None,
            recipient_list=[email],
        )
    except (OSError, smtplib.SMTPException) as exc:
        # The link exists only in this email; without it the invitation is useless.
        Invitation.objects.filter(pk=invitation.pk).update(revoked_at=timezone.now())
        raise InvitationInvalid(
            f"The invitation email to {email} could not be sent, so no invitation was made. "
            "Try again in a few minutes, or ask whoever runs this server to check its email "
            "settings.", status=503,
        ) from exc
    return invitation, token


def revoke_invitation(*, by: Membership, invitation: Invitation) -> bool:
    if by.organization_id != invitation.organization_id or not by.is_admin:
        raise NotFound("invitation")
    # Race: revoking while the invitee accepts; whichever update runs second finds the
    # row no longer pending and changes nothing.
    return bool(Invitation.objects.pending().filter(pk=invitation.pk).update(revoked_at=timezone.now()))


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
