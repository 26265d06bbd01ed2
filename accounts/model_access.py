"""Which model profiles an organization's people may use, decided from data (never from
model names): the org's enabled list, its groups' lists, its default, and the profile a new
turn gets.

Groups narrow the org's list per person: a profile that no group of the org lists is open
to everyone in the org; once any group lists it, only those groups' members may see or use
it (accounts.groups)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from django.conf import settings
from django.db.models import Exists, OuterRef, Q, QuerySet

from accounts.models import Group, Organization, User
from chatsite.compiled import CompiledSelect
from chatsite.errors import Refused
from llm.catalog.sync import ensure_synced, environment_profile, newest_listed_profile
from llm.models import ModelProfile
from llm.profiles import is_retired, openai_profiles_usable


def enabled_profiles(organization: Organization, *, user: User | None) -> QuerySet[ModelProfile]:
    """Profiles ``user`` may use in the org, by display name: the org's explicit list, or
    every active profile if none, less those its groups keep for other people.
    ``user=None`` is the org as a whole (an admin's view), groups aside. Discovered
    models wait for an admin to price them; OpenAI profiles need an OpenAI key (an
    Azure-only set-up has none). One query."""
    return _enabled_among(ModelProfile.objects.all(), organization.pk,
                          user.pk if user is not None else None).order_by("display_name", "pk")


def _enabled_for_person(organization: int, user: int) -> QuerySet[ModelProfile]:
    return _enabled_among(ModelProfile.objects.all(), organization, user).order_by("display_name", "pk")


# ``enabled_profiles`` for a person, compiled once per process (chatsite.compiled): every
# turn that starts a conversation or changes its model reads it. Its shape: whether
# OpenAI profiles are usable (a filter more or less).
_ENABLED_FOR_PERSON = CompiledSelect(_enabled_for_person, "organization", "user")


def profile_enabled(*, organization_field: str, profile_field: str, user_field: str) -> Exists:
    """Whether the outer row's profile is one its person may use in its org (the rule of
    ``enabled_profiles``), as an expression another query can carry: a follow-up's
    conversation query checks its model this way instead of loading every profile the
    org may use."""
    return Exists(_enabled_among(ModelProfile.objects.filter(pk=OuterRef(profile_field)),
                                 OuterRef(OuterRef(organization_field)),
                                 OuterRef(OuterRef(user_field))))


def _enabled_among(profiles: QuerySet[ModelProfile], organization: int | OuterRef,
                   user: int | OuterRef | None) -> QuerySet[ModelProfile]:
    profiles = profiles.filter(is_active=True).exclude(origin=ModelProfile.Origin.DISCOVERED)
    if not openai_profiles_usable():
        profiles = profiles.exclude(provider=ModelProfile.Provider.OPENAI)
    # Q: the stubs do not know an OuterRef may stand for the id.
    chosen = Organization.enabled_profiles.through.objects.filter(Q(organization_id=organization))
    # "The org's list, if it has one" in the same query as the profiles themselves.
    profiles = profiles.filter(Exists(chosen.filter(modelprofile_id=OuterRef("pk"))) | ~Exists(chosen))
    if user is None:
        return profiles
    # "No group of the org lists it, or one of the person's groups does", still one query.
    listing = Group.profiles.through.objects.filter(
        Q(group__organization_id=organization), modelprofile_id=OuterRef("pk")
    )
    return profiles.filter(~Exists(listing)
                           | Exists(listing.filter(Q(group__memberships__user_id=user))))


def default_profile(organization: Organization,
                    enabled: Sequence[ModelProfile] | None = None, *,
                    user: User | None = None) -> ModelProfile | None:
    """The org's default; else what the environment names (CHAT_MODEL, the Azure
    deployment); else a profile an admin added; else the newest catalog model the OpenAI
    key lists; else the first enabled profile. Retired ones are passed over so a new chat
    starts on a model that still answers, and one ``user`` may use (groups aside when
    None). ``enabled`` is those profiles (``enabled_profiles``) when the caller has them
    already. Later candidates are only looked up (and the catalog
    synced) when the earlier ones do not answer."""
    ensure_synced()  # before the profiles are read: the first sync may create them
    profiles = list(enabled_profiles(organization, user=user)) if enabled is None else list(enabled)
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


def usable_profile(organization: Organization, name: str | None, *, user: User) -> ModelProfile:
    """The profile for ``user``'s new turn, or a refusal that says what to use instead.
    One query (the profiles the person may use) unless the name is unknown or the default
    must be looked up beyond them."""
    ensure_synced()  # before the profiles are read: the first sync may create them
    profiles = _ENABLED_FOR_PERSON.fetch(shape=openai_profiles_usable(),
                                         organization=organization.pk, user=user.pk)
    if name:
        profile = next((p for p in profiles if p.name == name), None)
    else:
        profile = default_profile(organization, profiles)
    if profile is None and name:
        discovered = ModelProfile.objects.filter(
            name=name, origin=ModelProfile.Origin.DISCOVERED
        ).first()
        kept = enabled_profiles(organization, user=None).filter(name=name).first()
        if kept is not None:
            raise Refused(
                "model_unavailable",
                f"{kept.display_name} is kept for some groups of your organization, and you "
                "are in none of them. Pick another model, or ask an admin to add you to a "
                "group that may use it.",
            )
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
