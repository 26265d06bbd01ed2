"""Sign-in through an org's OpenID Connect provider, with Authlib's client
(docs/decisions.md says why Authlib).

The flow is the authorization code flow with PKCE (S256), ``state`` and ``nonce``, kept in
the browser's session by Authlib until the callback uses them once. The ID token is
verified before anything is trusted: its signature against the provider's JWKS (fetched
again when a token names a key the cached set lacks, so the provider can rotate keys),
its issuer (the discovery document's), audience (our client id), expiry and nonce. An
address counts only when the provider says it verified it (``email_verified``, or the
claim the org names) and it is at one of the org's allowed domains: the org vouches for
its own domains only.

Who the person is: the provider's subject already linked to an account; else the account
with that address, which is linked (never a second account for the same address); else a
new account (just in time) with membership in the org. Groups following the provider are
re-read from the token at every sign-in (``accounts.groups``).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from authlib.common.errors import AuthlibBaseError
from authlib.integrations.django_client import DjangoOAuth2App
from authlib.integrations.django_client.integration import DjangoIntegration
from django.conf import settings
from django.db import IntegrityError, transaction
from django.http import HttpRequest, HttpResponse
from django.urls import reverse
from django.utils import timezone
from joserfc.errors import JoseError
from requests import RequestException

from accounts import audit, groups
from accounts.audit_models import AuditAction, AuditOutcome
from accounts.models import (
    AllowedEmailDomain,
    ExternalIdentity,
    IdentityProvider,
    Membership,
    User,
)
from chatsite.env import ImproperlyConfiguredEnv, env_secret

# What the browser's session keeps after an SSO sign-in: the provider and the ID token,
# for RP-initiated logout (``id_token_hint``).
SESSION_KEY = "sso"
NEXT_KEY = "sso_next"
# Provider documents (discovery, JWKS) are read again after this long, and the JWKS at
# once when a token is signed by a key it does not hold.
METADATA_SECONDS = 3600
HTTP_TIMEOUT_SECONDS = 10
# Clock skew allowed on exp/iat between the provider and this server.
LEEWAY_SECONDS = 60
SCOPES = "openid email profile"


class SSORefused(Exception):
    """A sign-in that is refused; the message says what happened and what to do."""


@dataclass(frozen=True)
class SignedIn:
    user: User
    membership: Membership
    created: bool  # a new account (just in time)
    linked: bool  # an existing account, linked to the provider's subject now
    id_token: str


# --- The provider's client ------------------------------------------------------------------


def client_secret(provider: IdentityProvider) -> str:
    """The client secret, from the variable the row names (or its ``_FILE`` twin)."""
    try:
        secret = env_secret(provider.client_secret_env)
    except ImproperlyConfiguredEnv as exc:
        raise SSORefused(f"Sign-in with {provider.display_name} is not set up on this "
                         "server (its client secret file cannot be read). Tell your "
                         "administrator.") from exc
    if not secret:
        raise SSORefused(f"Sign-in with {provider.display_name} is not set up on this server "
                         f"({provider.client_secret_env} is empty). Tell your administrator.")
    return secret


_apps: dict[tuple[Any, ...], DjangoOAuth2App] = {}
_apps_lock = threading.Lock()


def _app(provider: IdentityProvider) -> DjangoOAuth2App:
    """One Authlib client per provider configuration and process: it caches the
    discovery document and the JWKS between sign-ins."""
    secret = client_secret(provider)
    key = (provider.pk, provider.discovery_url, provider.client_id, secret)
    with _apps_lock:
        app = _apps.get(key)
        loaded = app.server_metadata.get("_loaded_at", 0) if app is not None else 0
        if app is None or time.time() - loaded > METADATA_SECONDS:
            for old in [k for k in _apps if k[0] == provider.pk]:
                del _apps[old]
            app = DjangoOAuth2App(
                DjangoIntegration(f"sso{provider.pk}"),
                name=f"sso{provider.pk}",
                client_id=provider.client_id,
                client_secret=secret,
                server_metadata_url=provider.discovery_url,
                client_kwargs={"scope": SCOPES if not provider.scopes else provider.scopes,
                               "code_challenge_method": "S256",
                               "token_endpoint_auth_method": "client_secret_basic",
                               "default_timeout": HTTP_TIMEOUT_SECONDS},
            )
            _apps[key] = app
    return app


def forget_clients() -> None:
    with _apps_lock:
        _apps.clear()


def callback_url(provider: IdentityProvider) -> str:
    """The redirect URI to register at the provider (on SITE_URL, never the request's
    Host, which the client chooses)."""
    return settings.SITE_URL.rstrip("/") + reverse("accounts:sso_callback", args=[provider.pk])


def post_logout_url() -> str:
    return settings.SITE_URL.rstrip("/") + reverse("accounts:login")


# --- Finding the provider --------------------------------------------------------------------


def enabled_providers() -> list[IdentityProvider]:
    return list(IdentityProvider.objects.filter(enabled=True).order_by("display_name", "pk"))


def get_provider(provider_id: int) -> IdentityProvider:
    provider = (IdentityProvider.objects.select_related("organization")
                .filter(pk=provider_id, enabled=True).first())
    if provider is None:
        raise SSORefused("This sign-in link is not in use any more. Sign in from the "
                         "sign-in page.")
    return provider


def _domain(email: str) -> str:
    return email.rsplit("@", 1)[-1].strip().lower()


def provider_for_email(email: str) -> IdentityProvider | None:
    """The enabled provider of the org whose allowed domain the address is at."""
    if "@" not in email:
        return None
    return (IdentityProvider.objects.filter(
        enabled=True, organization__allowed_domains__domain=_domain(email)).first())


def password_refusal(user: User) -> str | None:
    """Why ``user`` may not use a password, or None: a member (not an owner) of an org
    whose provider is "SSO only". Owners keep a password to reach the org when the
    provider is down or misconfigured (docs/sso.md, break-glass)."""
    membership = (Membership.objects.filter(
        user=user, organization__identity_provider__enabled=True,
        organization__identity_provider__sso_only=True,
    ).exclude(role=Membership.Role.OWNER).select_related("organization__identity_provider")
        .first())
    if membership is None:
        return None
    name = membership.organization.identity_provider.display_name
    return (f"{membership.organization.name} signs in with {name} only. "
            f"Use “Sign in with {name}” instead of a password.")


# --- The flow ---------------------------------------------------------------------------------


def begin(request: HttpRequest, provider: IdentityProvider, *, login_hint: str = "") -> HttpResponse:
    """Redirect the browser to the provider, with a fresh state, nonce and PKCE verifier
    kept in its session."""
    extra = {"login_hint": login_hint} if login_hint else {}
    try:
        return _app(provider).authorize_redirect(request, callback_url(provider), **extra)  # type: ignore[no-any-return]
    except (RequestException, ValueError, KeyError, RuntimeError) as exc:
        raise SSORefused(f"{provider.display_name} could not be reached. Try again in a "
                         "minute; if it keeps failing, tell your administrator.") from exc


def complete(request: HttpRequest, provider: IdentityProvider) -> SignedIn:
    """Check the provider's answer at the callback and find or create the person.
    Raises SSORefused, having written nothing, when anything does not hold."""
    app = _app(provider)
    try:
        metadata = app.load_server_metadata()
        issuer = metadata.get("issuer")
        if not issuer:
            raise SSORefused(f"{provider.display_name}'s discovery document names no issuer.")
        token = app.authorize_access_token(
            request,
            claims_options={
                "iss": {"essential": True, "values": [issuer]},
                "aud": {"essential": True, "values": [provider.client_id]},
                "sub": {"essential": True},
                "exp": {"essential": True},
            },
            leeway=LEEWAY_SECONDS,
        )
    except (AuthlibBaseError, JoseError) as exc:  # state, token endpoint, signature, claims
        _record_refusal(provider, f"token refused: {_reason(exc)}")
        raise SSORefused(
            f"{provider.display_name}'s answer could not be trusted, so nobody was signed "
            "in. Start again from the sign-in page."
        ) from exc
    except (RequestException, ValueError) as exc:  # unreachable, or not JSON
        raise SSORefused(f"{provider.display_name} could not be reached. Try again in a "
                         "minute.") from exc
    claims = token.get("userinfo")
    if not claims or not token.get("id_token"):
        _record_refusal(provider, "no ID token")
        raise SSORefused(f"{provider.display_name} sent no ID token, so nobody was signed in.")
    return _sign_in_person(provider, dict(claims), id_token=token["id_token"])


def _reason(exc: Exception) -> str:
    """The library's code for what failed (bad_signature, expired_token, "invalid_claim:
    Invalid claim: 'aud'", mismatching_state...), for the audit log."""
    error = getattr(exc, "error", None) or type(exc).__name__
    description = getattr(exc, "description", None)
    return (f"{error}: {description}" if description else str(error))[:120]


def _record_refusal(provider: IdentityProvider, reason: str, email: str = "") -> None:
    audit.record(AuditAction.SIGN_IN_FAILED, organization=provider.organization_id,
                 actor_email=email, outcome=AuditOutcome.REFUSED, method="oidc", reason=reason)


def _verified(value: Any) -> bool:
    return value is True or (isinstance(value, str) and value.strip().lower() == "true")


def _sign_in_person(provider: IdentityProvider, claims: dict[str, Any], *,
                    id_token: str) -> SignedIn:
    organization = provider.organization
    email = str(claims.get("email") or "").strip().lower()
    if not email or "@" not in email:
        _record_refusal(provider, "no email")
        raise SSORefused(f"{provider.display_name} did not send your email address. Ask "
                         "your administrator to release the email claim to this app.")
    if not _verified(claims.get(provider.email_verified_claim)):
        _record_refusal(provider, "email not verified", email)
        raise SSORefused(f"{provider.display_name} has not verified {email}, so it cannot "
                         "sign you in here. Verify the address with your provider, then "
                         "try again.")
    if not AllowedEmailDomain.objects.filter(organization=organization,
                                             domain=_domain(email)).exists():
        _record_refusal(provider, "domain not allowed", email)
        raise SSORefused(f"{email} is not at one of {organization.name}'s domains, so "
                         f"{provider.display_name} cannot sign it in here.")
    issuer, subject = str(claims["iss"]), str(claims["sub"])
    try:
        with transaction.atomic():
            user, created, linked = _account_for(provider, issuer=issuer, subject=subject,
                                                 email=email, name=str(claims.get("name") or ""))
            membership, _ = Membership.objects.get_or_create(
                user=user, organization=organization,
                defaults={"role": Membership.Role.MEMBER},
            )
            if not _groups_elsewhere(claims, provider.groups_claim):
                groups.sync_provider_groups(
                    membership=membership,
                    values=groups.claim_values(claims, provider.groups_claim),
                )
            membership.refresh_from_db(fields=["role"])
    except IntegrityError as exc:
        # The same person's first sign-in in two tabs at once: the other one won.
        raise SSORefused("You are being signed in from another tab. Try again.") from exc
    return SignedIn(user=user, membership=membership, created=created, linked=linked,
                    id_token=id_token)


def _groups_elsewhere(claims: dict[str, Any], claim: str) -> bool:
    """The token says the groups are too many to carry and names where to fetch them
    instead (Entra ID's "overage": ``_claim_names``). Membership is then left as it was,
    rather than read as "in no group"; docs/sso.md says how to stay under the limit."""
    names = claims.get("_claim_names")
    return isinstance(names, dict) and claim in names


def _account_for(provider: IdentityProvider, *, issuer: str, subject: str, email: str,
                 name: str) -> tuple[User, bool, bool]:
    identity = (ExternalIdentity.objects.select_related("user")
                .filter(issuer=issuer, subject=subject).first())
    now = timezone.now()
    created = linked = False
    if identity is not None:
        user = identity.user
        identity.last_sign_in_at = now
        identity.save(update_fields=["last_sign_in_at"])
    else:
        user_or_none = User.objects.filter(email=email).first()
        if user_or_none is None:
            user = User.objects.create_user(email=email, password=None, email_verified_at=now,
                                            first_name=name[:150])
            created = True
        else:
            user = user_or_none
            if ExternalIdentity.objects.filter(provider=provider, user=user).exists():
                raise SSORefused(f"{email} is already linked to another {provider.display_name} "
                                 "account. Ask your administrator.")
            linked = True
        ExternalIdentity.objects.create(user=user, provider=provider, issuer=issuer,
                                        subject=subject, last_sign_in_at=now)
        if linked:
            audit.record(AuditAction.SSO_LINKED, organization=provider.organization_id,
                         actor=user, obj=user, method="oidc", provider=provider.display_name)
    if not user.is_active:
        raise SSORefused("This account was deactivated. Ask your administrator.")
    if user.email_verified_at is None:
        # The provider verified the address (checked above): as good as our own link.
        user.email_verified_at = now
        user.save(update_fields=["email_verified_at"])
    return user, created, linked


def end_session_url(request: HttpRequest) -> str | None:
    """Where to send the browser after a local sign-out so the provider signs it out too
    (RP-initiated logout), or None when the session did not come from a provider that
    offers it. Read before the session is flushed."""
    data = request.session.get(SESSION_KEY)
    if not isinstance(data, dict):
        return None
    provider_id = data.get("provider")
    if not isinstance(provider_id, int):
        return None
    provider = IdentityProvider.objects.filter(pk=provider_id, enabled=True).first()
    if provider is None:
        return None
    try:
        app = _app(provider)
        if not app.load_server_metadata().get("end_session_endpoint"):
            return None
        result = app.create_logout_url(post_logout_redirect_uri=post_logout_url(),
                                       id_token_hint=data.get("id_token"),
                                       client_id=provider.client_id)
    except (SSORefused, RequestException, ValueError, KeyError, RuntimeError):
        return None
    url = str(result["url"])
    return url if urlsplit(url).scheme in ("http", "https") else None


# --- The org's choices -------------------------------------------------------------------------


def set_org_choices(*, by: Membership, sso_only: bool, groups_claim: str) -> IdentityProvider:
    """The org's admins decide whether members may still use passwords, and which claim
    lists groups; the connection itself is the operator's (Django admin)."""
    if not by.is_admin:
        raise SSORefused("Only the org's admins change single sign-on.")
    with transaction.atomic():
        # Two admins saving at once: the second diffs against the first's save.
        provider = IdentityProvider.objects.select_for_update().get(organization_id=by.organization_id)
        changes: dict[str, dict[str, Any]] = {}
        if provider.sso_only != sso_only:
            changes["sso_only"] = {"old": provider.sso_only, "new": sso_only}
        if provider.groups_claim != groups_claim:
            changes["groups_claim"] = {"old": provider.groups_claim, "new": groups_claim}
        if changes:
            provider.sso_only = sso_only
            provider.groups_claim = groups_claim
            provider.save(update_fields=["sso_only", "groups_claim", "updated_at"])
            audit.record(AuditAction.ORG_SETTINGS_CHANGED, organization=by.organization_id,
                         actor=by.user, obj=provider, changes=changes)
    return provider
