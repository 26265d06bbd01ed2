"""Verified email addresses: proof that a person reads the mailbox of their address.

An address is verified only by a link mailed to it, which no page ever shows, or by
finishing a sign-up through such a mailed link. An invitation link does not verify: an
admin sees it on the Members page and can open it as anyone. Claiming an allowed email
domain needs a verified address at that domain.

The link is signed, expires after VERIFY_LINK_MAX_AGE and works once: it verifies only an
account whose address is still the one it was sent to and is not verified yet.
"""

from __future__ import annotations

from django.core import signing
from django.urls import reverse
from django.utils import timezone

from accounts.models import User
from chatsite.mail import absolute_url, send_product_mail
from chatsite.ratelimits import over_limit_for

VERIFY_LINK_SALT = "teamchat.verify-email"
VERIFY_LINK_MAX_AGE = 24 * 3600
VERIFICATION_MAILS_PER_HOUR = 3


class VerificationRefused(Exception):
    """No link was sent or the link cannot be used; the text says why and what to do."""


def is_verified(user: User) -> bool:
    return user.email_verified_at is not None


def send_verification_link(*, user: User) -> None:
    """Email ``user`` a link that verifies their address. The link goes only to the mailbox."""
    if is_verified(user):
        raise VerificationRefused(f"{user.email} is already verified.")
    limited, retry_after = over_limit_for(str(user.pk), group="verification-mails",
                                          rate=f"{VERIFICATION_MAILS_PER_HOUR}/h")
    if limited:
        raise VerificationRefused("Several verification links were sent in the last hour. "
                                  f"Open one of them, or try again in {retry_after // 60 + 1} "
                                  "minutes.")
    token = signing.dumps({"u": user.pk, "e": user.email}, salt=VERIFY_LINK_SALT)
    link = absolute_url(reverse("accounts:verify_email", args=[token]))
    sent = send_product_mail(
        subject="Verify your email address", to=[user.email], quiet=True,
        body=("Open this link to confirm that this address is yours (it works once and "
              f"expires in {VERIFY_LINK_MAX_AGE // 3600} hours):\n{link}\n\n"
              "If you did not ask for it, ignore this email.\n"),
    )
    if not sent:
        raise VerificationRefused("The verification email could not be sent. Try again later, "
                                  "or ask whoever runs this server to check its mail settings.")


def read_verification_link(token: str) -> User:
    """The account a still-usable link verifies."""
    try:
        data = signing.loads(token, salt=VERIFY_LINK_SALT, max_age=VERIFY_LINK_MAX_AGE)
    except signing.BadSignature as exc:
        raise VerificationRefused("This verification link is not valid or has expired. Send "
                                  "yourself a new one from your Account page.") from exc
    if not isinstance(data, dict) or not isinstance(data.get("u"), int):
        raise VerificationRefused("This verification link is not valid. Send yourself a new "
                                  "one from your Account page.")
    user = User.objects.filter(pk=data["u"], email=data.get("e")).first()
    if user is None:
        raise VerificationRefused("This verification link is for an address the account no "
                                  "longer has. Send yourself a new one from your Account page.")
    if is_verified(user):
        raise VerificationRefused(f"This link was already used: {user.email} is verified.")
    return user


def verify_email(*, token: str) -> User:
    """Mark the address the link was mailed to as verified; once."""
    user = read_verification_link(token)
    now = timezone.now()
    # Race: the same link opened in two tabs at once; only the update that still finds the
    # account unverified (and at the same address) counts.
    updated = User.objects.filter(pk=user.pk, email=user.email, email_verified_at=None).update(
        email_verified_at=now)
    if updated != 1:
        raise VerificationRefused(f"This link was already used: {user.email} is verified.")
    user.email_verified_at = now
    return user
