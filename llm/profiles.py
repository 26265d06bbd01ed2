"""Which model profile a turn may use, decided from data (never from model names)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

from django.conf import settings
from django.db.models import Exists, OuterRef, Q, QuerySet
from django.utils import timezone

from chatsite.errors import Refused
from llm.client import is_demo_mode
from llm.models import ModelProfile

if TYPE_CHECKING:
    from accounts.models import Organization


def enabled_profiles(organization: Organization) -> QuerySet[ModelProfile]:
    """Profiles the org may use, by display name: its explicit list, or every active
    profile if none. Discovered models wait for an admin to price them; OpenAI profiles
    need an OpenAI key (an Azure-only set-up has none). One query."""
    return _enabled_among(ModelProfile.objects.all(), organization.pk).order_by("display_name", "pk")


def profile_enabled(*, organization_field: str, profile_field: str) -> Exists:
    """Whether the outer row's profile is one its org may use (the rule of
    ``enabled_profiles``), as an expression another query can carry: a follow-up's
    conversation query checks its model this way instead of loading every profile the
    org may use."""
    return Exists(_enabled_among(ModelProfile.objects.filter(pk=OuterRef(profile_field)),
                                 OuterRef(OuterRef(organization_field))))


def openai_profiles_usable() -> bool:
    """OpenAI profiles need an OpenAI key (or the offline demo); an Azure-only set-up
    has none. The one setting the enabled-profiles rule depends on."""
    return bool(settings.OPENAI_API_KEY) or is_demo_mode()


def _enabled_among(profiles: QuerySet[ModelProfile],
                   organization: int | OuterRef) -> QuerySet[ModelProfile]:
    from accounts.models import Organization

    profiles = profiles.filter(is_active=True).exclude(origin=ModelProfile.Origin.DISCOVERED)
    if not openai_profiles_usable():
        profiles = profiles.exclude(provider=ModelProfile.Provider.OPENAI)
    # Q: the stubs do not know an OuterRef may stand for the id.
    chosen = Organization.enabled_profiles.through.objects.filter(Q(organization_id=organization))
    # "The org's list, if it has one" in the same query as the profiles themselves.
    return profiles.filter(Exists(chosen.filter(modelprofile_id=OuterRef("pk"))) | ~Exists(chosen))


def served_by_emulator(profile: ModelProfile) -> bool:
    return profile.provider == ModelProfile.Provider.OPENAI and is_demo_mode()


def is_retired(profile: ModelProfile) -> bool:
    # The offline demo model keeps serving a profile after its provider shut it down.
    return profile.is_retired() and not served_by_emulator(profile)


def default_profile(organization: Organization,
                    enabled: Sequence[ModelProfile] | None = None) -> ModelProfile | None:
    """The org's default; else what the environment names (CHAT_MODEL, the Azure
    deployment); else a profile an admin added; else the newest catalog model the OpenAI
    key lists; else the first enabled profile. Retired ones are passed over so a new chat
    starts on a model that still answers. ``enabled`` is the org's enabled profiles when
    the caller has them already. Later candidates are only looked up (and the catalog
    synced) when the earlier ones do not answer."""
    from llm.catalog.sync import ensure_synced, environment_profile, newest_listed_profile

    ensure_synced()  # before the profiles are read: the first sync may create them
    profiles = list(enabled_profiles(organization)) if enabled is None else list(enabled)
    by_pk = {profile.pk: profile for profile in profiles}

    def candidates() -> Iterator[ModelProfile | None]:
        yield by_pk.get(organization.default_profile_id or 0)
        named = environment_profile(among=profiles)
        yield by_pk.get(named.pk) if named is not None else None
        yield from (p for p in profiles if p.origin == ModelProfile.Origin.ADMIN)
        newest = newest_listed_profile() if settings.OPENAI_API_KEY else None
        yield by_pk.get(newest.pk) if newest is not None else None
        yield from profiles

    first = None
    for profile in candidates():
        if profile is None:
            continue
        if not is_retired(profile):
            return profile
        first = first or profile
    return first


def usable_profile(organization: Organization, name: str | None) -> ModelProfile:
    """The profile for a new turn, or a refusal that says what to use instead. One query
    (the org's enabled profiles) unless the name is unknown or the default must be looked
    up beyond them."""
    from llm.catalog.sync import ensure_synced

    ensure_synced()  # before the profiles are read: the first sync may create them
    profiles = list(enabled_profiles(organization))
    if name:
        profile = next((p for p in profiles if p.name == name), None)
    else:
        profile = default_profile(organization, profiles)
    if profile is None and name:
        discovered = ModelProfile.objects.filter(
            name=name, origin=ModelProfile.Origin.DISCOVERED
        ).first()
        if discovered is not None:
            raise Refused(
                "model_unavailable",
                f"{discovered.display_name} was found at the provider but has no prices yet, "
                "so its cost could not be counted against budgets. Ask an admin to set its "
                "prices in the admin (Model profiles), or pick another model.",
            )
        raise Refused(
            "model_unavailable",
            f"The model profile {name!r} is not enabled for your organization. Pick another model.",
        )
    if profile is None:
        raise Refused(
            "model_unavailable",
            "No model is enabled for your organization. Ask an admin to enable a model profile.",
        )
    if is_retired(profile):
        # The model a new conversation would get (an admin's or the org's choice first).
        instead = default_profile(organization, profiles) if name else None
        advice = (
            f"Use {instead.display_name} instead." if instead is not None and not is_retired(instead)
            else "Ask an admin to add its successor as a model profile."
        )
        raise Refused(
            "model_unavailable",
            f"{profile.display_name} was retired by its provider on "
            f"{profile.shutdown_date:%d %b %Y}. {advice}",
        )
    return profile


def refresh_shutdown_dates() -> list[str]:
    """Record shutdown dates the providers announce; returns the profiles that changed."""
    from llm.client import listed_shutdown_date
    from llm.types import LLMError

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
    from llm.catalog.sync import azure_pricing_warning

    return [w for w in (shutdown_warning(profile), azure_pricing_warning(profile)) if w]


def stop_reasoning_summaries(profile: ModelProfile) -> None:
    """Remember that the provider refuses this profile's reasoning summaries; an admin turns
    them back on (e.g. once the OpenAI org is verified)."""
    # Every answer starting at that moment meets the same refusal: the conditional update
    # writes the row once, and touches no other field an admin may be saving.
    ModelProfile.objects.filter(pk=profile.pk, reasoning_summaries=True).update(
        reasoning_summaries=False
    )
    profile.reasoning_summaries = False
