"""Which model profile a turn may use, decided from data (never from model names)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from django.conf import settings
from django.db.models import QuerySet
from django.utils import timezone

from conversations.exceptions import TurnRefused
from conversations.llm import is_demo_mode
from conversations.models import ModelProfile

if TYPE_CHECKING:
    from accounts.models import Organization


def enabled_profiles(organization: Organization) -> QuerySet[ModelProfile]:
    """Profiles the org may use: its explicit list, or every active profile if none."""
    profiles = ModelProfile.objects.filter(is_active=True)
    if organization.enabled_profiles.exists():
        profiles = profiles.filter(organizations=organization)
    return profiles


def served_by_emulator(profile: ModelProfile) -> bool:
    return profile.provider == ModelProfile.Provider.OPENAI and is_demo_mode()


def is_retired(profile: ModelProfile) -> bool:
    # The offline demo model keeps serving a profile after its provider shut it down.
    return profile.is_retired() and not served_by_emulator(profile)


def default_profile(organization: Organization) -> ModelProfile | None:
    """The org's default, else CHAT_MODEL, else the first enabled profile; retired ones
    are passed over so a new chat starts on a model that still answers."""
    profiles = enabled_profiles(organization)
    preferred = [
        *profiles.filter(pk=organization.default_profile_id),
        *profiles.filter(name=settings.CHAT_MODEL),
        *profiles.order_by("display_name"),
    ]
    usable = next((p for p in preferred if not is_retired(p)), None)
    return usable or (preferred[0] if preferred else None)


def usable_profile(organization: Organization, name: str | None) -> ModelProfile:
    """The profile for a new turn, or a refusal that says what to use instead."""
    profiles = enabled_profiles(organization)
    profile = profiles.filter(name=name).first() if name else default_profile(organization)
    if profile is None and name:
        raise TurnRefused(
            "model_unavailable",
            f"The model profile {name!r} is not enabled for your organization. Pick another model.",
        )
    if profile is None:
        raise TurnRefused(
            "model_unavailable",
            "No model is enabled for your organization. Ask an admin to enable a model profile.",
        )
    if is_retired(profile):
        alternatives = [p.display_name for p in profiles.exclude(pk=profile.pk) if not is_retired(p)]
        advice = (
            f"Use {alternatives[0]} instead." if alternatives
            else "Ask an admin to add its successor as a model profile."
        )
        raise TurnRefused(
            "model_unavailable",
            f"{profile.display_name} was retired by its provider on "
            f"{profile.shutdown_date:%d %b %Y}. {advice}",
        )
    return profile


def refresh_shutdown_dates() -> list[str]:
    """Record shutdown dates the providers announce; returns the profiles that changed."""
    from conversations.llm.client import listed_shutdown_date
    from conversations.llm.types import LLMError

    changed = []
    for profile in ModelProfile.objects.filter(is_active=True):
        if served_by_emulator(profile):
            continue
        try:
            announced = listed_shutdown_date(profile)
        except LLMError:
            continue
        if announced and announced != profile.shutdown_date:
            profile.shutdown_date = announced
            profile.save(update_fields=["shutdown_date"])
            changed.append(profile.name)
    return changed


def shutdown_warning(profile: ModelProfile, *, within_days: int = 30) -> str:
    """Words for admins when a profile retires soon or has retired."""
    if profile.shutdown_date is None:
        return ""
    days = (profile.shutdown_date - timezone.localdate()).days
    if days < 0 and served_by_emulator(profile):
        return (f"{profile.display_name} was retired by its provider on {profile.shutdown_date:%d %b %Y}; "
                "the offline demo still answers for it, but a real key needs a successor profile.")
    if days < 0:
        return f"{profile.display_name} was retired on {profile.shutdown_date:%d %b %Y}. Add and enable its successor."
    if days <= within_days:
        return (f"{profile.display_name} retires on {profile.shutdown_date:%d %b %Y} ({days} days). "
                "Add and enable its successor before then.")
    return ""
