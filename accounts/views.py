from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib.auth import login
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import redirect, render
from django.urls import reverse_lazy
from django.views.decorators.http import require_POST

from accounts.forms import EmailAuthenticationForm, SignUpForm
from accounts.onboarding import sign_up
from chatsite.ratelimits import over_limit
from conversations.access import get_membership
from conversations.exceptions import NotFound


def signup(request: HttpRequest) -> HttpResponse:
    if request.user.is_authenticated:
        return redirect("conversations:home")
    form = SignUpForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        user = sign_up(
            email=form.cleaned_data["email"],
            password=form.cleaned_data["password"],
            organization_name=form.cleaned_data["organization"],
        )
        login(request, user, backend="django.contrib.auth.backends.ModelBackend")
        return redirect("conversations:home")
    return render(request, "accounts/signup.html", {"form": form}, status=400 if form.errors else 200)


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
