"""What a model profile's state means for the people using it: served by the offline
demo, retired, or in need of an admin (a coming shutdown, missing prices). Which profiles
an organization may use is decided above this layer, in ``accounts.model_access``."""

from __future__ import annotations

from django.conf import settings
from django.utils import timezone

from llm.catalog.sync import azure_pricing_warning
from llm.client import is_demo_mode, listed_shutdown_date
from llm.models import ModelProfile
from llm.types import LLMError


def openai_profiles_usable() -> bool:
    """OpenAI profiles need an OpenAI key (or the offline demo); an Azure-only set-up
    has none. The one setting the enabled-profiles rule depends on."""
    return bool(settings.OPENAI_API_KEY) or is_demo_mode()


def served_by_emulator(profile: ModelProfile) -> bool:
    return profile.provider == ModelProfile.Provider.OPENAI and is_demo_mode()


def is_retired(profile: ModelProfile) -> bool:
    # The offline demo model keeps serving a profile after its provider shut it down.
    return profile.is_retired() and not served_by_emulator(profile)


def refresh_shutdown_dates() -> list[str]:
    """Record shutdown dates the providers announce; returns the profiles that changed."""
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


def admin_warnings(profile: ModelProfile) -> list[str]:
    """What admins must fix about a profile: a coming or past shutdown, missing prices."""
    return [w for w in (shutdown_warning(profile), azure_pricing_warning(profile)) if w]

