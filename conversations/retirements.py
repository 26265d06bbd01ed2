"""Models shutting down: admins are warned ahead, then their orgs move to the successor.

A profile's ``shutdown_date`` and ``successor`` (a catalog key such as
``openai:gpt-6-sol``) come from the catalog through ``sync_models``, or from an admin.
Fourteen days before the shutdown the org's admins see a banner naming both models; on
the day before it, ``move_orgs_off_retiring_models`` (daily, from Celery beat and from
``manage.py move_off_retiring_models``) makes the successor each affected org's default.

Why the day before: the org keeps the model its admins chose for as long as the provider
serves it, and a daily job that runs at any hour, in any org's time zone, still moves
everyone before a provider that switches the model off early on its shutdown day.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass

from django.db import transaction
from django.utils import timezone

from accounts.models import Organization
from billing.alerts import admin_ids, notify
from llm.catalog import FAMILIES, load_catalog
from llm.catalog.sync import ensure_catalog_profile
from llm.models import ModelProfile

logger = logging.getLogger(__name__)

# Admins see the coming move this many days before the shutdown date.
NOTICE_DAYS = 14
# Orgs move this many days before the shutdown date (see the module's docstring).
MOVE_DAYS_BEFORE = 1


def move_date(shutdown: dt.date) -> dt.date:
    return shutdown - dt.timedelta(days=MOVE_DAYS_BEFORE)


def _day(date: dt.date, *, year: bool = True) -> str:
    return f"{date.day} {date:%b %Y}" if year else f"{date.day} {date:%b}"


def successor_name(profile: ModelProfile) -> str:
    """What the catalog calls the profile's successor (its model id when no entry matches)."""
    for family in FAMILIES:
        for entry in load_catalog(family):
            if entry.key == profile.successor:
                return entry.display_name
    return profile.successor.partition(":")[2] or profile.successor


def successor_profile(profile: ModelProfile, *, today: dt.date,
                      create: bool = False) -> ModelProfile | None:
    """The profile an org on ``profile`` moves to: same provider, following the successor's
    catalog entry, active, priced and still served after ``profile`` shuts down. With
    ``create``, an OpenAI successor no sync has written yet is created from the catalog;
    an Azure one needs a deployment, which only the environment or an admin can name."""
    if not profile.successor or profile.shutdown_date is None:
        return None
    candidates = (ModelProfile.objects.filter(catalog_key=profile.successor, provider=profile.provider,
                                              is_active=True)
                  .exclude(origin=ModelProfile.Origin.DISCOVERED).exclude(pk=profile.pk).order_by("pk"))
    found = candidates.first()
    if found is None and create and profile.provider == ModelProfile.Provider.OPENAI:
        ensure_catalog_profile(profile.successor)
        found = candidates.first()  # an existing but inactive profile is still no successor
    if found is not None and found.is_retired(max(today, profile.shutdown_date)):
        return None
    return found


@dataclass(frozen=True)
class RetirementNotice:
    """What an org's admins are told before its default model shuts down."""

    profile: ModelProfile
    # What the org moves to ("" when the profile names no successor), and whether the
    # move will happen: False when the successor has no usable profile here.
    successor_name: str
    will_move: bool
    today: dt.date

    @property
    def shutdown_date(self) -> dt.date:
        assert self.profile.shutdown_date is not None
        return self.profile.shutdown_date

    @property
    def move_on(self) -> dt.date:
        return move_date(self.shutdown_date)

    @property
    def text(self) -> str:
        first = f"{self.profile.display_name} shuts down on {_day(self.shutdown_date)}."
        if self.will_move:
            when = "today" if self.move_on <= self.today else f"on {_day(self.move_on, year=False)}"
            return f"{first} Your org's default model moves to {self.successor_name} {when}."
        if self.successor_name:
            return (f"{first} Its successor {self.successor_name} is not set up here: add it as a "
                    "model profile, or pick another default model for your org, before then.")
        return f"{first} Pick another default model for your org before then."


def retirement_notice(organization: Organization, *,
                      today: dt.date | None = None) -> RetirementNotice | None:
    """The notice for the org's default model, from ``NOTICE_DAYS`` before its shutdown
    until the move; None when the default is not shutting down soon. One query when it
    is not (the default profile), two or three when it is."""
    today = today or timezone.localdate()
    if organization.default_profile_id is None:
        return None
    soon = today + dt.timedelta(days=NOTICE_DAYS)
    profile = ModelProfile.objects.filter(
        pk=organization.default_profile_id, shutdown_date__gte=today, shutdown_date__lte=soon
    ).first()
    if profile is None:
        return None
    if not profile.successor:
        return RetirementNotice(profile=profile, successor_name="", will_move=False, today=today)
    found = successor_profile(profile, today=today)
    if found is not None:
        return RetirementNotice(profile=profile, successor_name=found.display_name, will_move=True,
                                today=today)
    # No profile yet: the move creates an OpenAI catalog model's (one an admin switched
    # off stays off).
    creatable = (profile.provider == ModelProfile.Provider.OPENAI
                 and any(e.key == profile.successor for e in load_catalog("openai"))
                 and not ModelProfile.objects.filter(catalog_key=profile.successor,
                                                     provider=profile.provider).exists())
    return RetirementNotice(profile=profile, successor_name=successor_name(profile),
                            will_move=creatable, today=today)


@dataclass(frozen=True)
class Move:
    organization_id: int
    old: str
    new: str | None  # None: no usable successor, the org was left on the old model


def move_orgs_off_retiring_models(*, today: dt.date | None = None) -> list[Move]:
    """From the day before a model's shutdown on, make its successor the default of every
    org whose default it is, and tell each org's admins. Orgs on a model that is not
    shutting down are not touched; a second run finds nothing left to move."""
    today = today or timezone.localdate()
    retiring = ModelProfile.objects.filter(
        shutdown_date__lte=today + dt.timedelta(days=MOVE_DAYS_BEFORE),
        pk__in=Organization.objects.filter(default_profile__isnull=False).values("default_profile"),
    ).order_by("pk")
    moves = []
    for profile in retiring:
        successor = successor_profile(profile, today=today, create=True)
        org_ids = list(Organization.objects.filter(default_profile=profile).order_by("pk")
                       .values_list("pk", flat=True))
        for org_id in org_ids:
            if successor is None:
                logger.warning("org %s stays on %s (shuts down %s): no usable successor profile",
                               org_id, profile.name, profile.shutdown_date)
                moves.append(Move(org_id, profile.name, None))
            elif move_org(organization_id=org_id, old=profile, new=successor):
                moves.append(Move(org_id, profile.name, successor.name))
    return moves


def move_org(*, organization_id: int, old: ModelProfile, new: ModelProfile) -> bool:
    """Move one org's default from ``old`` to ``new`` in its own transaction; False when its
    default is no longer ``old``."""
    assert old.shutdown_date is not None
    with transaction.atomic():
        # An admin may choose another default at the same moment: the row is locked and
        # moved only while it is still on the old model, so their choice is never undone.
        organization = (Organization.objects.select_for_update()
                        .filter(pk=organization_id, default_profile=old).first())
        if organization is None:
            return False
        organization.default_profile = new
        organization.save(update_fields=["default_profile"])
        # An org with its own list of models gets the successor on it; an empty list
        # already means every active model.
        if organization.enabled_profiles.exists():
            organization.enabled_profiles.add(new)
        notify(
            organization_id=organization_id,
            user_ids=admin_ids(organization_id),
            text=(f"{old.display_name} shuts down on {_day(old.shutdown_date)}, so your org's "
                  f"default model is now {new.display_name}."),
            link="/",
        )
    return True
