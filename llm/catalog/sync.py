"""Model profiles from the catalog, the provider's listing and the environment.

``sync_catalog`` creates and updates profiles from the catalog without undoing an admin's
edit: each profile keeps, in ``catalog_values``, what the catalog last wrote to it, and a
field is updated only while it still holds that value. ``record_listing`` stores what the
provider's ``GET /v1/models`` lists; ids the catalog does not know become "discovered"
profiles that no turn may use until an admin sets their prices. ``environment_profile``
is the zero-admin-step default: the Azure deployment the environment names, or the
newest catalog model that is not retired and that the OpenAI key lists.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import logging
import time
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.core.cache import cache
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone
from django.utils.text import slugify

from llm.catalog import (
    MONEY_FIELDS,
    CatalogEntry,
    find_entry,
    load_catalog,
    newest_first,
    same_value,
)
from llm.client import is_demo_mode, list_models
from llm.models import ModelProfile
from llm.types import LLMError

logger = logging.getLogger(__name__)

# The model the offline demo answers with unless CHAT_MODEL names another: the emulator's
# own default (a contract test, tests/llm/test_emulator_contract.py, checks the two agree).
DEMO_MODEL = "o3-mini"

SYNC_CACHE_SECONDS = 6 * 3600
# A failed listing (bad key, network) is retried soon, not on every page load.
FAILED_SYNC_CACHE_SECONDS = 60

# What an Azure deployment's profile holds until AZURE_OPENAI_MODEL names its model: only
# parameters every current deployment accepts, and no prices (admins are warned).
UNKNOWN_DEPLOYMENT_VALUES: dict[str, Any] = {
    "api_style": "chat",
    "instruction_role": "developer",
    "accepted_params": ["max_completion_tokens"],
    "reasoning_efforts": [],
    "default_effort": "",
    "context_window": 128_000,
    "max_output_tokens": 16_384,
    "max_completion_tokens": 16_384,
    "max_completion_tokens_by_effort": {},
    "input_price": "0",
    "cached_input_price": "0",
    "output_price": "0",
    "shutdown_date": None,
    "successor": "",
    "chat_tools_need_effort_none": False,
}


@dataclasses.dataclass
class SyncReport:
    created: list[str] = dataclasses.field(default_factory=list)
    updated: dict[str, list[str]] = dataclasses.field(default_factory=dict)
    # Fields left alone because an admin changed them since the catalog wrote them.
    kept: dict[str, list[str]] = dataclasses.field(default_factory=dict)
    skipped: dict[str, str] = dataclasses.field(default_factory=dict)
    listed: list[str] = dataclasses.field(default_factory=list)
    discovered: list[str] = dataclasses.field(default_factory=list)
    listing_error: str = ""


def _python_value(name: str, value: Any) -> Any:
    if value is None:
        return None
    if name in MONEY_FIELDS:
        return Decimal(value)
    if name == "shutdown_date":
        return dt.date.fromisoformat(value)
    return value


# The price card's fields (added after profiles were first synced) and their defaults:
# a profile still holding the default has not been priced by an admin.
PRICE_CARD_DEFAULTS: dict[str, Any] = {
    "cache_write_price": None, "long_cache_write_price": None, "long_context_threshold": None,
    "long_context_input_multiplier": "1", "long_context_output_multiplier": "1",
}


def _price_card_default(name: str, current: Any) -> bool:
    return name in PRICE_CARD_DEFAULTS and same_value(name, current, PRICE_CARD_DEFAULTS[name])


def merge_values(profile: ModelProfile, values: dict[str, Any]) -> tuple[list[str], list[str]]:
    """Set each catalog value on ``profile`` (in memory) unless an admin owns the field.

    A field is the catalog's while its current value equals what the catalog last wrote
    (``catalog_values``), or, never written before, already equals the new value.
    Returns (changed fields, fields kept because an admin edited them)."""
    recorded = dict(profile.catalog_values or {})
    changed: list[str] = []
    kept: list[str] = []
    for name, new in values.items():
        current = getattr(profile, name)
        # A field the catalog never wrote that is still empty (a field added after the
        # profile was synced, such as tier_prices) is the catalog's to fill; so is a flag
        # still at its default (chat_tools_need_effort_none).
        unset = name not in recorded and (current in ({}, [], "") or current is False)
        # So is a price-card field still at its default (a model's cache-write price).
        unset = unset or (name not in recorded and _price_card_default(name, current))
        ours = unset or (
            same_value(name, current, recorded[name]) if name in recorded
            else same_value(name, current, new)
        )
        if not ours:
            kept.append(name)
            continue
        recorded[name] = new
        if not same_value(name, current, new):
            setattr(profile, name, _python_value(name, new))
            changed.append(name)
    profile.catalog_values = recorded
    return changed, kept


def _write(
    *, name: str, values: dict[str, Any], fixed: dict[str, Any], report: SyncReport
) -> ModelProfile | None:
    """Create the profile ``name`` or merge ``values`` into it. ``fixed`` are the fields
    that tie a profile to its catalog entry (provider, origin, catalog_key); a profile with
    the same name but another entry is an admin's and is left alone."""
    defaults = {key: _python_value(key, value) for key, value in values.items()}
    profile, created = ModelProfile.objects.get_or_create(
        name=name, defaults={**defaults, **fixed, "catalog_values": values}
    )
    if created:
        report.created.append(name)
        return profile
    with transaction.atomic():
        # Two syncs at once (a page's first use and the command) would both read the old
        # catalog_values and the later write could record a value it did not set.
        profile = ModelProfile.objects.select_for_update().get(pk=profile.pk)
        # The environment's Azure profile may change catalog entry (AZURE_OPENAI_MODEL).
        same_entry = profile.catalog_key == fixed["catalog_key"] or (
            fixed["origin"] == ModelProfile.Origin.ENVIRONMENT == profile.origin
        )
        if not same_entry or profile.provider != fixed["provider"]:
            report.skipped[name] = "the name belongs to a profile the catalog did not create"
            return None
        changed, kept = merge_values(profile, values)
        if kept:
            report.kept[name] = kept
        try:
            profile.clean()
        except ValidationError as exc:
            report.skipped[name] = "; ".join(exc.messages)
            return None
        extra = [key for key in ("origin", "catalog_key") if getattr(profile, key) != fixed[key]]
        for key in extra:
            setattr(profile, key, fixed[key])
        profile.save(update_fields=[*changed, *extra, "catalog_values"])
    if changed:
        report.updated[name] = changed
    return profile


def sync_catalog(*, listing: list[dict[str, Any]] | None, report: SyncReport | None = None) -> SyncReport:
    """Create and update the OpenAI catalog's profiles. With a listing, a catalog profile
    is active only while the key lists its model (an admin's choice of is_active stays)."""
    report = report or SyncReport()
    listed_ids = {item["id"] for item in listing} if listing is not None else None
    for entry in load_catalog("openai"):
        values = entry.profile_values()
        if listed_ids is not None:
            values["is_active"] = bool(listed_ids & set(entry.model_ids))
        _write(
            name=entry.name,
            values=values,
            fixed={"provider": ModelProfile.Provider.OPENAI, "origin": ModelProfile.Origin.CATALOG,
                   "catalog_key": entry.key},
            report=report,
        )
    if listing is not None:
        record_listing(listing, report=report)
    return report


def ensure_catalog_profile(key: str) -> ModelProfile | None:
    """The OpenAI catalog profile for ``key`` (``openai:<model>``), created from the catalog
    if no sync has written it yet; None for a key the OpenAI catalog does not hold (an
    Azure model needs a deployment, which only the environment or an admin names)."""
    entry = next((e for e in load_catalog("openai") if e.key == key), None)
    if entry is None:
        return None
    existing = ModelProfile.objects.filter(catalog_key=key, provider=ModelProfile.Provider.OPENAI)
    found = existing.order_by("pk").first()
    if found is not None:
        return found
    return _write(
        name=entry.name,
        values=entry.profile_values(),
        fixed={"provider": ModelProfile.Provider.OPENAI, "origin": ModelProfile.Origin.CATALOG,
               "catalog_key": entry.key},
        report=SyncReport(),
    )


def _discovered_name(model_id: str) -> str:
    return slugify(model_id.replace(".", "-"))[:80] or "model"


def record_listing(listing: list[dict[str, Any]], *, report: SyncReport) -> None:
    """Mark which OpenAI profiles the key lists, and add a "discovered" profile for each
    listed id that neither the catalog nor an existing profile covers."""
    now = timezone.now()
    ids = {item["id"] for item in listing}
    covered: set[str] = set()
    for entry in load_catalog("openai"):
        if ids & set(entry.model_ids):
            covered.update(entry.model_ids)
            report.listed.append(entry.name)
    openai_profiles = ModelProfile.objects.filter(provider=ModelProfile.Provider.OPENAI)
    openai_profiles.filter(model__in=ids | covered).update(listed_at=now)
    openai_profiles.exclude(model__in=ids | covered).update(listed_at=None)
    known = set(openai_profiles.values_list("model", flat=True))
    for item in sorted(listing, key=lambda i: i["id"]):
        model_id = item["id"]
        if model_id in covered or model_id in known:
            continue
        _, created = ModelProfile.objects.get_or_create(
            name=_discovered_name(model_id),
            defaults={
                **{key: _python_value(key, value) for key, value in UNKNOWN_DEPLOYMENT_VALUES.items()},
                "display_name": model_id,
                "model": model_id,
                "provider": ModelProfile.Provider.OPENAI,
                "origin": ModelProfile.Origin.DISCOVERED,
                "shutdown_date": item.get("shutdown_date"),
                "listed_at": now,
            },
        )
        if created:
            report.discovered.append(model_id)


def fetch_listing() -> list[dict[str, Any]]:
    """The OpenAI key's (or the demo model's) ``GET /v1/models``; raises LLMError."""
    probe = ModelProfile(name="listing", display_name="OpenAI", provider=ModelProfile.Provider.OPENAI,
                         model="")
    return list_models(probe)


def sync_models(*, with_listing: bool = True) -> SyncReport:
    """What ``manage.py sync_models`` does: the catalog, the provider's listing, and the
    Azure deployment named by the environment."""
    report = SyncReport()
    listing = None
    if with_listing:
        try:
            listing = fetch_listing()
        except LLMError as exc:
            report.listing_error = exc.detail
    sync_catalog(listing=listing, report=report)
    ensure_azure_profile(report=report)
    return report


# --- the environment's default ---------------------------------------------------------

def azure_configured() -> bool:
    return bool(settings.AZURE_OPENAI_ENDPOINT and settings.AZURE_OPENAI_DEPLOYMENT)


def azure_model_entry() -> CatalogEntry | None:
    return find_entry("azure", settings.AZURE_OPENAI_MODEL) if settings.AZURE_OPENAI_MODEL else None


def ensure_azure_profile(*, report: SyncReport | None = None) -> ModelProfile | None:
    """The profile for AZURE_OPENAI_DEPLOYMENT, created or updated from the environment and
    priced from the catalog entry AZURE_OPENAI_MODEL names."""
    if not azure_configured():
        return None
    report = report or SyncReport()
    deployment = settings.AZURE_OPENAI_DEPLOYMENT
    entry = azure_model_entry()
    version = settings.AZURE_OPENAI_API_VERSION
    values: dict[str, Any] = {
        **(entry.profile_values() if entry else UNKNOWN_DEPLOYMENT_VALUES),
        "model": deployment,
        "display_name": f"{entry.display_name.removesuffix(' (Azure)')} · {deployment}" if entry
        else f"Azure · {deployment}",
        # "v1" (or empty) selects Azure's v1 GA path, which takes no api-version.
        "api_version": "" if version in ("", "v1") else version,
        "endpoint": "",
    }
    return _write(
        name=f"azure-{slugify(deployment.replace('.', '-'))}"[:80],
        values=values,
        fixed={"provider": ModelProfile.Provider.AZURE, "origin": ModelProfile.Origin.ENVIRONMENT,
               "catalog_key": entry.key if entry else ""},
        report=report,
    )


def azure_pricing_warning(profile: ModelProfile) -> str:
    """Words for admins when the environment's Azure deployment has no prices."""
    if profile.origin != ModelProfile.Origin.ENVIRONMENT or profile.catalog_key:
        return ""
    if profile.input_price or profile.output_price:
        return ""  # an admin priced it by hand
    named = settings.AZURE_OPENAI_MODEL
    problem = (f"AZURE_OPENAI_MODEL={named!r} is not a model in the catalog" if named
               else "AZURE_OPENAI_MODEL is not set")
    return (f"The Azure deployment {profile.model!r} answers, but {problem}, so its answers are "
            "counted as $0 and budgets do not limit them. Set AZURE_OPENAI_MODEL to the model "
            f"behind the deployment (for example gpt-5-4) or set {profile.display_name}'s prices "
            "in the admin.")


def _sync_key() -> str:
    # Settings that change what a sync would write (tests and restarts change them).
    facts = "|".join(str(x) for x in (
        settings.OPENAI_BASE_URL, hashlib.sha256(settings.OPENAI_API_KEY.encode()).hexdigest()[:12],
        settings.AZURE_OPENAI_ENDPOINT, settings.AZURE_OPENAI_DEPLOYMENT,
        settings.AZURE_OPENAI_MODEL, settings.AZURE_OPENAI_API_VERSION, settings.EMULATOR_URL,
    ))
    return "catalog-sync:" + hashlib.sha256(facts.encode()).hexdigest()[:24]


# A process that saw the shared "synced" mark trusts it this long without asking the
# cache again: every turn and page checks it, and each check was a Redis round trip.
LOCAL_TRUST_SECONDS = 60.0
_trusted_until: dict[str, float] = {}


def forget_sync() -> None:
    """Make the next use sync again (after the settings or the database changed under a
    running process, as in tests)."""
    _trusted_until.clear()
    cache.delete(_sync_key())


def ensure_synced() -> None:
    """Sync once per settings and cache period, on first use (a page or a turn)."""
    key = _sync_key()
    if _trusted_until.get(key, 0.0) > time.monotonic():
        return
    if cache.get(key):
        _trusted_until[key] = time.monotonic() + LOCAL_TRUST_SECONDS
        return
    if azure_configured():
        ensure_azure_profile()
    ok = True
    if settings.OPENAI_API_KEY and not is_demo_mode():
        report = sync_models(with_listing=True)
        ok = not report.listing_error
        if report.listing_error:
            logger.warning("Could not list the provider's models: %s", report.listing_error)
    cache.set(key, True, SYNC_CACHE_SECONDS if ok else FAILED_SYNC_CACHE_SECONDS)


def _named_profile(name: str, among: Sequence[ModelProfile] | None = None) -> ModelProfile | None:
    """The profile ``name`` means: a profile name, a catalog name, or a model id. With
    ``among`` (profiles already loaded) it is looked up there, without a query."""
    entry = find_entry("openai", name)
    if among is not None:
        for matches in (lambda p: p.name == name,
                        lambda p: entry is not None and p.catalog_key == entry.key,
                        lambda p: p.model == name):
            found = [p for p in among if matches(p)]
            if found:
                return min(found, key=lambda p: p.pk)
        return None
    by_name = ModelProfile.objects.filter(name=name).first()
    if by_name is not None:
        return by_name
    if entry is not None:
        return ModelProfile.objects.filter(catalog_key=entry.key).first()
    return ModelProfile.objects.filter(model=name).order_by("pk").first()


def environment_profile(among: Sequence[ModelProfile] | None = None) -> ModelProfile | None:
    """The default the environment asks for, or None to fall back on the admins' profiles.
    With ``among`` only those (already loaded) profiles are considered, without a query.

    CHAT_MODEL (a profile name, catalog name or model id) wins; then the Azure deployment
    of AZURE_OPENAI_DEPLOYMENT. Syncs the catalog on first use, so that
    ``newest_listed_profile`` (the choice after the admins' own profiles) has data."""
    if is_demo_mode():
        # The offline demo serves its own default model unless CHAT_MODEL names another.
        return _named_profile(settings.CHAT_MODEL or DEMO_MODEL, among)
    ensure_synced()
    if settings.CHAT_MODEL:
        named = _named_profile(settings.CHAT_MODEL, among)
        if named is not None:
            return named
    if azure_configured():
        if among is not None:
            return next((p for p in among if p.origin == ModelProfile.Origin.ENVIRONMENT
                         and p.provider == ModelProfile.Provider.AZURE
                         and p.model == settings.AZURE_OPENAI_DEPLOYMENT), None)
        return ModelProfile.objects.filter(
            origin=ModelProfile.Origin.ENVIRONMENT, provider=ModelProfile.Provider.AZURE,
            model=settings.AZURE_OPENAI_DEPLOYMENT,
        ).first()
    return None


def newest_listed_profile() -> ModelProfile | None:
    today = timezone.localdate()
    by_key = {
        p.catalog_key: p
        for p in ModelProfile.objects.filter(origin=ModelProfile.Origin.CATALOG, is_active=True,
                                             provider=ModelProfile.Provider.OPENAI)
    }
    entries = [e for e in load_catalog("openai") if e.key in by_key]
    for entry in newest_first(entries):
        profile = by_key[entry.key]
        if profile.listed_at is not None and not profile.is_retired(today):
            return profile
    return None
