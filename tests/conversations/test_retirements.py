"""Models shutting down: the admins' notice 14 days ahead, and the move to the successor
the day before the shutdown. o3 shuts down on 2026-12-11 (todays-models.md section 4);
its catalog successor is gpt-6-sol. Every date is passed in, never read from the clock."""

from __future__ import annotations

import datetime as dt
import io
from typing import Any

import pytest
from django.conf import settings
from django.core.management import call_command
from django.test import Client
from django.utils import timezone
from django.utils.html import escape

from accounts.models import Organization, User
from billing.models import Notification
from conversations.retirements import (
    Move,
    move_org,
    move_orgs_off_retiring_models,
    retirement_notice,
)
from llm.catalog import find_entry
from llm.catalog.sync import ensure_catalog_profile
from llm.models import ModelProfile

pytestmark = pytest.mark.django_db

SHUTDOWN = dt.date(2026, 12, 11)
MOVE_DAY = dt.date(2026, 12, 10)
NOTICE = (f"o3 shuts down on 11 Dec 2026. Your org's default model moves to "
          f"{find_entry('openai', 'gpt-6-sol').display_name} on 10 Dec.")  # type: ignore[union-attr]


def days_before(days: int) -> dt.date:
    return SHUTDOWN - dt.timedelta(days=days)


def catalog_profile(name: str) -> ModelProfile:
    entry = find_entry("openai", name)
    assert entry is not None
    profile = ensure_catalog_profile(entry.key)
    assert profile is not None
    return profile


def on_default(organization: Organization, profile: ModelProfile) -> Organization:
    organization.default_profile = profile
    organization.save(update_fields=["default_profile"])
    return organization


def org_of(user: User) -> Organization:
    return user.memberships.get().organization


def default_name(organization: Organization) -> str:
    organization.refresh_from_db()
    return organization.default_profile.name if organization.default_profile else ""


@pytest.fixture
def o3_org(org_a: Organization, bob: User) -> Organization:
    """alice's org (bob a member) on o3."""
    return on_default(org_a, catalog_profile("o3"))


def test_fifteen_days_before_the_shutdown_there_is_no_notice_and_no_move(o3_org: Organization) -> None:
    assert retirement_notice(o3_org, today=days_before(15)) is None
    assert move_orgs_off_retiring_models(today=days_before(15)) == []
    assert default_name(o3_org) == "o3"


def test_fourteen_days_before_the_shutdown_admins_are_told_both_models_and_the_day(
    o3_org: Organization,
) -> None:
    notice = retirement_notice(o3_org, today=days_before(14))
    assert notice is not None
    assert notice.text == NOTICE
    # The notice alone moves nothing.
    assert move_orgs_off_retiring_models(today=days_before(2)) == []
    assert default_name(o3_org) == "o3"
    assert Notification.objects.count() == 0


def test_on_the_day_before_the_shutdown_the_default_moves_and_only_admins_are_told(
    alice: User, bob: User, o3_org: Organization,
) -> None:
    moves = move_orgs_off_retiring_models(today=MOVE_DAY)

    assert moves == [Move(o3_org.pk, "o3", "gpt-6-sol")]
    assert default_name(o3_org) == "gpt-6-sol"
    assert o3_org.default_profile is not None
    assert o3_org.default_profile.catalog_key == "openai:gpt-6-sol"
    assert list(o3_org.enabled_profiles.all()) == []  # no list of its own: every model stays
    told = list(Notification.objects.values_list("user__email", "text"))
    assert told == [("alice@example.com",
                     f"o3 shuts down on 11 Dec 2026, so your org's default model is now "
                     f"{o3_org.default_profile.display_name}.")]
    # No notice once the org is on a model that is not shutting down.
    assert retirement_notice(o3_org, today=MOVE_DAY) is None


def test_a_second_run_changes_nothing(alice: User, o3_org: Organization) -> None:
    move_orgs_off_retiring_models(today=MOVE_DAY)
    profiles = ModelProfile.objects.count()

    assert move_orgs_off_retiring_models(today=MOVE_DAY) == []
    assert move_orgs_off_retiring_models(today=SHUTDOWN) == []
    assert default_name(o3_org) == "gpt-6-sol"
    assert Notification.objects.count() == 1
    assert ModelProfile.objects.count() == profiles


def test_an_org_that_missed_the_move_day_still_moves_after_the_shutdown(o3_org: Organization) -> None:
    assert move_orgs_off_retiring_models(today=SHUTDOWN + dt.timedelta(days=3)) == [
        Move(o3_org.pk, "o3", "gpt-6-sol")
    ]


def test_another_org_on_a_model_that_stays_is_untouched_and_its_admin_sees_nothing(
    alice: User, charlie: User, o3_org: Organization,
) -> None:
    other = on_default(org_of(charlie), catalog_profile("gpt-5.4"))
    other.enabled_profiles.add(other.default_profile)  # type: ignore[arg-type]

    assert retirement_notice(other, today=days_before(14)) is None
    moves = move_orgs_off_retiring_models(today=MOVE_DAY)

    assert [move.organization_id for move in moves] == [o3_org.pk]
    assert default_name(other) == "gpt-5-4"
    assert list(other.enabled_profiles.values_list("name", flat=True)) == ["gpt-5-4"]
    assert not Notification.objects.filter(user=charlie).exists()
    assert not Notification.objects.filter(organization=other).exists()


def test_an_org_with_its_own_model_list_gets_the_successor_enabled(o3_org: Organization) -> None:
    o3_org.enabled_profiles.add(o3_org.default_profile)  # type: ignore[arg-type]

    move_orgs_off_retiring_models(today=MOVE_DAY)

    assert sorted(o3_org.enabled_profiles.values_list("name", flat=True)) == ["gpt-6-sol", "o3"]


def test_an_admin_who_chose_another_default_meanwhile_keeps_it(o3_org: Organization) -> None:
    o3 = ModelProfile.objects.get(name="o3")
    on_default(o3_org, catalog_profile("gpt-5.4"))

    assert move_org(organization_id=o3_org.pk, old=o3, new=catalog_profile("gpt-6-sol")) is False
    assert default_name(o3_org) == "gpt-5-4"
    assert Notification.objects.count() == 0


def test_a_successor_an_admin_switched_off_is_not_used_and_the_notice_says_so(
    o3_org: Organization,
) -> None:
    ModelProfile.objects.filter(pk=catalog_profile("gpt-6-sol").pk).update(is_active=False)

    notice = retirement_notice(o3_org, today=days_before(5))
    assert notice is not None and not notice.will_move
    assert "is not set up here" in notice.text
    assert move_orgs_off_retiring_models(today=MOVE_DAY) == [Move(o3_org.pk, "o3", None)]
    assert default_name(o3_org) == "o3"
    assert Notification.objects.count() == 0


def azure_profile(catalog_name: str, deployment: str) -> ModelProfile:
    entry = find_entry("azure", catalog_name)
    assert entry is not None
    values = entry.profile_values()
    values.pop("tier_prices")
    return ModelProfile.objects.create(
        **{**values, "name": f"azure-{deployment}", "model": deployment},
        provider=ModelProfile.Provider.AZURE, origin=ModelProfile.Origin.ENVIRONMENT,
        catalog_key=entry.key,
    )


def test_an_azure_org_moves_only_to_a_deployment_of_the_successor(alice: User, org_a: Organization) -> None:
    on_default(org_a, azure_profile("o3", "team-o3"))
    # The Azure catalog retires o3 earlier (2026-11-19); its successor is gpt-6-sol.
    day = dt.date(2026, 11, 18)

    assert move_orgs_off_retiring_models(today=day) == [Move(org_a.pk, "azure-team-o3", None)]
    assert default_name(org_a) == "azure-team-o3"
    assert not ModelProfile.objects.filter(catalog_key="openai:gpt-6-sol").exists()

    azure_profile("gpt-6-sol", "team-sol")
    assert move_orgs_off_retiring_models(today=day) == [
        Move(org_a.pk, "azure-team-o3", "azure-team-sol")
    ]


def test_a_default_with_no_successor_gets_a_notice_to_pick_another(org_a: Organization) -> None:
    own = ModelProfile.objects.get(name="o3-mini")
    ModelProfile.objects.filter(pk=own.pk).update(shutdown_date=SHUTDOWN, successor="")
    on_default(org_a, own)

    notice = retirement_notice(org_a, today=days_before(3))
    assert notice is not None
    assert notice.text == (f"{own.display_name} shuts down on 11 Dec 2026. Pick another default "
                           "model for your org before then.")


def test_the_command_moves_orgs_and_says_which(o3_org: Organization) -> None:
    out = io.StringIO()
    call_command("move_off_retiring_models", today="2026-12-10", stdout=out)
    assert out.getvalue() == f"Org {o3_org.pk}: o3 -> gpt-6-sol\n"
    out = io.StringIO()
    call_command("move_off_retiring_models", today="2026-12-10", stdout=out)
    assert out.getvalue() == "No org's default model is about to shut down.\n"


def test_beat_runs_the_move_daily() -> None:
    from chatsite.celery import app

    job = settings.CELERY_BEAT_SCHEDULE["move-orgs-off-retiring-models"]
    assert job["schedule"] == 24 * 3600.0
    app.loader.import_default_modules()  # what a worker does at start (autodiscovery)
    assert job["task"] in app.tasks


# --- the notice on pages ---------------------------------------------------------------------


def soon_retiring(org: Organization, *, days: int) -> ModelProfile:
    """A profile shutting down ``days`` after today, on org's default, with a successor."""
    successor = catalog_profile("gpt-6-sol")
    profile = catalog_profile("o3")
    profile.shutdown_date = timezone.localdate() + dt.timedelta(days=days)
    profile.save(update_fields=["shutdown_date"])
    assert profile.successor == successor.catalog_key
    on_default(org, profile)
    return profile


def signed_in(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client


@pytest.mark.parametrize("path", ["/", "/org/", "/org/usage/"])
def test_admins_see_the_notice_on_the_chat_and_org_pages(
    path: str, alice: User, org_a: Organization, emulator: Any
) -> None:
    soon_retiring(org_a, days=10)
    notice = retirement_notice(org_a)
    assert notice is not None and notice.will_move
    assert notice.text.startswith("o3 shuts down on ")
    assert f"moves to {catalog_profile('gpt-6-sol').display_name} on " in notice.text

    page = signed_in(alice).get(path).content.decode()

    assert page.count('data-testid="retirement-notice"') == 1
    assert f'role="status" data-testid="retirement-notice">{escape(notice.text)}</p>' in page


def test_members_and_other_orgs_admins_do_not_see_the_notice(
    alice: User, bob: User, charlie: User, org_a: Organization, emulator: Any
) -> None:
    soon_retiring(org_a, days=10)
    assert "retirement-notice" not in signed_in(bob).get("/").content.decode()
    assert "retirement-notice" not in signed_in(charlie).get("/").content.decode()
    assert "retirement-notice" in signed_in(alice).get("/").content.decode()


def test_no_notice_more_than_fourteen_days_ahead(alice: User, org_a: Organization, emulator: Any) -> None:
    soon_retiring(org_a, days=15)
    assert "retirement-notice" not in signed_in(alice).get("/").content.decode()
