"""The model profiles in the Django admin (/admin/llm/modelprofile/)."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit, urlunsplit

from django import forms
from django.contrib import admin
from django.http import HttpRequest
from django.utils.translation import override as translation_override

from llm.models import ModelProfile
from llm.profiles import shutdown_warning

# Where a profile's key goes and which variable it comes from: the admin history names
# their old and new values, so a changed destination for a key can be traced to a person.
AUDITED_PROFILE_FIELDS = ("provider", "endpoint", "api_key_env")


def _shown(field: str, value: Any) -> str:
    text = str(value or "")
    if field == "endpoint" and text:
        # A URL may carry a password in its user part; the history never shows it.
        parts = urlsplit(text)
        if parts.password is not None:
            host = parts.hostname or ""
            if parts.port is not None:
                host = f"{host}:{parts.port}"
            text = urlunsplit(parts._replace(netloc=f"{parts.username}:***@{host}"))
    return f"“{text}”" if text else "empty"


@admin.register(ModelProfile)
class ModelProfileAdmin(admin.ModelAdmin):
    list_display = ["display_name", "name", "provider", "model", "api_style", "context_window",
                    "input_price", "cached_input_price", "output_price", "shutdown_date",
                    "retirement", "is_active", "origin"]
    list_filter = ["origin", "provider", "api_style", "is_active"]
    search_fields = ["name", "display_name", "model"]
    readonly_fields = ["catalog_key", "catalog_values", "listed_at"]

    def save_model(self, request: HttpRequest, obj: ModelProfile, form: forms.ModelForm, change: bool) -> None:
        # A discovered model becomes usable once an admin has priced it: it is theirs now.
        priced = {"input_price", "output_price"} & set(form.changed_data)
        if obj.origin == ModelProfile.Origin.DISCOVERED and priced:
            obj.origin = ModelProfile.Origin.ADMIN
        super().save_model(request, obj, form, change)

    def construct_change_message(
        self, request: HttpRequest, form: forms.Form, formsets: Any, add: bool = False
    ) -> list[dict[str, Any]]:
        """Django's message, with the audited fields' old and new values in their labels
        (LogEntry shows them as "Changed Endpoint (from “…” to “…”) and …")."""
        message = super().construct_change_message(request, form, formsets, add)
        audited = [name for name in AUDITED_PROFILE_FIELDS if name in form.changed_data]
        if not audited:
            return message
        labels: dict[str, str] = {}
        for name in audited:
            with translation_override(None):  # as Django's own labels in the message
                label = str(form.fields[name].label or name)
            new = _shown(name, form.cleaned_data.get(name))
            old = _shown(name, form.initial.get(name))
            labels[label] = f"{label} (set to {new})" if add else f"{label} (from {old} to {new})"
        if add:
            return [*message, {"changed": {"fields": list(labels.values())}}]
        for entry in message:
            changed = entry.get("changed")
            if changed is not None and "name" not in changed:  # the profile's own fields
                changed["fields"] = [labels.get(label, label) for label in changed["fields"]]
        return message

    @admin.display(description="Retirement")
    def retirement(self, profile: ModelProfile) -> str:
        return shutdown_warning(profile, within_days=60) or "—"
