"""The gpt-6.x price card as catalog data (llm/catalog/openai.json), written into
the profiles by sync_models and shown in the admin. Figures: shared/reference/
todays-models.md §1."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from django.core.exceptions import ValidationError
from django.test import Client

from accounts.models import User
from llm.catalog import load_catalog
from llm.catalog.sync import sync_catalog
from llm.models import ModelProfile

# todays-models.md §1, "cache writes (30 min)": None where the table says "?".
CACHE_WRITES = {
    "gpt-6.2-sol": Decimal("2.50"), "gpt-6.2-astra": None, "gpt-6.1-sol": Decimal("2.50"),
    "gpt-6.1-terra": Decimal("1.25"), "gpt-6-sol": Decimal("2.50"),
    "gpt-6-luna": Decimal("0.125"), "gpt-6-astra": Decimal("12.50"),
}
CATALOG = Path(__file__).resolve().parents[2] / "llm" / "catalog" / "openai.json"


def test_every_gpt_6_entry_carries_the_published_price_card() -> None:
    entries = {e.model: e for e in load_catalog("openai") if e.model.startswith("gpt-6")}

    assert set(entries) == set(CACHE_WRITES)
    for model, entry in entries.items():
        assert entry.cache_write_price == CACHE_WRITES[model], model
        assert entry.long_context_threshold == 272_000, model
        assert (entry.long_context_input_multiplier, entry.long_context_output_multiplier) == (
            Decimal(2), Decimal("1.5")), model
        assert entry.tier_multipliers == {"batch": Decimal("0.5"), "flex": Decimal("0.5"),
                                          "priority": Decimal(2), "ultrafast": Decimal(3)}, model
        flex = entry.tier_prices["flex"]
        assert Decimal(flex["input"]) == entry.input_price / 2, model
        assert Decimal(flex["output"]) == entry.output_price / 2, model
        assert "priority" not in entry.tier_prices and "ultrafast" not in entry.tier_prices
    assert entries["gpt-6.2-sol"].long_cache_write_price == Decimal(5)
    assert Decimal(entries["gpt-6.2-sol"].tier_prices["flex"]["cache_write"]) == Decimal("1.25")


def test_the_unknown_astra_cache_write_price_is_empty_and_said_so() -> None:
    data = json.loads(CATALOG.read_text(encoding="utf-8"))
    [astra] = [m for m in data["models"] if m["model"] == "gpt-6.2-astra"]

    assert astra["prices"]["cache_write"] is None
    assert any("gpt-6.2-astra's cache-write price is unknown" in note for note in data["unconfirmed"])
    assert "price_card" in data["sources"]


def test_older_models_have_no_price_card() -> None:
    [o3] = [e for e in load_catalog("openai") if e.model == "o3"]

    assert o3.cache_write_price is None and o3.long_context_threshold is None


@pytest.mark.django_db
def test_sync_writes_the_price_card_into_the_profile_fields(emulator: Any, settings: Any) -> None:
    settings.OPENAI_API_KEY = ""
    sync_catalog(listing=None)
    sol = ModelProfile.objects.get(catalog_key="openai:gpt-6.2-sol")
    astra = ModelProfile.objects.get(catalog_key="openai:gpt-6.2-astra")

    assert (sol.cache_write_price, sol.long_cache_write_price) == (Decimal("2.5"), Decimal(5))
    assert sol.long_context_threshold == 272_000
    assert (sol.long_context_input_multiplier, sol.long_context_output_multiplier) == (
        Decimal(2), Decimal("1.5"))
    assert sol.tier_prices["flex"] == {"input": "1", "cached_input": "0.05", "output": "5",
                                       "cache_write": "1.25", "long_cache_write": "2.5"}
    assert astra.cache_write_price is None and astra.long_context_threshold == 272_000


@pytest.mark.django_db
def test_a_profile_synced_before_the_price_card_gets_it_and_an_admins_price_stays(
    emulator: Any, settings: Any
) -> None:
    settings.OPENAI_API_KEY = ""
    sync_catalog(listing=None)
    card = ["cache_write_price", "long_cache_write_price", "long_context_threshold",
            "long_context_input_multiplier", "long_context_output_multiplier"]
    for key in ("openai:gpt-6-sol", "openai:gpt-6.1-sol"):
        profile = ModelProfile.objects.get(catalog_key=key)
        # As the profile was before the price card: its fields at their defaults, unrecorded.
        recorded = {k: v for k, v in profile.catalog_values.items() if k not in card}
        ModelProfile.objects.filter(pk=profile.pk).update(
            catalog_values=recorded, cache_write_price=None, long_cache_write_price=None,
            long_context_threshold=None, long_context_input_multiplier=1,
            long_context_output_multiplier=1)
    ModelProfile.objects.filter(catalog_key="openai:gpt-6.1-sol").update(
        cache_write_price=Decimal("3"))  # an admin's own price

    report = sync_catalog(listing=None)

    filled = ModelProfile.objects.get(catalog_key="openai:gpt-6-sol")
    assert (filled.cache_write_price, filled.long_context_threshold) == (Decimal("2.5"), 272_000)
    assert filled.long_context_output_multiplier == Decimal("1.5")
    kept = ModelProfile.objects.get(catalog_key="openai:gpt-6.1-sol")
    assert kept.cache_write_price == Decimal(3) and kept.long_context_threshold == 272_000
    assert "cache_write_price" in report.kept["gpt-6-1-sol"]


@pytest.mark.django_db
def test_the_admin_shows_and_saves_the_price_card(emulator: Any, settings: Any) -> None:
    settings.OPENAI_API_KEY = ""
    sync_catalog(listing=None)
    profile = ModelProfile.objects.get(catalog_key="openai:gpt-6.2-sol")
    admin = Client()
    admin.force_login(User.objects.create_superuser(email="root@example.com", password="x"))
    url = f"/admin/llm/modelprofile/{profile.pk}/change/"

    form = admin.get(url).context["adminform"].form
    assert form["cache_write_price"].value() == Decimal("2.5000")
    assert form["long_context_threshold"].value() == 272_000
    data = {name: form[name].value() for name in form.fields if form[name].value() is not None}
    for name in ("accepted_params", "reasoning_efforts", "max_completion_tokens_by_effort",
                 "tier_prices"):
        data[name] = json.dumps(form[name].value()) if not isinstance(
            form[name].value(), str) else form[name].value()
    data.update(cache_write_price="2.75", long_context_threshold="300000")
    saved = admin.post(url, data)

    assert saved.status_code == 302, saved.content.decode()[:2000]
    profile.refresh_from_db()
    assert (profile.cache_write_price, profile.long_context_threshold) == (Decimal("2.75"), 300_000)


@pytest.mark.django_db
def test_a_tier_cache_write_price_above_the_standard_one_is_refused(
    emulator: Any, settings: Any
) -> None:
    settings.OPENAI_API_KEY = ""
    sync_catalog(listing=None)
    profile = ModelProfile.objects.get(catalog_key="openai:gpt-6.2-sol")
    profile.tier_prices = {"flex": {"input": "1", "cached_input": "0.05", "output": "5",
                                    "cache_write": "3"}}

    with pytest.raises(ValidationError, match="must not exceed"):
        profile.clean()
