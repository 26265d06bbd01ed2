"""``manage.py sync_models``: profiles from the catalog, admin edits kept, the provider's
listing recorded, unknown models discovered and refused until an admin prices them."""

from __future__ import annotations

import io
from decimal import Decimal
from typing import Any

import pytest
from django.core.management import call_command
from django.test import Client

from accounts.models import User
from answers.replies import start_turn
from chatsite.errors import Refused
from conversations.models import Message
from llm.catalog import load_catalog
from llm.models import ModelProfile

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def offline_demo(settings: Any, emulator: Any) -> None:
    """No key: the listing comes from the emulator, which serves o3-mini, gpt-5.6-sol,
    gpt-5.4, gpt-6-sol, gpt-6.1-sol, gpt-6.2-sol, gpt-6.2-astra and gpt-4.1-mini (the last
    one is in no catalog)."""
    settings.OPENAI_API_KEY = ""
    settings.AZURE_OPENAI_ENDPOINT = ""
    settings.AZURE_OPENAI_DEPLOYMENT = ""


def sync() -> str:
    out = io.StringIO()
    call_command("sync_models", stdout=out, stderr=out)
    return out.getvalue()


def test_it_creates_a_profile_for_every_catalog_model_with_the_catalogs_values(emulator: Any) -> None:
    output = sync()

    for entry in load_catalog("openai"):
        profile = ModelProfile.objects.get(name=entry.name)
        assert profile.origin == ModelProfile.Origin.CATALOG and profile.catalog_key == entry.key
        assert profile.model == entry.model and profile.provider == "openai"
        assert profile.input_price == entry.input_price
        assert profile.cached_input_price == entry.cached_input_price
        assert profile.output_price == entry.output_price
        assert profile.reasoning_efforts == list(entry.reasoning_efforts)
        assert profile.shutdown_date == entry.shutdown_date
    sol = ModelProfile.objects.get(name="gpt-5-6-sol")
    assert (sol.context_window, sol.max_output_tokens, sol.max_completion_tokens) == (922_000, 128_000, 25_000)
    assert sol.catalog_values["input_price"] == "4"
    assert [e["path"] for e in emulator.journal] == ["/v1/models"]
    assert "Discovered (set their prices in the admin to use them): gpt-4.1-mini" in output


def test_the_listing_is_recorded_and_only_listed_models_are_active(emulator: Any) -> None:
    sync()

    listed = set(ModelProfile.objects.filter(listed_at__isnull=False).values_list("name", flat=True))
    assert listed == {
        "o3-mini", "gpt-5-6-sol", "gpt-5-4", "gpt-6-sol", "gpt-6-1-sol", "gpt-6-2-sol", "gpt-6-2-astra",
        "gpt-4-1-mini", "gpt-4-1-mini-2025-04-14",
    }
    assert ModelProfile.objects.get(name="gpt-5-6-sol").is_active
    assert not ModelProfile.objects.get(name="gpt-6-1-terra").is_active  # the key cannot use it
    discovered = ModelProfile.objects.get(name="gpt-4-1-mini")
    assert discovered.origin == ModelProfile.Origin.DISCOVERED
    assert (discovered.input_price, discovered.output_price) == (0, 0)
    assert discovered.catalog_key == "" and discovered.catalog_values == {}


def test_a_second_sync_changes_nothing(emulator: Any) -> None:
    sync()
    before = {p.pk: (p.catalog_values, p.input_price, p.is_active) for p in ModelProfile.objects.all()}

    output = sync()

    after = {p.pk: (p.catalog_values, p.input_price, p.is_active) for p in ModelProfile.objects.all()}
    assert after == before
    assert "Created: none" in output and "Updated" not in output
    assert "Discovered (set their prices in the admin to use them): none" in output


def test_it_updates_what_the_catalog_wrote_and_keeps_what_an_admin_changed(emulator: Any) -> None:
    sync()
    profile = ModelProfile.objects.get(name="gpt-5-6-sol")
    # An older catalog said $3 output and 20,000 tokens; nobody edited those since.
    profile.output_price = Decimal("3")
    profile.max_completion_tokens = 20_000
    profile.catalog_values = {**profile.catalog_values, "output_price": "3", "max_completion_tokens": 20_000}
    # An admin raised the input price and renamed it.
    profile.input_price = Decimal("9.50")
    profile.display_name = "Our house model"
    profile.save()

    output = sync()

    profile.refresh_from_db()
    assert profile.output_price == Decimal("20") and profile.max_completion_tokens == 25_000
    assert profile.input_price == Decimal("9.50") and profile.display_name == "Our house model"
    assert profile.catalog_values["output_price"] == "20"
    assert profile.catalog_values["input_price"] == "4"  # still what the catalog last wrote
    assert "Updated gpt-5-6-sol: max_completion_tokens, output_price" in output
    assert "Kept admin edits on gpt-5-6-sol: display_name, input_price" in output


def test_the_seeded_o3_mini_follows_the_catalog_and_an_admins_own_profile_is_left_alone(
    emulator: Any,
) -> None:
    seeded = ModelProfile.objects.get(name="o3-mini")
    assert seeded.origin == ModelProfile.Origin.CATALOG  # adopted by migration 0007
    ModelProfile.objects.create(
        name="gpt-5-4", display_name="Admin's GPT-5.4", provider="openai", model="gpt-5.4",
        context_window=1000, max_output_tokens=500, max_completion_tokens=100,
        input_price=Decimal("1"), cached_input_price=Decimal("1"), output_price=Decimal("1"),
    )

    output = sync()

    mine = ModelProfile.objects.get(name="gpt-5-4")
    assert (mine.display_name, mine.context_window, mine.input_price) == ("Admin's GPT-5.4", 1000, 1)
    assert mine.origin == ModelProfile.Origin.ADMIN and mine.catalog_values == {}
    assert "Skipped gpt-5-4: the name belongs to a profile the catalog did not create" in output
    seeded.refresh_from_db()
    assert seeded.catalog_key == "openai:o3-mini" and seeded.is_active


def test_a_discovered_model_is_refused_as_a_turn_until_an_admin_sets_its_prices(
    alice: User, emulator: Any
) -> None:
    sync()
    emulator.reset()

    with pytest.raises(Refused) as refused:
        start_turn(user=alice, organization_id=None, conversation_id=None, content="hi",
                   reasoning_effort=None, profile_name="gpt-4-1-mini")

    assert refused.value.code == "model_unavailable"
    assert "has no prices yet" in refused.value.detail and "Ask an admin" in refused.value.detail
    assert not Message.objects.exists() and emulator.journal == []

    admin = Client()
    admin.force_login(User.objects.create_superuser(email="root@example.com", password="x"))
    listing = admin.get("/admin/llm/modelprofile/?origin__exact=discovered")
    assert listing.status_code == 200
    assert b"gpt-4.1-mini" in listing.content and b"GPT-5.6 Sol" not in listing.content

    profile = ModelProfile.objects.get(name="gpt-4-1-mini")
    change = admin.get(f"/admin/llm/modelprofile/{profile.pk}/change/")
    form = change.context["adminform"].form
    data = {name: form[name].value() for name in form.fields if form[name].value() is not None}
    data.update(input_price="0.40", cached_input_price="0.10", output_price="1.60",
                accepted_params='["max_completion_tokens"]', reasoning_efforts="[]",
                max_completion_tokens_by_effort="{}")
    saved = admin.post(f"/admin/llm/modelprofile/{profile.pk}/change/", data)
    assert saved.status_code == 302, saved.content.decode()[:2000]

    profile.refresh_from_db()
    assert profile.origin == ModelProfile.Origin.ADMIN and profile.output_price == Decimal("1.60")
    turn = start_turn(user=alice, organization_id=None, conversation_id=None, content="hi",
                      reasoning_effort=None, profile_name="gpt-4-1-mini")
    assert turn.assistant_message.model_name == "gpt-4.1-mini"


def test_a_failed_listing_still_syncs_the_catalog_and_says_why(settings: Any, emulator: Any) -> None:
    settings.EMULATOR_URL = "http://127.0.0.1:9"  # nothing listens there

    output = sync()

    assert "Could not list the provider's models" in output
    assert ModelProfile.objects.filter(origin=ModelProfile.Origin.CATALOG).count() == len(load_catalog("openai"))
    assert not ModelProfile.objects.filter(origin=ModelProfile.Origin.DISCOVERED).exists()



def test_a_seeded_model_the_key_no_longer_lists_is_switched_off(emulator: Any) -> None:
    emulator.config.retired_models = ["o3-mini"]  # as OpenAI after the shutdown

    sync()

    o3_mini = ModelProfile.objects.get(name="o3-mini")
    assert not o3_mini.is_active and o3_mini.listed_at is None
    assert ModelProfile.objects.get(name="gpt-5-6-sol").is_active


def test_sync_sets_the_chat_tools_rule_from_the_openai_catalog(emulator: Any) -> None:
    sync()

    flagged = set(ModelProfile.objects.filter(chat_tools_need_effort_none=True).values_list("name", flat=True))
    expected = {e.name for e in load_catalog("openai") if e.chat_tools_need_effort_none}
    assert flagged == expected and {"gpt-5-4", "gpt-6-sol"} <= flagged
    assert not ModelProfile.objects.get(name="o3-mini").chat_tools_need_effort_none
    assert ModelProfile.objects.get(name="gpt-6-sol").catalog_values["chat_tools_need_effort_none"] is True


def test_a_profile_synced_before_the_rule_existed_gets_it_on_the_next_sync(emulator: Any) -> None:
    sync()
    profile = ModelProfile.objects.get(name="gpt-6-sol")
    # What a sync wrote before the catalog recorded the rule.
    values = {k: v for k, v in profile.catalog_values.items() if k != "chat_tools_need_effort_none"}
    ModelProfile.objects.filter(pk=profile.pk).update(chat_tools_need_effort_none=False, catalog_values=values)

    output = sync()

    profile.refresh_from_db()
    assert profile.chat_tools_need_effort_none
    assert "Updated gpt-6-sol: chat_tools_need_effort_none" in output


@pytest.mark.parametrize(("model", "api_style", "rule"), [
    ("gpt-6-sol", "responses", True),
    ("gpt-5.4", "responses", True),
    ("o3", "chat", False),
])
def test_the_azure_deployments_profile_takes_the_rule_and_api_style_from_the_azure_catalog(
    settings: Any, emulator: Any, model: str, api_style: str, rule: bool
) -> None:
    from llm.catalog.sync import ensure_azure_profile

    settings.AZURE_OPENAI_ENDPOINT = "https://res.openai.azure.com"
    settings.AZURE_OPENAI_DEPLOYMENT = "team-reasoner"
    settings.AZURE_OPENAI_MODEL = model

    profile = ensure_azure_profile()

    assert profile is not None and profile.provider == "azure" and profile.model == "team-reasoner"
    assert (profile.api_style, profile.chat_tools_need_effort_none) == (api_style, rule)


def test_it_writes_each_models_successor_even_on_a_profile_synced_before_successors_existed(
    emulator: Any,
) -> None:
    sync()
    o3 = ModelProfile.objects.get(name="o3")
    assert o3.successor == "openai:gpt-6-sol"
    assert ModelProfile.objects.get(name="gpt-6-sol").successor == ""
    # A profile synced before the catalog named successors: empty, and never recorded.
    values = {k: v for k, v in o3.catalog_values.items() if k != "successor"}
    ModelProfile.objects.filter(pk=o3.pk).update(successor="", catalog_values=values)

    assert "Updated o3: successor" in sync()
    o3.refresh_from_db()
    assert o3.successor == "openai:gpt-6-sol" and o3.catalog_values["successor"] == "openai:gpt-6-sol"
    # An admin's own choice stays.
    ModelProfile.objects.filter(pk=o3.pk).update(successor="openai:gpt-6.1-sol")
    assert "Kept admin edits on o3: successor" in sync()
