"""Which model profile a turn may use, decided from data (never from model names)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from django.conf import settings
from django.db.models import QuerySet

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
    profiles = enabled_profiles(organization)
    candidates = [organization.default_profile_id] if organization.default_profile_id else []
    for profile in profiles.filter(pk__in=candidates) or profiles.filter(name=settings.CHAT_MODEL):
        return profile
    return next((p for p in profiles.order_by("display_name") if not is_retired(p)), None)


def usable_profile(organization: Organization, name: str | None) -> ModelProfile:
    """The profile for a new turn, or a refusal that says what to use instead."""
    profiles = enabled_profiles(organization)
    profile = profiles.filter(name=name).first() if name else default_profile(organization)
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
