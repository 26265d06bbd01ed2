"""System checks of the settings a deployment must get right.

``manage.py check --deploy`` runs the ones tagged for deployment; an Error there fails it,
so a production install cannot go live printing password-reset and invitation links into
its log, or building them from a default that is not its address.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.core.checks import Error, Tags, Warning, register
from django.http.request import validate_host

# Backends that deliver nothing: the message, and any link in it, stays in this process
# (console: printed to its output, which is usually a log; locmem: a list in memory).
UNDELIVERED_BACKENDS = (
    "django.core.mail.backends.console.EmailBackend",
    "django.core.mail.backends.locmem.EmailBackend",
)


def is_production() -> bool:
    """The real topology without DEBUG: what the README's deployment section describes."""
    return not settings.DEBUG and not settings.EMBEDDED


@register(Tags.security, deploy=True)
def check_email_is_delivered(app_configs: Any = None, **kwargs: Any) -> list[Error]:
    if settings.DEBUG or settings.EMAIL_BACKEND not in UNDELIVERED_BACKENDS:
        return []
    return [Error(
        f"EMAIL_BACKEND is {settings.EMAIL_BACKEND} while DEBUG is off: no mail is delivered, "
        "and password-reset, invitation and sign-up links (each a working secret) are "
        "printed to the log or kept in memory.",
        hint="Set EMAIL_BACKEND=django.core.mail.backends.smtp.EmailBackend (the default "
             "when DATABASE_URL is set) with EMAIL_HOST, EMAIL_PORT, EMAIL_HOST_USER, "
             "EMAIL_HOST_PASSWORD and EMAIL_USE_TLS.",
        id="chatsite.E001",
    )]


@register(Tags.security, deploy=True)
def check_site_url(app_configs: Any = None, **kwargs: Any) -> list[Error | Warning]:
    if not is_production():
        return []
    if not settings.SITE_URL_CONFIGURED:
        return [Error(
            f"SITE_URL is not set: emailed links would point at {settings.SITE_URL}.",
            hint="Set SITE_URL to the address people open, e.g. SITE_URL=https://chat.example.com.",
            id="chatsite.E002",
        )]
    host = urlsplit(settings.SITE_URL).hostname or ""
    if not validate_host(host, settings.ALLOWED_HOSTS):
        return [Warning(
            f"SITE_URL's host {host} is not in ALLOWED_HOSTS: emailed links would be refused.",
            hint=f"Add {host} to ALLOWED_HOSTS.",
            id="chatsite.W001",
        )]
    return []
