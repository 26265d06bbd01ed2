from __future__ import annotations

from django.contrib.auth import login
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from accounts.forms import EmailAuthenticationForm, SignUpForm
from accounts.onboarding import sign_up
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
