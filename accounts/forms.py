from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from django import forms
from django.conf import settings
from django.contrib.auth import password_validation
from django.contrib.auth.forms import AuthenticationForm, PasswordResetForm

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


class SiteURLPasswordResetForm(PasswordResetForm):
    """Django's reset form, with the emailed link on SITE_URL: Django would build it on
    the request's Host, which the client sends (a forged one, or another port, which
    ALLOWED_HOSTS does not check, would carry the victim's token to the forger)."""

    def save(self, **kwargs: Any) -> None:  # type: ignore[override]  # Django's keywords, passed on
        site = urlsplit(settings.SITE_URL)
        kwargs.update(domain_override=site.netloc, use_https=site.scheme == "https")
        super().save(**kwargs)
