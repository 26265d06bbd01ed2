from __future__ import annotations

from typing import Any

from django import forms
from django.contrib.auth import password_validation
from django.contrib.auth.forms import AuthenticationForm

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
