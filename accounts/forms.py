from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

from django import forms
from django.conf import settings
from django.contrib.auth import password_validation
from django.contrib.auth.forms import AuthenticationForm, PasswordResetForm

from accounts import sso
from accounts.models import User


def _validate_new_password(cleaned: dict[str, Any], email: str) -> None:
    password = cleaned.get("password")
    if password:
        password_validation.validate_password(password, User(email=email))


class FirstAccountForm(forms.Form):
    """The fresh install's first account: it signs up directly and owns the first org."""

    email = forms.EmailField(label="Email", max_length=254)
    password = forms.CharField(label="Password", strip=False, widget=forms.PasswordInput)
    organization = forms.CharField(
        label="Organization name", max_length=120, required=False,
        help_text="Leave empty to use your email's domain.",
    )

    def clean_email(self) -> str:
        return self.cleaned_data["email"].strip().lower()

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        _validate_new_password(cleaned, cleaned.get("email", ""))
        return cleaned


class SignUpRequestForm(forms.Form):
    """Everyone after the first: an address to email the next step to."""

    email = forms.EmailField(label="Email", max_length=254)
    organization = forms.CharField(
        label="Organization name", max_length=120, required=False,
        help_text="Leave empty to use your email's domain.",
    )

    def clean_email(self) -> str:
        return self.cleaned_data["email"].strip().lower()


class FinishSignUpForm(forms.Form):
    password = forms.CharField(label="Password", strip=False, widget=forms.PasswordInput)


class EmailAuthenticationForm(AuthenticationForm):
    username = forms.EmailField(label="Email", max_length=254, widget=forms.EmailInput(attrs={"autofocus": True}))
    password = forms.CharField(label="Password", strip=False, widget=forms.PasswordInput)

    def confirm_login_allowed(self, user: Any) -> None:
        super().confirm_login_allowed(user)
        refusal = sso.password_refusal(user)  # an "SSO only" org's member (owners excepted)
        if refusal:
            raise forms.ValidationError(refusal, code="sso_only")


class SiteURLPasswordResetForm(PasswordResetForm):
    """Django's reset form, with the emailed link on SITE_URL: Django would build it on
    the request's Host, which the client sends (a forged one, or another port, which
    ALLOWED_HOSTS does not check, would carry the victim's token to the forger)."""

    def get_users(self, email: str) -> Iterator[Any]:
        # An "SSO only" org's members get no reset mail (the page still says it was sent).
        return (user for user in super().get_users(email) if sso.password_refusal(user) is None)

    def save(self, **kwargs: Any) -> None:  # type: ignore[override]  # Django's keywords, passed on
        site = urlsplit(settings.SITE_URL)
        kwargs.update(domain_override=site.netloc, use_https=site.scheme == "https")
        super().save(**kwargs)


class DeleteAccountForm(forms.Form):
    """Deleting an account asks for proof that the person at the keyboard owns it: the
    password, or for an account without one (single sign-on) the address typed out."""

    confirm = forms.CharField(strip=False, max_length=254)

    def __init__(self, *args: Any, user: User, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.user = user
        field = self.fields["confirm"]
        if user.has_usable_password():
            field.label = "Your password"
            field.widget = forms.PasswordInput(attrs={"autocomplete": "current-password"})
        else:
            field.label = f"Type your email address ({user.email}) to confirm"
            field.widget = forms.EmailInput(attrs={"autocomplete": "off"})

    def clean_confirm(self) -> str:
        typed = self.cleaned_data["confirm"]
        if self.user.has_usable_password():
            if not self.user.check_password(typed):
                raise forms.ValidationError("That is not your password. Nothing was deleted.")
        elif typed.strip().lower() != self.user.email.lower():
            raise forms.ValidationError("That is not your address. Nothing was deleted.")
        return typed
