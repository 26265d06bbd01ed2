"""Single sign-on pages: the trip to the org's identity provider and back, sign-out that
also signs out at the provider, and the org's Single sign-on page.

Views parse input, call one domain function (``accounts.sso``) and respond.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from django.contrib import messages
from django.contrib.auth import login
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_GET, require_http_methods

from accounts import sso
from accounts.group_forms import SingleSignOnForm
from accounts.models import IdentityProvider
from accounts.org_views import page_admin
from chatsite.errors import NotFound

# The sign-in receiver (accounts.audit_receivers) files the sign-in under this method.
SIGN_IN_METHOD_ATTRIBUTE = "sign_in_method"


def _safe_next(request: HttpRequest, value: str) -> str:
    if value and url_has_allowed_host_and_scheme(value, allowed_hosts={request.get_host()},
                                                 require_https=request.is_secure()):
        return value
    return ""


def _refused(request: HttpRequest, error: str, *, status: int = 403) -> HttpResponse:
    return render(request, "accounts/sso_refused.html", {"error": error}, status=status)


def start_url(provider: IdentityProvider, *, login_hint: str = "", next_url: str = "") -> str:
    params = {key: value for key, value in (("login_hint", login_hint), ("next", next_url)) if value}
    url = reverse("accounts:sso_start", args=[provider.pk])
    return f"{url}?{urlencode(params)}" if params else url


@require_GET
def start(request: HttpRequest, provider_id: int) -> HttpResponse:
    """Off to the provider, with a fresh state, nonce and PKCE verifier in the session."""
    try:
        provider = sso.get_provider(provider_id)
        next_url = _safe_next(request, request.GET.get("next", ""))
        if next_url:
            request.session[sso.NEXT_KEY] = next_url
        else:
            request.session.pop(sso.NEXT_KEY, None)
        return sso.begin(request, provider, login_hint=request.GET.get("login_hint", "")[:254])
    except sso.SSORefused as exc:
        return _refused(request, str(exc), status=503)


@require_GET
def callback(request: HttpRequest, provider_id: int) -> HttpResponse:
    """The provider's answer: verified, then the person is signed in (created or linked
    first when needed)."""
    try:
        provider = sso.get_provider(provider_id)
        if request.GET.get("error"):
            # The person cancelled at the provider, or it refused them: nothing to check.
            description = request.GET.get("error_description", "")[:200]
            return _refused(request, f"{provider.display_name} did not sign you in"
                                     f"{': ' + description if description else ''}. "
                                     "Start again from the sign-in page.")
        signed = sso.complete(request, provider)
    except sso.SSORefused as exc:
        return _refused(request, str(exc))
    next_url = request.session.pop(sso.NEXT_KEY, "")
    setattr(request, SIGN_IN_METHOD_ATTRIBUTE, "oidc")
    login(request, signed.user, backend="django.contrib.auth.backends.ModelBackend")
    request.session[sso.SESSION_KEY] = {"provider": provider.pk, "id_token": signed.id_token}
    request.session["organization_id"] = signed.membership.organization_id
    if signed.created:
        messages.success(request, f"Welcome to {provider.organization.name}.")
    return HttpResponseRedirect(_safe_next(request, next_url) or reverse("conversations:home"))


def route_to_provider(request: HttpRequest) -> HttpResponse | None:
    """The sign-in form sent with an address and no password: when the address is at an
    org's domain with a provider, the person goes there. (With a password typed, the
    password is checked: owners' break-glass sign-in.)"""
    email = request.POST.get("username", "").strip().lower()
    if not email or request.POST.get("password"):
        return None
    provider = sso.provider_for_email(email)
    if provider is None:
        return None
    # A page of our own, not a redirect: the form's CSP (form-action 'self') would stop a
    # redirect chain that ends at the provider.
    return render(request, "accounts/sso_continue.html", {
        "provider": provider,
        "url": start_url(provider, login_hint=email,
                         next_url=_safe_next(request, request.POST.get("next", ""))),
    })


class SignOutView(auth_views.LogoutView):
    """Django's sign-out (the session ends; its sockets close, accounts.signals), then,
    for a session that came from a provider offering RP-initiated logout, a page that
    takes the browser to the provider's end-session endpoint."""

    def post(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        end_session = sso.end_session_url(request)  # before the session is flushed
        response = super().post(request, *args, **kwargs)
        if end_session is None:
            return response
        return render(request, "accounts/sso_signed_out.html", {"end_session_url": end_session})


# --- The org's Single sign-on page -----------------------------------------------------------


@login_required
@require_http_methods(["GET", "POST"])
def org_settings(request: HttpRequest) -> HttpResponse:
    admin = page_admin(request)
    provider = IdentityProvider.objects.filter(organization_id=admin.organization_id).first()
    form = None
    status = 200
    if provider is not None:
        form = SingleSignOnForm(request.POST or None, initial={
            "sso_only": provider.sso_only, "groups_claim": provider.groups_claim,
        })
        if request.method == "POST":
            if form.is_valid():
                try:
                    sso.set_org_choices(by=admin, sso_only=form.cleaned_data["sso_only"],
                                        groups_claim=form.cleaned_data["groups_claim"])
                except sso.SSORefused as exc:
                    raise NotFound("organization") from exc
                messages.success(request, "Single sign-on settings saved.")
                return redirect(f"{reverse('org:sso')}?org={admin.organization_id}")
            status = 400
    elif request.method == "POST":
        raise NotFound("identity provider")
    return render(request, "org/sso.html", {
        "organization": admin.organization, "admin": admin, "provider": provider,
        "form": form, "callback_url": sso.callback_url(provider) if provider else "",
        "section": "sso",
    }, status=status)
