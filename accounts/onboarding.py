"""Who may create an account, and how.

``SIGNUP=invite`` (the default): the first account of a fresh install signs up directly
and owns the first organization; after that only people holding an invitation, or whose
address is at a domain an org allows, can join. ``SIGNUP=open``: anyone may also create
an account that owns a new org, whose monthly budget starts at ``NEW_ORG_BUDGET_USD``.

Apart from the very first account, every sign-up goes through a link emailed to the
address, and the page answers the same whatever the address is: a sign-up form never
tells a stranger whether an account exists, and nobody joins an org, or spends its
budget, with an address they do not read.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from django.conf import settings
from django.contrib.auth import password_validation
from django.core import signing
from django.core.exceptions import ValidationError
from django.db import IntegrityError, connection, transaction
from django.urls import reverse

from accounts import invitations
from accounts.models import AllowedEmailDomain, Membership, Organization, User
from chatsite.mail import one_line, send_product_mail
from chatsite.ratelimits import over_limit_for

SIGNUP_LINK_SALT = "teamchat.signup"
SIGNUP_LINK_MAX_AGE = 24 * 3600
SIGNUP_MAILS_PER_ADDRESS_PER_HOUR = 3
# Free-mail providers: allowing one would let the whole world into an org.
PUBLIC_EMAIL_DOMAINS = frozenset({
    "gmail.com", "googlemail.com", "outlook.com", "hotmail.com", "live.com", "msn.com",
    "yahoo.com", "icloud.com", "me.com", "aol.com", "proton.me", "protonmail.com",
    "gmx.com", "gmx.de", "mail.com", "yandex.com", "zoho.com", "qq.com", "163.com",
})
_DOMAIN = re.compile(r"^(?=.{1,253}$)(?!-)[a-z0-9-]{1,63}(?<!-)(\.(?!-)[a-z0-9-]{1,63}(?<!-))+$")


class SignUpRefused(Exception):
    """The account cannot be created; the text says why and what to do."""


class PasswordRefused(SignUpRefused):
    """The password validators refused the password; the link stays usable."""


class DomainRefused(Exception):
    """An allowed-domain list an admin asked for that the rules do not allow."""


@dataclass(frozen=True)
class SignUpLink:
    email: str
    organization_name: str


def signup_is_open() -> bool:
    return settings.SIGNUP == "open"


def is_first_account() -> bool:
    return not User.objects.exists()


def _lock_first_sign_up() -> None:
    # Race: two people opening a fresh install at the same moment would both see "no
    # account yet" and both become owners. A transaction-scoped advisory lock serialises
    # them on PostgreSQL; SQLite already serialises writers (IMMEDIATE transactions).
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(hashtext('teamchat.first-sign-up'))")


def _new_organization(*, owner: User, name: str, budget: bool) -> Organization:
    organization = Organization.objects.create(
        name=one_line(name.strip(), limit=120) or owner.email.split("@", 1)[-1],
        monthly_budget_usd=settings.NEW_ORG_BUDGET_USD if budget else None,
    )
    Membership.objects.create(user=owner, organization=organization, role=Membership.Role.OWNER)
    return organization


def sign_up_first_account(*, email: str, password: str, organization_name: str = "") -> User:
    """The fresh install's first person owns the first org (no budget: it is the
    operator's own). Refused once any account exists."""
    with transaction.atomic():
        _lock_first_sign_up()
        if not is_first_account():
            raise SignUpRefused("This server already has its first account. "
                                "Ask your admin for an invitation.")
        user = User.objects.create_user(email=email, password=password)
        _new_organization(owner=user, name=organization_name, budget=False)
    return user


def sign_up(*, email: str, password: str, organization_name: str = "",
            budgeted: bool = True) -> User:
    """An account that owns a new organization, with the new-org budget unless
    ``budgeted`` is False (the ``open`` sign-up link; fixtures for tests and benchmarks)."""
    with transaction.atomic():
        user = User.objects.create_user(email=email, password=password)
        _new_organization(owner=user, name=organization_name, budget=budgeted)
    return user


def organization_for_address(email: str) -> Organization | None:
    domain = email.rsplit("@", 1)[-1].lower()
    row = AllowedEmailDomain.objects.select_related("organization").filter(domain=domain).first()
    return row.organization if row else None


def request_sign_up(*, email: str, organization_name: str, site_url: str) -> None:
    """Email whoever owns ``email`` the next step, if there is one.

    The caller shows the same "check your email" page whatever happens here.
    """
    email = User.objects.normalize_email(email).strip().lower()
    limited, _ = over_limit_for(email, group="signup-mails-per-address",
                                rate=f"{SIGNUP_MAILS_PER_ADDRESS_PER_HOUR}/h")
    if limited:
        return  # one inbox gets a few of these an hour, however often the form is sent
    base = site_url.rstrip("/")
    if User.objects.filter(email__iexact=email).exists():
        send_product_mail(
            subject="You already have an account", to=[email], quiet=True,
            body=("Someone (hopefully you) tried to sign up with this address, which already "
                  f"has an account.\n\nSign in: {base}{reverse('accounts:login')}\n"
                  f"Forgot your password? {base}{reverse('accounts:password_reset')}\n"),
        )
        return
    organization = organization_for_address(email)
    if organization is not None:
        _, token = invitations.create_invitation(
            organization=organization, email=email, role=Membership.Role.MEMBER, invited_by=None
        )
        send_product_mail(
            subject=f"Join {organization} on Team Chat", to=[email], quiet=True,
            body=(f"Everyone at {email.rsplit('@', 1)[-1]} may join {one_line(str(organization))}. "
                  "Open this link to create your account (it works once and expires in "
                  f"{invitations.INVITATION_LIFETIME.days} days):\n"
                  f"{base}{invitations.invitation_path(token)}\n"),
        )
        return
    if not signup_is_open():
        return  # closed: nothing to send, and nothing to tell a stranger
    token = signing.dumps({"email": email, "org": organization_name.strip()[:120]},
                          salt=SIGNUP_LINK_SALT, compress=True)
    send_product_mail(
        subject="Finish creating your account", to=[email], quiet=True,
        body=("Open this link to choose a password and create your account (it expires in "
              f"24 hours):\n{base}{reverse('accounts:signup_finish', args=[token])}\n"),
    )


def read_sign_up_link(token: str) -> SignUpLink:
    invalid = SignUpRefused("This sign-up link is not valid or has expired. Sign up again to "
                            "get a new one.")
    if not signup_is_open():
        raise SignUpRefused("Sign-up is by invitation. Ask your admin for an invitation.")
    try:
        data = signing.loads(token, salt=SIGNUP_LINK_SALT, max_age=SIGNUP_LINK_MAX_AGE)
    except signing.BadSignature as exc:
        raise invalid from exc
    if not isinstance(data, dict) or not isinstance(data.get("email"), str):
        raise invalid
    if User.objects.filter(email__iexact=data["email"]).exists():
        raise SignUpRefused("This link was already used. Sign in instead.")
    return SignUpLink(email=data["email"], organization_name=str(data.get("org", "")))


def finish_sign_up(*, token: str, password: str) -> User:
    """Create the account a sign-up link was sent for; it owns a new budgeted org."""
    link = read_sign_up_link(token)
    try:
        password_validation.validate_password(password, User(email=link.email))
    except ValidationError as exc:
        raise PasswordRefused(" ".join(exc.messages)) from exc
    try:
        return sign_up(email=link.email, password=password,
                       organization_name=link.organization_name)
    except IntegrityError as exc:  # the same link, opened twice, finished at once
        raise SignUpRefused("This link was already used. Sign in instead.") from exc


# --- Allowed email domains ----------------------------------------------------------------


def parse_domains(text: str) -> list[str]:
    domains: list[str] = []
    for raw in re.split(r"[\s,;]+", text.strip().lower()):
        domain = raw.strip().lstrip("@").rstrip(".")
        if not domain:
            continue
        try:
            domain = domain.encode("idna").decode("ascii")
        except UnicodeError as exc:
            raise DomainRefused(f"{raw[:80]!r} is not a domain name.") from exc
        if not _DOMAIN.match(domain):
            raise DomainRefused(f"{raw[:80]!r} is not a domain name like example.com.")
        if domain not in domains:
            domains.append(domain)
    if len(domains) > 20:
        raise DomainRefused("List at most 20 domains.")
    return domains


def set_allowed_domains(*, by: Membership, domains: list[str]) -> list[str]:
    """Replace the org's allowed email domains. Only an admin may, only for a domain of an
    address they hold themselves (so nobody claims another company's domain), never a
    free-mail domain, and a domain belongs to one org."""
    from conversations.exceptions import NotFound

    if not by.is_admin:
        raise NotFound("organization")
    own = by.user.email.rsplit("@", 1)[-1].lower()
    for domain in domains:
        if domain in PUBLIC_EMAIL_DOMAINS:
            raise DomainRefused(f"{domain} is a public email provider: allowing it would let "
                                "anyone join. Invite people one by one instead.")
        if domain != own:
            raise DomainRefused(f"You can only allow your own email domain ({own}), so that "
                                "nobody can claim another company's domain.")
    organization = by.organization
    try:
        with transaction.atomic():
            AllowedEmailDomain.objects.filter(organization=organization).exclude(
                domain__in=domains).delete()
            for domain in domains:
                AllowedEmailDomain.objects.get_or_create(
                    organization=organization, domain=domain, defaults={"added_by": by.user}
                )
    except IntegrityError as exc:  # unique domain: another org already allows it
        raise DomainRefused("That domain is already allowed by another organization on this "
                            "server. Ask whoever runs the server to sort it out.") from exc
    return domains


def allowed_domains(organization: Organization) -> list[str]:
    return list(organization.allowed_domains.values_list("domain", flat=True))
