from __future__ import annotations

from typing import Any

from django import forms
from django.conf import settings
from django.contrib.auth import login
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import redirect, render
from django.urls import reverse_lazy
from django.views.decorators.http import require_http_methods, require_POST

from accounts import onboarding
from accounts.forms import (
    EmailAuthenticationForm,
    FinishSignUpForm,
    FirstAccountForm,
    SignUpRequestForm,
)
from accounts.models import User
from chatsite.ratelimits import over_limit
from conversations.access import get_membership
from conversations.exceptions import NotFound


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
                site_url=request.build_absolute_uri("/"),
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
            return _signed_in(request, user)
    return render(request, "accounts/signup_finish.html", {"form": form, "link": link},
                  status=400 if form.errors else 200)


class LoginView(auth_views.LoginView):
    template_name = "accounts/login.html"
    authentication_form = EmailAuthenticationForm
    redirect_authenticated_user = True


class PasswordResetView(auth_views.PasswordResetView):
    """Django's reset flow; the page looks the same whether or not the address has an
    account, and one client can ask only PASSWORD_RESETS_PER_HOUR times an hour."""

    template_name = "accounts/password_reset.html"
    email_template_name = "accounts/password_reset_email.txt"
    subject_template_name = "accounts/password_reset_subject.txt"
    success_url = reverse_lazy("accounts:password_reset_done")

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


@login_required
@require_POST
def switch_organization(request: HttpRequest) -> HttpResponse:
    try:
        membership = get_membership(request.user, int(request.POST.get("organization", "")))  # type: ignore[arg-type]
    except (ValueError, NotFound):
        return redirect("conversations:home")
    if membership.organization_id == int(request.POST["organization"]):
        request.session["organization_id"] = membership.organization_id
    return HttpResponseRedirect("/")
