from __future__ import annotations

from typing import Any

from auditlog.context import disable_auditlog
from django import forms
from django.conf import settings
from django.contrib import messages
from django.contrib.auth import login
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import redirect, render
from django.urls import reverse_lazy
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_http_methods, require_POST

from accounts import audit, lockout, members, onboarding, sso, sso_views, verification
from accounts.erasure import delete_user
from accounts.forms import (
    DeleteAccountForm,
    EmailAuthenticationForm,
    FinishSignUpForm,
    FirstAccountForm,
    SignUpRequestForm,
    SiteURLPasswordResetForm,
)
from accounts.models import User
from accounts.revocation import AUTH_GONE, revoke_sockets
from chatsite.errors import NotFound
from chatsite.ratelimits import over_limit, over_limit_for


def _signed_in(request: HttpRequest, user: User) -> HttpResponse:
    login(request, user, backend="django.contrib.auth.backends.ModelBackend")
    return redirect("conversations:home")


@require_http_methods(["GET", "POST"])
def signup(request: HttpRequest) -> HttpResponse:
    if request.user.is_authenticated:
        return redirect("conversations:home")
    first = onboarding.is_first_account()
    form: forms.Form = (FirstAccountForm if first else SignUpRequestForm)(request.POST or None)
    status = 200
    if request.method == "POST":
        limited, retry_after = over_limit(request, group="signup",
                                          rate=f"{settings.SIGNUPS_PER_HOUR}/h")
        if limited:
            form.is_valid()
            form.add_error(None, "Too many sign-ups from this network. "
                                 f"Try again in {retry_after // 60 + 1} minutes.")
            status = 429
        elif form.is_valid() and first:
            try:
                user = onboarding.sign_up_first_account(
                    email=form.cleaned_data["email"], password=form.cleaned_data["password"],
                    organization_name=form.cleaned_data["organization"],
                )
            except onboarding.SignUpRefused as exc:
                form.add_error(None, str(exc))
            else:
                return _signed_in(request, user)
        elif form.is_valid():
            onboarding.request_sign_up(
                email=form.cleaned_data["email"],
                organization_name=form.cleaned_data.get("organization", ""),
            )
            return render(request, "accounts/signup_sent.html", {
                "email": form.cleaned_data["email"], "open": onboarding.signup_is_open(),
            })
        if form.errors and status == 200:
            status = 400
    return render(request, "accounts/signup.html", {
        "form": form, "first": first, "open": onboarding.signup_is_open(),
    }, status=status)


@require_http_methods(["GET", "POST"])
def signup_finish(request: HttpRequest, token: str) -> HttpResponse:
    """The emailed link of an open sign-up: choose a password, own a new org."""
    if request.user.is_authenticated:
        return redirect("conversations:home")
    try:
        link = onboarding.read_sign_up_link(token)
    except onboarding.SignUpRefused as exc:
        return render(request, "accounts/signup_link_invalid.html", {"error": str(exc)},
                      status=410)
    form = FinishSignUpForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            user = onboarding.finish_sign_up(token=token, password=form.cleaned_data["password"])
        except onboarding.PasswordRefused as exc:
            form.add_error("password", str(exc))
        except onboarding.SignUpRefused as exc:
            return render(request, "accounts/signup_link_invalid.html", {"error": str(exc)},
                          status=410)
        else:
            response = _signed_in(request, user)
            if link.join is not None:
                request.session["organization_id"] = link.join.pk
                messages.success(request, f"Welcome to {link.join}.")
            return response
    return render(request, "accounts/signup_finish.html", {"form": form, "link": link},
                  status=400 if form.errors else 200)


@login_required
@require_POST
def send_verification(request: HttpRequest) -> HttpResponse:
    """Mail the signed-in person a link that verifies their address; the page never shows it."""
    try:
        verification.send_verification_link(user=request.user)  # type: ignore[arg-type]
    except verification.VerificationRefused as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, f"We emailed a verification link to {request.user.email}. "  # type: ignore[union-attr]
                                  "Open it to verify your address.")
    back = request.POST.get("next", "")
    if not url_has_allowed_host_and_scheme(back, allowed_hosts={request.get_host()},
                                           require_https=request.is_secure()):
        back = ""
    return redirect(back or "conversations:account")


@require_http_methods(["GET", "POST"])
def verify_email(request: HttpRequest, token: str) -> HttpResponse:
    """The mailed verification link: a button (POST) verifies, so a mail scanner that
    fetches the link verifies nothing."""
    status = 200
    context: dict[str, Any] = {}
    try:
        if request.method == "POST":
            context["verified"] = verification.verify_email(token=token)
        else:
            context["pending"] = verification.read_verification_link(token)
    except verification.VerificationRefused as exc:
        context["error"] = str(exc)
        status = 410
    response = render(request, "accounts/verify_email.html", context, status=status)
    # The token is in the URL: keep it out of Referer headers to other sites.
    response["Referrer-Policy"] = "same-origin"
    return response


class LoginView(auth_views.LoginView):
    template_name = "accounts/login.html"
    authentication_form = EmailAuthenticationForm
    redirect_authenticated_user = True

    def post(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        # An address at an org's SSO domain and no password: off to its provider.
        return sso_views.route_to_provider(request) or super().post(request, *args, **kwargs)

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        return {**super().get_context_data(**kwargs), "sso_providers": sso.enabled_providers()}

    def form_valid(self, form: Any) -> HttpResponse:
        response = super().form_valid(form)
        # This browser now counts as the owner's device when the account is under attack.
        lockout.remember_device(self.request, response, username=form.get_user().get_username())
        return response


class PasswordResetView(auth_views.PasswordResetView):
    """Django's reset flow; the page looks the same whether or not the address has an
    account, one client can ask only PASSWORD_RESETS_PER_HOUR times an hour, and one
    address gets at most ``mails_per_address_per_hour`` reset mails."""

    template_name = "accounts/password_reset.html"
    email_template_name = "accounts/password_reset_email.txt"
    subject_template_name = "accounts/password_reset_subject.txt"
    success_url = reverse_lazy("accounts:password_reset_done")
    mails_per_address_per_hour = 3

    form_class = SiteURLPasswordResetForm  # the emailed link is built on SITE_URL
    def form_valid(self, form: Any) -> HttpResponse:
        limited, _ = over_limit_for(form.cleaned_data["email"].strip().lower(),
                                    group="password-reset-mails-per-address",
                                    rate=f"{self.mails_per_address_per_hour}/h")
        if limited:
            # Accepted like any other request: the page tells nobody about the address.
            return HttpResponseRedirect(self.get_success_url())
        return super().form_valid(form)

    def post(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        limited, retry_after = over_limit(
            request, group="password-reset", rate=f"{settings.PASSWORD_RESETS_PER_HOUR}/h"
        )
        if limited:
            form = self.get_form()
            form.is_valid()
            form.add_error(None, "Too many reset requests from this network. "
                                 f"Try again in {retry_after // 60 + 1} minutes.")
            response = self.render_to_response(self.get_context_data(form=form), status=429)
            response["Retry-After"] = str(retry_after)
            return response
        return super().post(request, *args, **kwargs)


class PasswordResetConfirmView(auth_views.PasswordResetConfirmView):
    """Setting a new password through the emailed link also lifts the account's sign-in
    pauses, from every client, so the new password works at once."""

    def form_valid(self, form: Any) -> HttpResponse:
        # The saved password is audited as a reset, not a change (audit_receivers).
        with audit.password_action(audit.AuditAction.PASSWORD_RESET):
            response = super().form_valid(form)
        lockout.forgive_account(username=form.user.get_username())
        return response


@login_required
@require_POST
def switch_organization(request: HttpRequest) -> HttpResponse:
    try:
        membership = members.get_membership(request.user, int(request.POST.get("organization", "")))  # type: ignore[arg-type]
    except (ValueError, NotFound):
        return redirect("conversations:home")
    if membership.organization_id == int(request.POST["organization"]):
        request.session["organization_id"] = membership.organization_id
    return HttpResponseRedirect("/")


@login_required
@require_http_methods(["GET", "POST"])
def delete_account(request: HttpRequest) -> HttpResponse:
    """"Delete my account": the person's conversations, share links and personal data are
    erased (accounts.erasure); their orgs keep the anonymous usage numbers. Refused while
    it would leave an org with members but no owner."""
    user: User = request.user  # type: ignore[assignment]
    form = DeleteAccountForm(request.POST or None, user=user)
    orphaned = members.orgs_left_without_an_owner(user)
    if request.method == "POST" and not orphaned and form.is_valid():
        audit.record_for_person(audit.AuditAction.ACCOUNT_DELETED, user=user,
                                actor=user, actor_email=user.email)
        user_id = user.pk
        # The entry above is the record of it: the model-change log would otherwise name the
        # person being deleted as the actor of their own rows' removal (a row that refers
        # to a deleted user), and a sign-out entry would follow an account that is gone.
        with disable_auditlog():
            delete_user(user=user)
        revoke_sockets(user_id=user_id, code=AUTH_GONE, reason="Your account was deleted.")
        request.session.flush()
        messages.success(request, "Your account and your conversations were deleted.")
        return redirect("accounts:login")
    status = 400 if request.method == "POST" else 200
    return render(request, "accounts/delete_account.html",
                  {"form": form, "orphaned": orphaned}, status=status)
