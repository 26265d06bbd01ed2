from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from django import forms
from django.utils import timezone
from django.utils.formats import date_format

from accounts.models import Organization
from sharing.models import ShareLink

# The "Expires" select: value -> lifetime counted from the moment of saving.
LIFETIMES: dict[str, timedelta | None] = {
    "1d": timedelta(days=1),
    "7d": timedelta(days=7),
    "30d": timedelta(days=30),
    "never": None,
}
LIFETIME_LABELS = [("1d", "1 day"), ("7d", "7 days"), ("30d", "30 days"), ("never", "Never")]
KEEP = "keep"


def visibility_choices(organization: Organization) -> list[tuple[str, str]]:
    """"Anyone with the link" is offered only where the org's policy allows it."""
    choices = [(ShareLink.Visibility.ORG.value, f"Members of {organization.name}")]
    if organization.share_policy == Organization.SharePolicy.PUBLIC:
        choices.append((ShareLink.Visibility.PUBLIC.value, "Anyone with the link"))
    return choices


class ShareSettingsForm(forms.Form):
    visibility = forms.ChoiceField(label="Who can open it")
    expires = forms.ChoiceField(label="Expires", initial="never")

    def __init__(
        self,
        *args: Any,
        organization: Organization,
        link: ShareLink | None = None,
        **kwargs: Any,
    ) -> None:
        if link is not None:
            kwargs.setdefault(
                "initial",
                {"visibility": link.visibility, "expires": KEEP if link.expires_at else "never"},
            )
        super().__init__(*args, **kwargs)
        self.link = link
        self.fields["visibility"].choices = visibility_choices(organization)  # type: ignore[attr-defined]
        choices = list(LIFETIME_LABELS)
        if link is not None and link.expires_at is not None:
            # An existing expiry stays unless another lifetime is chosen.
            when = date_format(timezone.localtime(link.expires_at), "j M Y, H:i")
            verb = "expired" if link.is_expired else "expires"
            choices.insert(0, (KEEP, f"Keep current ({verb} {when})"))
        self.fields["expires"].choices = choices  # type: ignore[attr-defined]

    def expires_at(self) -> datetime | None:
        choice = self.cleaned_data["expires"]
        if choice == KEEP:
            return self.link.expires_at if self.link is not None else None
        lifetime = LIFETIMES[choice]
        return timezone.now() + lifetime if lifetime is not None else None


class SharePolicyForm(forms.Form):
    policy = forms.ChoiceField(label="Sharing policy", choices=Organization.SharePolicy.choices)
