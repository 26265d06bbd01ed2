"""Single sign-on through an org's OpenID Connect provider: the connection, and which
account a provider's person is.

The client secret is never stored here: the row names an environment variable
(``OIDC_CLIENT_SECRET_<SUFFIX>``) whose value, or the file its ``_FILE`` twin names, holds it
(``accounts.sso.client_secret``). The operator sets both the variable and this row (the
Django admin); the org's admins choose "SSO only" and the groups claim on the org's page.

Loaded from ``accounts/models.py``, where Django looks for the app's models.
"""

from __future__ import annotations

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import RegexValidator
from django.db import models

# Only variables made for this purpose: a row can never point the secret at SECRET_KEY or
# a provider key, which would be sent to whatever token endpoint the discovery URL names.
SECRET_ENV_PREFIX = "OIDC_CLIENT_SECRET_"
secret_env_name = RegexValidator(
    rf"^{SECRET_ENV_PREFIX}[A-Z0-9_]+$",
    f"Name an environment variable that starts with {SECRET_ENV_PREFIX} "
    "(upper-case letters, digits and underscores).",
)
claim_name = RegexValidator(r"^[A-Za-z0-9_.:/-]+$", "A claim name: letters, digits and _ . : / -")


class IdentityProvider(models.Model):
    """An org's OpenID Connect provider (Entra ID, Okta, Google, Keycloak...)."""

    organization = models.OneToOneField(
        "accounts.Organization", on_delete=models.CASCADE, related_name="identity_provider"
    )
    display_name = models.CharField(
        max_length=60, help_text='Shown on the sign-in button: "Sign in with <display name>".'
    )
    discovery_url = models.URLField(
        "Discovery URL", max_length=500,
        help_text="The issuer's /.well-known/openid-configuration address.",
    )
    client_id = models.CharField("Client ID", max_length=255)
    client_secret_env = models.CharField(
        "Client secret variable", max_length=100, validators=[secret_env_name],
        help_text=f"An environment variable ({SECRET_ENV_PREFIX}...) holding the client "
        "secret, or NAME_FILE holding the path of a file with it. Never the secret itself.",
    )
    scopes = models.CharField(
        max_length=255, default="openid email profile",
        help_text="Scopes asked for, space-separated; openid is required (Okta and "
        "Keycloak may need groups as well).",
    )
    groups_claim = models.CharField(
        "Groups claim", max_length=100, default="groups", validators=[claim_name],
        help_text="The ID-token claim that lists the person's groups.",
    )
    email_verified_claim = models.CharField(
        "Verified-email claim", max_length=100, default="email_verified", validators=[claim_name],
        help_text="The ID-token claim that is true when the provider verified the address "
        "(email_verified; Entra ID: xms_edov).",
    )
    enabled = models.BooleanField(default=True)
    # Members sign in only through the provider; owners keep a password (break-glass).
    sso_only = models.BooleanField("SSO only", default=False)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = "identity provider"

    def __str__(self) -> str:
        return f"{self.display_name} for {self.organization}"

    def clean(self) -> None:
        if "openid" not in self.scopes.split():
            raise ValidationError({"scopes": "Include openid: without it there is no ID token."})


class ExternalIdentity(models.Model):
    """The provider's subject (``iss`` + ``sub``) that signs in ``user``: an address
    that changes at the provider still reaches the same account."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="external_identities"
    )
    provider = models.ForeignKey(
        IdentityProvider, on_delete=models.CASCADE, related_name="identities"
    )
    issuer = models.CharField(max_length=500)
    subject = models.CharField(max_length=255)
    linked_at = models.DateTimeField(auto_now_add=True)
    last_sign_in_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["issuer", "subject"], name="one_account_per_subject"),
            models.UniqueConstraint(fields=["provider", "user"], name="one_subject_per_provider"),
        ]

    def __str__(self) -> str:
        return f"{self.subject} at {self.issuer} → {self.user_id}"
