"""The chat page offers exactly the efforts a profile takes, weakest first."""

from __future__ import annotations

from typing import Any

import pytest
from django.core.exceptions import ValidationError
from django.test import Client

from llm.models import ModelProfile

pytestmark = pytest.mark.django_db


def admin_profile(o3_mini: ModelProfile, **changes: Any) -> ModelProfile:
    own = ("id", "origin", "catalog_key", "catalog_values", "listed_at")
    values = {f.name: getattr(o3_mini, f.name) for f in ModelProfile._meta.fields if f.name not in own}
    values.update(name="house", display_name="House model", model="gpt-6.1-sol",
                  max_completion_tokens_by_effort={}, **changes)
    return ModelProfile.objects.create(**values)


def test_the_page_lists_a_profiles_efforts_in_effort_order_whatever_order_an_admin_typed(
    alice: Any, o3_mini: ModelProfile
) -> None:
    admin_profile(o3_mini, reasoning_efforts=["max", "low", "none", "xhigh"], default_effort="xhigh")
    client = Client()
    client.force_login(alice)

    page = client.get("/")

    [house] = [p for p in page.context["state"]["profiles"] if p["name"] == "house"]
    assert house["efforts"] == ["none", "low", "xhigh", "max"]
    assert house["default_effort"] == "xhigh"
    [seed] = [p for p in page.context["state"]["profiles"] if p["name"] == "o3-mini"]
    assert seed["efforts"] == ["low", "medium", "high"]


def test_the_composer_renders_the_profiles_efforts_with_their_labels_and_default(
    alice: Any, o3_mini: ModelProfile
) -> None:
    from accounts.models import Organization

    house = admin_profile(o3_mini, reasoning_efforts=["xhigh", "none", "medium"], default_effort="medium")
    organization = Organization.objects.get(memberships__user=alice)
    organization.enabled_profiles.set([house])
    client = Client()
    client.force_login(alice)

    html = client.get("/").content.decode()

    select = html.split('id="effort-select"')[1].split("</select>")[0]
    assert [line.strip() for line in select.splitlines() if "<option" in line] == [
        '<option value="none">None</option>',
        '<option value="medium" selected>Medium</option>',
        '<option value="xhigh">Xhigh</option>',
    ]


def test_an_admin_cannot_save_an_effort_the_api_does_not_know(o3_mini: ModelProfile) -> None:
    o3_mini.reasoning_efforts = ["low", "extreme"]

    with pytest.raises(ValidationError) as refused:
        o3_mini.full_clean()

    assert "Unknown reasoning efforts: extreme" in str(refused.value)
